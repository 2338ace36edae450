"""The NViT benchmark's latency and accuracy goals (benchmarks/nvit.py) are computed from its figures, never typed
in: the committed result file re-scores to exactly its own goals, and a planted figure flips its goal."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.nvit import accuracy_latency_goals

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "nvit.json"


def _committed() -> dict[str, Any]:
    if not RESULT.is_file():
        pytest.skip(f"{RESULT} is absent")
    return json.loads(RESULT.read_text())


def _lut_batch(d: dict[str, Any]) -> int:
    return next(int(k.split("_b")[1].split("_")[0]) for k in d["figures"]["models"]["nvit"]
                if k.startswith("latency_b") and k.endswith("_ratio") and "b1_" not in k)


def test_the_committed_results_rescore_to_their_own_goals() -> None:
    """Every goal but the DeiT-B calculator's (a computation, tested in test_model) follows from the figures."""
    d = _committed()
    committed = [g for g in d["goals"] if not g["name"].startswith("MACs/params calculator")]
    assert len(committed) == len(d["goals"]) - 1
    assert json.loads(json.dumps(accuracy_latency_goals(d["figures"], _lut_batch(d)))) == committed


def test_latency_goal_is_within_10_percent_on_the_runs_clock() -> None:
    """Planted: NViT at 0.56 of the dense latency against a 0.5 target (12 % over) fails, at 0.54 holds; the clock
    is the one the run recorded (process CPU time on a CPU run)."""
    d = _committed()
    fig, b = copy.deepcopy(d["figures"]), _lut_batch(d)
    key = f"cpu_latency_b{b}_ratio" if fig["latency_clock"] == "process CPU time" else f"latency_b{b}_ratio"
    fig["target_fraction"] = 0.5
    fig["models"]["nvit"][key] = 0.56
    assert not accuracy_latency_goals(fig, b)[0]["holds"]
    fig["models"]["nvit"][key] = 0.54
    assert accuracy_latency_goals(fig, b)[0]["holds"]
