"""Writes docs/first-hour.md: the README's commands, in the README's order, each run as a new
user would from the repository root (a fresh copy of it: its images and scripts, no out/) (`styleflow` as `python -m styleflow`, the API snippet as a
Python script), with what each printed. Run it after a change that touches what a user sees:

    python docs/first_hour.py            # several minutes on 2 cores

Commands whose inputs are placeholders (photos/, pairs.csv), that resume an interrupted run,
install packages, or make the README's 4096 px print are listed and not run, with the reason.
Timings and temporary paths vary from run to run; everything else should not."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OUT = Path(__file__).with_name("first-hour.md")
SKIP = [
    (re.compile(r"^pip "), "installs packages"),
    (re.compile(r"photos/|pairs\.csv"), "placeholder inputs (your own folders and manifest)"),
    (re.compile(r"_interrupted"), "resumes a run interrupted with Ctrl-C"),
    (re.compile(r"-m pytest"), "the test suite (docs/development.md)"),
    (re.compile(r"--width (4096|2048)"), "a print-size run (tens of minutes; docs/large-images.md)"),
]


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)


def commands(body: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.split("#")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def run(argv: list[str], env: dict, cwd: Path) -> tuple[int, str, float]:
    began = time.perf_counter()
    # One stream, as a terminal shows them: notes and errors where they were printed.
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                          timeout=3600)
    return proc.returncode, proc.stdout.rstrip(), time.perf_counter() - began


def main() -> None:
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # A fresh folder that looks like the repository root (its images and the two scripts), so
    # every run starts as a new user's would, with no out/ from an earlier one.
    work = Path(tempfile.mkdtemp(prefix="styleflow-first-hour-"))
    for name in ("images", "neural_style_transfer.py", "neural_style.py"):
        (work / name).symlink_to(ROOT / name)
    lines = ["# The first hour: the README's commands and what they print", "",
             f"Made by `python docs/first_hour.py` on {time.strftime('%Y-%m-%d')}; each command "
             "as the README gives it, run from the repository root (`styleflow` as "
             "`python -m styleflow`, for a checkout that is not installed).", ""]
    for language, body in blocks(README.read_text()):
        if language == "python":
            script = work / "readme_api.py"
            script.write_text(body)
            code, output, seconds = run([sys.executable, str(script)], env, work)
            lines += ["```python", body.rstrip(), "```", ""]
            lines += [f"exit {code}, {seconds:.0f} s:", "", "```text", output, "```", ""]
            continue
        if language not in ("sh", ""):
            continue
        for command in commands(body):
            reason = next((why for pattern, why in SKIP if pattern.search(command)), None)
            lines += ["```sh", f"$ {command}", "```", ""]
            if reason:
                lines += [f"(not run here: {reason})", ""]
                continue
            argv = shlex.split(command.split("&&")[-1].strip())
            if argv[0] == "python":
                argv[0] = sys.executable
            elif argv[0] == "styleflow":
                argv = [sys.executable, "-m", "styleflow", *argv[1:]]
            else:
                lines += ["(not run here: not a styleflow command)", ""]
                continue
            code, output, seconds = run(argv, env, work)
            lines += [f"exit {code}, {seconds:.0f} s:", "", "```text", output, "```", ""]
            print(f"{code} {seconds:6.0f}s  {command[:90]}", flush=True)
    OUT.write_text("\n".join(lines).replace(str(work), "."))
    print(f"wrote {OUT} (the runs' files are in {work})")


if __name__ == "__main__":
    main()
