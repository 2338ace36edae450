"""What every benchmark shares: the environment record, goals computed (never typed in), the result file."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from tenfold.core.io import write_json
from tenfold.core.latency import environment

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    """The repository's HEAD commit (with '-dirty' when the tree has changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# the code a benchmark runs is the tree at its start: read then (a long run's JSON recorded the commit at write time,
# after later commits, so the figures of session 15's GradInversion run were filed under a commit they did not run)
COMMIT_AT_START = git_commit()


def goal(name: str, target: str, measured: Any, holds: bool) -> dict[str, Any]:
    """One goal of the method's issue, with the measured figure and whether it holds."""
    return {"name": name, "target": target, "measured": measured, "holds": bool(holds)}


class OneLineParser(argparse.ArgumentParser):
    """argparse with tenfold's error style: a bad flag is one ``error:`` line (exit 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (--help lists the options)\n")


def parser(description: str, default_data: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes (``--data SPEC`` points it at another split)."""
    p = OneLineParser(description=description)
    p.add_argument("--data", default=default_data, help="dataset spec (NAME or NAME:PATH)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/<name>.json)")
    return p


_CPU_AT: dict[float, float] = {}  # clock() readings: wall -> process CPU at the same moment


def clock() -> float:
    """``time.perf_counter()`` for ``write_result(started=...)``, noting the process CPU time at the same moment, so
    the wall and CPU seconds it writes span the same work (the CPU span began at the process's start, imports
    included, and could read above the wall span on one thread)."""
    wall = time.perf_counter()
    _CPU_AT[wall] = _cpu_with_children()
    return wall


def _cpu_with_children() -> float:
    """This process's CPU seconds and its joined children's (benchmarks run workers with --jobs)."""
    kids = os.times()
    return time.process_time() + kids.children_user + kids.children_system


def write_result(name: str, figures: dict[str, Any], goals: list[dict[str, Any]], *, device: str = "cpu",
                 out: Path | None = None, started: float | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` with command, environment, figures and goals."""
    env = environment(device)
    env.update({"commit": COMMIT_AT_START, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    if (now := git_commit()) != COMMIT_AT_START:
        env["commit_at_write"] = now
    payload = {"command": "python -m benchmarks." + name + " " + shlex.join(sys.argv[1:]),
               "environment": env, "figures": figures, "goals": goals}
    if started is not None:
        payload["wall_seconds"] = round(time.perf_counter() - started, 1)
        # worker processes (benchmarks run with --jobs) count once they are joined
        cpu0 = _CPU_AT.get(started)  # None: a caller that took started itself; then CPU since the process began
        payload["process_cpu_seconds"] = round(_cpu_with_children() - (cpu0 or 0.0), 1)
        if cpu0 is None:
            payload["process_cpu_span"] = "since the process started (imports included)"
    path = out or RESULTS / f"{name}.json"
    write_json(path, payload)
    for g in goals:
        print(f"[{'holds' if g['holds'] else 'FAILS'}] {g['name']}: {g['measured']} (target {g['target']})")
    print(f"wrote {path}")
    return path
