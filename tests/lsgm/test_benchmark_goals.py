"""The LSGM benchmark's goal logic (benchmarks/lsgm.py): goals are computed from the figures, never typed in, so
the committed result file must re-score to exactly its own goals, and a figure that crosses a threshold flips the
verdict of its goal and no other."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.lsgm import dataset_goals

RESULT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lsgm.json"


def _committed() -> dict[str, Any]:
    if not RESULT.is_file():
        pytest.skip(f"{RESULT} is absent")
    return json.loads(RESULT.read_text())


def _rescore(d: dict[str, Any], name: str, fig: dict[str, Any]) -> list[dict[str, Any]]:
    st = d["figures"]["settings"]
    committed = [g for g in d["goals"] if g["name"].startswith(f"{name}: ")]
    # files written before the figures recorded it carry the paired image count in the goal's name only
    n = fig.get("nelbo_paired_images") or int(re.search(r"paired over (\d+) images",
                                                           committed[1]["name"]).group(1))
    return dataset_goals(name, fig, tol=st["tol"], nfe_batches=st["nfe_batches"], nfe_samples=st["nfe_samples"],
                         n_paired=n)


def test_the_committed_results_rescore_to_their_own_goals() -> None:
    """Every goal in results/lsgm.json (names, targets, measured values, verdicts) follows from its figures."""
    d = _committed()
    datasets = [k for k, v in d["figures"].items() if isinstance(v, dict) and "lsgm" in v]
    assert datasets
    rescored = [g for name in datasets for g in _rescore(d, name, d["figures"][name])]
    assert sorted(rescored, key=lambda g: g["name"]) == sorted(d["goals"], key=lambda g: g["name"])


def test_a_figure_across_its_threshold_flips_only_its_own_goal() -> None:
    """Planted: the data-space model's tol-1e-3 NFE set to 3x LSGM's makes that NFE goal hold (and nothing else
    change); LSGM's FD raised above the contender's makes the FD comparison fail."""
    d = _committed()
    name = "omniglot-small1" if "omniglot-small1" in d["figures"] else next(
        k for k, v in d["figures"].items() if isinstance(v, dict) and "lsgm" in v)
    fig = d["figures"][name]
    base = {g["name"]: g["holds"] for g in _rescore(d, name, fig)}

    nfe = copy.deepcopy(fig)
    nfe["data_space"]["nfe_tol"] = 3 * nfe["lsgm"]["nfe_tol"]
    flipped = {g["name"]: g["holds"] for g in _rescore(d, name, nfe)}
    changed = [k for k in base if base[k] != flipped[k]]
    target = next(k for k in base if "(ll_iw-trained) NFE / LSGM NFE at tol 0.001" in k)
    assert flipped[target] and changed == ([target] if not base[target] else [])

    fd = copy.deepcopy(fig)
    fd["lsgm"]["fd_draw"] = fd["data_space_reweight_uniform"]["fd_draw"] + 1.0
    after = {g["name"]: g["holds"] for g in _rescore(d, name, fd)}
    fd_goal = next(k for k in after if k.startswith(f"{name}: LSGM FD (decoder draws) <= data-space "
                                                    "(reweight_uniform"))
    assert not after[fd_goal]
