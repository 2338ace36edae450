"""The KAMA benchmark's goals (benchmarks/kama.py) are computed from its figures, never typed in: the committed
result file re-scores to exactly its own goals, and a planted figure across a threshold flips its goal."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.kama import kama_goals

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "kama.json"


def _committed() -> dict[str, Any]:
    if not RESULT.is_file():
        pytest.skip(f"{RESULT} is absent")
    return json.loads(RESULT.read_text())


def test_the_committed_results_rescore_to_their_own_goals() -> None:
    d = _committed()
    assert json.loads(json.dumps(kama_goals(d["figures"]))) == d["goals"]


def test_the_speed_goal_needs_100x_and_equal_accuracy() -> None:
    """Planted: the analytic fit at 99x less CPU, or 11 % less accurate than the optimiser, fails the first goal."""
    fig = copy.deepcopy(_committed()["figures"])
    s0 = fig["synthetic"]["noise_0mm"]
    s0["analytic"]["mpjpe"] = s0["optimisation"]["mpjpe"]
    s0["analytic"]["cpu_ms_per_body"] = s0["optimisation"]["cpu_ms_per_body"] / 100
    assert kama_goals(fig)[0]["holds"]
    s0["analytic"]["cpu_ms_per_body"] = s0["optimisation"]["cpu_ms_per_body"] / 99
    assert not kama_goals(fig)[0]["holds"]
    s0["analytic"]["cpu_ms_per_body"] = s0["optimisation"]["cpu_ms_per_body"] / 1000
    s0["analytic"]["mpjpe"] = 1.11 * s0["optimisation"]["mpjpe"]
    assert not kama_goals(fig)[0]["holds"]
