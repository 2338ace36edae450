"""Every implemented method x verb runs end to end with the ``smoke`` preset: finite metrics, a falling
loss where the verb trains, files written. Plus the method contract and the demo report."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from tenfold.registry import METHODS, implemented, load_method

IMPLEMENTED = implemented()


def _finite(v) -> bool:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(_finite(x) for x in v)
    return True


def test_registry_lists_the_ten_methods():
    assert len(METHODS) == 10
    assert set(IMPLEMENTED) <= set(METHODS)


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_method_contract(name):
    mod = load_method(name)
    assert dataclasses.is_dataclass(mod.Config) and mod.Config.__dataclass_params__.frozen
    assert {"smoke", "paper"} <= set(mod.PRESETS)
    assert all(isinstance(p, mod.Config) for p in mod.PRESETS.values())
    assert mod.VERBS and all(callable(f) for f in mod.VERBS.values())


@pytest.mark.parametrize("name", IMPLEMENTED)
def test_every_verb_smoke_end_to_end(name, tmp_path):
    """Verbs run in VERBS order; ``smoke_options(verb, earlier_run_dirs)`` supplies required options."""
    mod = load_method(name)
    cfg = mod.PRESETS["smoke"]
    earlier: dict[str, Path] = {}
    for verb, fn in mod.VERBS.items():
        run_dir = tmp_path / verb
        run_dir.mkdir()
        opts = mod.smoke_options(verb, earlier) if hasattr(mod, "smoke_options") else {}
        metrics = fn(cfg, run_dir, **opts)
        assert isinstance(metrics, dict) and metrics, f"{name} {verb} returned no metrics"
        assert _finite(metrics), f"{name} {verb} returned non-finite metrics: {metrics}"
        if "loss_start" in metrics and "loss_end" in metrics:
            assert metrics["loss_end"] < metrics["loss_start"], f"{name} {verb}: loss did not fall"
        assert any(run_dir.iterdir()), f"{name} {verb} wrote nothing to its run directory"
        earlier[verb] = run_dir


def test_demo_report_lists_every_method(tmp_path):
    from tenfold.demo import run_demo

    out = run_demo(tmp_path / "demo", only=["classifier"], progress=False)
    html = Path(out["report"]).read_text()
    assert out["failed"] == []
    assert out["sections"]["classifier"]["top1"] > 0.75  # real weights on real bundled images
    assert "data:image/png;base64" in html
    out = run_demo(tmp_path / "demo2", only=[m for m in METHODS if m not in IMPLEMENTED], progress=False)
    html = Path(out["report"]).read_text()
    for m in METHODS:
        if m not in IMPLEMENTED:
            assert f"{m}: " in html and out["sections"][m] == "not implemented"
