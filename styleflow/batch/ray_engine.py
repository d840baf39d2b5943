"""The same batch on a Ray cluster: one actor per GPU (or N CPU actors), each loading the network
once, pairs handed out as actors free up. An actor that dies is restarted by Ray and its pair
retried a bounded number of times, then recorded as failed. Workers write the images; the
driver alone writes the status log (through `finished`)."""

from __future__ import annotations

import os
from typing import Callable, Sequence

from ..errors import StyleflowError
from .jobs import Pair
from .processes import RECYCLE_GROWTH, Growth, prepare_tensorflow, resident_bytes
from .worker import PairWorker, Settings, one_line, record

# Retries of a pair whose actor died (Ray restarts the actor each time).
RETRIES = 2
# The key of a record under which an actor reports the memory it holds (taken out by schedule).
MEMORY = "_memory"
# How often the driver wakes while waiting, so Ctrl-C is handled promptly.
POLL_SECONDS = 0.5
INSTALL_HINT = "pip install 'styleflow[ray]' (or pip install -r requirements-ray.txt)"


def import_ray():
    """Ray, or a one-line StyleflowError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise StyleflowError(f"--engine ray needs Ray, which is not installed: "
                             f"{INSTALL_HINT}") from None
    return ray


class PairActor:
    """The actor's body: a PairWorker in its own process, TensorFlow on `threads` threads
    (see prepare_tensorflow)."""

    def __init__(self, settings: Settings, threads: int | None = None):
        prepare_tensorflow(threads)
        self.worker = PairWorker(settings)

    def run(self, pair: Pair) -> dict:
        """The pair's record, with the memory the actor holds after it under MEMORY (which
        the driver takes out: processes.Growth)."""
        return {**self.worker.run(pair), MEMORY: resident_bytes()}

    def threads(self) -> int:
        """The threads TensorFlow splits one operation over in this actor."""
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads()

    def pid(self) -> int:
        return os.getpid()



# Seconds to wait for a cluster's address to answer before saying it does not: Ray itself
# retries an unreachable address for ever.
REACH_SECONDS = 10


def check_reachable(address: str | None) -> None:
    """StyleflowError when a cluster address of the form [ray://]HOST:PORT does not accept a
    connection within REACH_SECONDS ('auto', 'local' and None are Ray's to resolve)."""
    if not address or address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise StyleflowError(f"--address {address}: expected HOST:PORT (or ray://HOST:PORT)",
                             params=("--address",))
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), REACH_SECONDS).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise StyleflowError(f"--address {address}: cannot reach a Ray cluster there "
                             f"({reason.lower()} after trying for up to {REACH_SECONDS} s)",
                             params=("--address",)) from None


def connect(address: str | None):
    """Join the cluster at `address` (else RAY_ADDRESS), or start a local Ray for the run.
    Returns (ray, whether this call started it)."""
    ray = import_ray()
    check_reachable(address)  # also when Ray runs already: a wrong address is still wrong
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    check_reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                 include_dashboard=False if address is None else None)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise StyleflowError(f"--address {address or '(local)'}: cannot start or reach Ray "
                             f"({one_line(exc)[:200]})") from None
    return ray, True


def run_on_ray(pairs: Sequence[Pair], settings: Settings,
               finished: Callable[[Pair, dict], None], *, address: str | None = None,
               workers: int | None = None, notes: Callable[[str], None] | None = None,
               on_start: Callable[[Pair], None] | None = None) -> None:
    """Run `pairs` on Ray actors, calling `finished(pair, record)` in the driver for each."""
    ray, started = connect(address)
    try:
        schedule(ray, PairActor, list(pairs), settings, finished, workers, notes, on_start,
                 failed=lambda pair, error: record(pair, "failed", error=error),
                 recycle_growth=RECYCLE_GROWTH)
    finally:
        if started:
            ray.shutdown()


def actor_plan(resources: dict, workers: int | None, pairs: int
               ) -> tuple[int, dict, int | None]:
    """(actors, Ray resource options per actor, TensorFlow threads per actor or None) for a
    cluster's `resources`: one actor per GPU; else `workers` CPU actors (default one per two
    CPUs), each reserving an equal share of the CPUs and running that many threads."""
    gpus = int(resources.get("GPU", 0))
    if gpus and not workers:
        return min(gpus, pairs), {"num_gpus": 1}, None
    cpus = max(1, int(resources.get("CPU", 1)))
    count = min(workers or max(1, cpus // 2), pairs)
    share = max(1, cpus // count)
    return count, {"num_cpus": share}, share


def schedule(ray, actor_class, pairs, settings, finished, workers, notes, on_start,
             failed: Callable[[object, str], dict], noun: str = "pair",
             recycle_growth: float | None = None) -> None:
    """Hand `pairs` (any jobs) to actors of `actor_class(settings, threads)` as they free up,
    one job per actor at a time, calling `finished(job, record)` in the driver for each: the
    actor's `run(job)`'s record, or `failed(job, error)`'s when it raised or its actor died
    RETRIES + 1 times (`noun` names a job in that message). CPU actors get their share of
    the CPUs as TensorFlow threads (`actor_plan`). With `recycle_growth`, an actor whose
    records carry its memory (under MEMORY) and that has grown by more than that fraction
    since its first job is replaced by a new one (processes.Growth), the line saying so going
    to `notes`."""
    if not pairs:
        return
    count, options, threads = actor_plan(ray.cluster_resources(), workers, len(pairs))
    if notes is not None:
        resources = ray.cluster_resources()
        notes(f"ray: {count} {'GPU' if 'num_gpus' in options else 'CPU'} actor(s)"
              + (f" of {threads} threads" if threads else "")
              + f" on {int(resources.get('CPU', 0))} CPUs and "
                f"{int(resources.get('GPU', 0))} GPUs")
    remote = ray.remote(actor_class).options(max_restarts=-1, max_task_retries=RETRIES,
                                             **options)
    idle = [remote.remote(settings, threads) for _ in range(count)]
    growth = {}  # actor -> its Growth

    def after(actor, memory):
        """The actor, or its replacement when it has grown."""
        if recycle_growth is None:
            return actor
        if actor not in growth:
            growth[actor] = Growth(recycle_growth, "styleflow batch: a Ray actor", "pair")
        said = growth[actor].due(memory)
        if not said:
            return actor
        if notes is not None:
            notes(said)
        growth.pop(actor)
        replacement = remote.remote(settings, threads)
        ray.kill(actor)
        return replacement

    pending = list(pairs)
    running: dict = {}
    try:
        while pending or running:
            while idle and pending:
                actor, pair = idle.pop(), pending.pop(0)
                if on_start is not None:
                    on_start(pair)
                running[actor.run.remote(pair)] = (actor, pair)
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                actor, pair = running.pop(ref)
                memory = None
                try:
                    rec = ray.get(ref)
                    if isinstance(rec, dict):
                        memory = rec.pop(MEMORY, None)
                except ray.exceptions.RayActorError as exc:
                    growth.pop(actor, None)  # restarted by Ray: a new process, a new reference
                    rec = failed(pair, f"the Ray worker died {RETRIES + 1} times on this {noun} "
                                       f"({one_line(exc)[:200]})")
                except ray.exceptions.RayError as exc:
                    rec = failed(pair, one_line(exc)[:500])
                finished(pair, rec)
                idle.append(after(actor, memory))
    finally:
        # Done, or interrupted: end the actors, and with them any pair in flight (it leaves
        # no file: images are written atomically at the end of a pair).
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor)
