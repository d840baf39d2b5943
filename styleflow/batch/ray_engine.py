"""The same batch on a Ray cluster: one actor per GPU (or N CPU actors), each loading the network
once, pairs handed out as actors free up. An actor that dies is restarted by Ray and its pair
retried a bounded number of times, then recorded as failed. Workers write the images; the
driver alone writes the status log (through `finished`)."""

from __future__ import annotations

import os
from typing import Callable, Sequence

from ..errors import StyleflowError
from .jobs import Pair
from .worker import PairWorker, Settings, one_line, record

# Retries of a pair whose actor died (Ray restarts the actor each time).
RETRIES = 2
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
    """The actor's body: a PairWorker in its own process (TensorFlow with memory growth on a
    GPU, so several processes can share one)."""

    def __init__(self, settings: Settings):
        from .. import api  # noqa: F401 - imports TensorFlow without its start-up log

        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        self.worker = PairWorker(settings)

    def run(self, pair: Pair) -> dict:
        return self.worker.run(pair)

    def pid(self) -> int:
        return os.getpid()


def connect(address: str | None):
    """Join the cluster at `address` (else RAY_ADDRESS), or start a local Ray for the run.
    Returns (ray, whether this call started it)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
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
                 failed=lambda pair, error: record(pair, "failed", error=error))
    finally:
        if started:
            ray.shutdown()


def schedule(ray, actor_class, pairs, settings, finished, workers, notes, on_start,
             failed: Callable[[object, str], dict], noun: str = "pair") -> None:
    """Hand `pairs` (any jobs) to actors of `actor_class(settings)` as they free up, one job
    per actor at a time, calling `finished(job, record)` in the driver for each: the actor's
    `run(job)`'s record, or `failed(job, error)`'s when it raised or its actor died
    RETRIES + 1 times (`noun` names a job in that message)."""
    if not pairs:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and not workers:
        count, options = gpus, {"num_gpus": 1}
    else:
        count = workers or max(1, int(resources.get("CPU", 1)) // 2)
        options = {"num_cpus": 1}
    count = min(count, len(pairs))
    if notes is not None:
        notes(f"ray: {count} {'GPU' if 'num_gpus' in options else 'CPU'} actor(s) on "
              f"{int(resources.get('CPU', 0))} CPUs and {gpus} GPUs")
    remote = ray.remote(actor_class).options(max_restarts=-1, max_task_retries=RETRIES,
                                             **options)
    idle = [remote.remote(settings) for _ in range(count)]
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
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    rec = failed(pair, f"the Ray worker died {RETRIES + 1} times on this {noun} "
                                       f"({one_line(exc)[:200]})")
                except ray.exceptions.RayError as exc:
                    rec = failed(pair, one_line(exc)[:500])
                finished(pair, rec)
                idle.append(actor)
    finally:
        # Done, or interrupted: end the actors, and with them any pair in flight (it leaves
        # no file: images are written atomically at the end of a pair).
        for actor in idle + [a for a, _ in running.values()]:
            ray.kill(actor)
