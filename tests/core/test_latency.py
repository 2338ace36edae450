"""Latency measurement and lookup tables: ordering on planted work, thread pinning, and exact
multilinear interpolation checked against planted functions and SciPy's RegularGridInterpolator."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator

from tenfold.core import latency as L
from tenfold.core.io import DataError, InputError


def _busy(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


# ---------------------------------------------------------------- measure_latency
def test_measure_latency_orders_work_and_reports_cpu_time():
    r1 = L.measure_latency(_busy, (20_000,), warmup=1, repeats=7)
    r3 = L.measure_latency(_busy, (60_000,), warmup=1, repeats=7)
    assert r3.min > 1.5 * r1.min  # 3x the work; generous for a loaded shared machine
    assert r3.cpu_median > 1.5 * r1.cpu_median
    for r in (r1, r3):
        assert r.cpu_median > 0 and r.cpu_mean > 0
        assert r.min <= r.median <= r.p90 <= max(r.times)
        assert len(r.times) == len(r.cpu_times) == 7
        assert r.device == "cpu" and r.threads == 1
    d = r1.as_dict()
    json.dumps(d)
    assert d["repeats"] == 7


def test_measure_latency_call_counts_inputs_and_threads_restored():
    calls: list[tuple] = []
    seen_threads: list[int] = []

    def fn(*args, **kwargs):
        calls.append((args, kwargs))
        seen_threads.append(torch.get_num_threads())

    before = torch.get_num_threads()
    L.measure_latency(fn, (1, 2), warmup=2, repeats=3, threads=2)
    assert len(calls) == 5 and calls[0] == ((1, 2), {})
    assert seen_threads == [2] * 5
    assert torch.get_num_threads() == before
    L.measure_latency(fn, {"a": 1}, warmup=0, repeats=1, threads=None)
    assert calls[-1] == ((), {"a": 1})
    x = torch.zeros(3)
    L.measure_latency(fn, x, warmup=0, repeats=1)
    assert calls[-1][0][0] is x

    def boom(*args):
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        L.measure_latency(boom, (), threads=2)
    assert torch.get_num_threads() == before  # restored on error too


def test_measure_ratio_reads_planted_work_and_interleaves_abba():
    """3x the work reads about 3x; calls alternate ref-fn, fn-ref (ABBA), after the warm-up pairs."""
    order: list[str] = []

    def ref(n: int) -> int:
        order.append("r")
        return _busy(n)

    def fn(n: int) -> int:
        order.append("f")
        return _busy(3 * n)

    before = torch.get_num_threads()
    r = L.measure_ratio(ref, fn, (20_000,), pairs=9, warmup=1, threads=2)
    assert 2.0 < r.ratio < 4.5 and 2.0 < r.cpu_ratio < 4.5 and r.ratio == r.cpu_ratio  # CPU: process CPU clock
    assert r.fn_median > r.ref_median > 0 and r.spread >= 0 and r.pairs == 9 and r.clock == "process CPU time"
    assert "".join(order) == "rf" + "rffr" * 4 + "rf"
    assert torch.get_num_threads() == before
    json.dumps(r.as_dict())
    same = L.measure_ratio(_busy, _busy, (20_000,), pairs=15)
    assert 0.6 < same.ratio < 1.6  # the same work reads about 1 (generous for a shared machine)
    with pytest.raises(InputError, match="pairs >= 1"):
        L.measure_ratio(_busy, _busy, (1,), pairs=0)
    with pytest.raises(InputError, match="fn must be callable"):
        L.measure_ratio(_busy, 3, (1,))


def test_measure_latency_module_no_grad_and_errors():
    lin = torch.nn.Linear(8, 8)
    grads: list[bool] = []
    lin.register_forward_hook(lambda m, i, o: grads.append(o.requires_grad))
    r = L.measure_latency(lin, torch.randn(4, 8), warmup=1, repeats=2)
    assert r.median > 0 and grads == [False] * 3
    with pytest.raises(InputError, match="repeats"):
        L.measure_latency(lin, torch.randn(4, 8), repeats=0)
    with pytest.raises(InputError, match="threads"):
        L.measure_latency(lin, torch.randn(4, 8), threads=0)
    with pytest.raises(InputError, match="callable"):
        L.measure_latency(3, ())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measure_latency_cuda_synchronises():
    a = torch.randn(2048, 2048, device="cuda")
    r1 = L.measure_latency(torch.matmul, (a, a), warmup=3, repeats=10)
    r4 = L.measure_latency(lambda x: [x @ x for _ in range(4)], (a,), warmup=3, repeats=10)
    assert r1.device.startswith("cuda")
    assert r4.median > 2.0 * r1.median  # without synchronisation both would time only the launches


# ---------------------------------------------------------------- LatencyTable
def _planted_multilinear(axes: dict[str, list[float]], seed: int = 0):
    """f(x) = sum over subsets S of c_S prod_{i in S} x_i: multilinear, so interpolation is exact."""
    rng = np.random.default_rng(seed)
    names = list(axes)
    coef = {S: rng.normal() for r in range(len(names) + 1) for S in itertools.combinations(range(len(names)), r)}

    def f(**d):
        x = [np.asarray(d[n], dtype=np.float64) for n in names]
        return sum(c * np.prod([x[i] for i in S], axis=0) if S else c + 0 * x[0] for S, c in coef.items())

    return f


def test_table_exact_on_grid_and_planted_multilinear_nd():
    axes = {"embed": [64, 128, 256], "heads": [1, 2, 4, 6], "qk": [8, 32], "v": [8, 16, 64], "mlp": [16, 256, 512]}
    f = _planted_multilinear({k: v for k, v in axes.items()})
    table = L.build(axes, lambda **d: float(f(**d)), metadata={"batch": 8})
    for point in itertools.product(*axes.values()):
        d = dict(zip(axes, point))
        assert table(**d) == pytest.approx(float(f(**d)), rel=1e-12, abs=1e-9)
    rng = np.random.default_rng(1)
    pts = {k: rng.uniform(min(v), max(v), size=200) for k, v in axes.items()}
    np.testing.assert_allclose(table(**pts), f(**pts), rtol=1e-10, atol=1e-6)
    assert table.metadata["batch"] == 8 and table.metadata["threads"] == torch.get_num_threads()
    assert "torch" in table.metadata and table.metadata["device"] == "cpu"


def test_table_matches_scipy_regular_grid_interpolator():
    axes = {"a": [0.0, 1.0, 3.0, 7.0], "b": [2.0, 5.0, 6.0]}
    vals = np.random.default_rng(2).uniform(size=(4, 3))
    table = L.LatencyTable(axes, vals)
    ref = RegularGridInterpolator(list(axes.values()), vals, method="linear")
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 7, 300), rng.uniform(2, 6, 300)
    np.testing.assert_allclose(table(a=a, b=b), ref(np.stack([a, b], -1)), rtol=1e-12)


def test_table_1d_outside_modes_and_inputs():
    vals = [1.0, 3.0, 4.0]
    grid = [10, 20, 40]
    t = L.LatencyTable({"channels": grid}, vals)
    assert t(channels=15) == pytest.approx(2.0)
    assert t(channels=30) == pytest.approx(3.5)
    assert isinstance(t(channels=20), float) and t(channels=20) == 3.0
    assert t(channels=0) == 1.0 and t(channels=100) == 4.0  # clamp (default)
    lin = L.LatencyTable({"channels": grid}, vals, outside="linear")
    assert lin(channels=0) == pytest.approx(-1.0)
    assert lin(channels=60) == pytest.approx(5.0)
    strict = L.LatencyTable({"channels": grid}, vals, outside="error")
    with pytest.raises(InputError, match="outside the grid"):
        strict(channels=41)
    out = t(channels=torch.tensor([15.0, 30.0]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [2.0, 3.5])
    with pytest.raises(InputError, match="missing"):
        t(width=3)


def test_table_singleton_axis_broadcast_and_nan():
    t = L.LatencyTable({"a": [1.0], "b": [0.0, 2.0]}, [[1.0, 3.0]])
    assert t(a=5.0, b=1.0) == pytest.approx(2.0)  # a single grid value is a constant axis
    np.testing.assert_allclose(t(a=1.0, b=np.array([[0.0], [2.0]])), [[1.0], [3.0]])
    tn = L.LatencyTable({"a": [0.0, 1.0, 2.0]}, [1.0, 2.0, float("nan")])
    assert tn(a=0.5) == pytest.approx(1.5) and tn(a=1.0) == pytest.approx(2.0)
    assert math.isnan(tn(a=1.5))


def test_table_construction_errors():
    with pytest.raises(InputError, match="strictly increasing"):
        L.LatencyTable({"a": [1, 1, 2]}, [0, 0, 0])
    with pytest.raises(InputError, match="shape"):
        L.LatencyTable({"a": [1, 2], "b": [1, 2, 3]}, np.zeros((3, 2)))
    with pytest.raises(InputError, match="outside"):
        L.LatencyTable({"a": [1, 2]}, [0, 0], outside="wrap")


def test_build_accepts_latency_results_and_save_load_roundtrip(tmp_path):
    def measure(width: int, depth: int) -> L.LatencyResult | None:
        if width == 3 and depth == 1:
            return None  # not measured -> NaN, stored as null
        return L.measure_latency(_busy, (200 * width * depth,), warmup=0, repeats=2)

    table = L.build({"width": [1, 2, 3], "depth": [1, 2]}, measure, metadata={"note": "busy loop"})
    assert np.isnan(table.values[2, 0]) and (table.values[~np.isnan(table.values)] > 0).all()
    path = table.save(tmp_path / "lut.json")
    raw = json.loads(path.read_text())
    assert raw["values"][2][0] is None and raw["metadata"]["note"] == "busy loop"
    back = L.LatencyTable.load(path)
    assert back.names == ["width", "depth"] and back.outside == table.outside
    np.testing.assert_array_equal(back.values, table.values)
    assert back.metadata == json.loads(json.dumps(raw["metadata"]))
    assert back(width=1.5, depth=2) == pytest.approx(table(width=1.5, depth=2))


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        L.LatencyTable.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        L.LatencyTable.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a tenfold latency table"):
        L.LatencyTable.load(bad)
    bad.write_text(json.dumps({"format": L.TABLE_FORMAT, "version": 1, "axes": {"a": [1, 2]}, "values": [1.0]}))
    with pytest.raises(DataError, match="malformed"):
        L.LatencyTable.load(bad)


# ---------------------------------------------------------------- compare
def test_compare_closed_form():
    m = [1.0, 2.0, 4.0, 8.0]
    p = [1.1, 1.8, 4.4, 8.0]
    out = L.compare(m, p)
    assert out["n"] == 4
    assert out["mape"] == pytest.approx(100 * (0.1 + 0.1 + 0.1 + 0.0) / 4)
    assert out["bias"] == pytest.approx(100 * (0.1 - 0.1 + 0.1 + 0.0) / 4)
    assert out["max_ape"] == pytest.approx(10.0)
    assert out["spearman"] == pytest.approx(1.0)
    assert -1.0 <= out["pearson"] <= 1.0
    perfect = L.compare(torch.tensor(m), torch.tensor(m))
    assert perfect["mape"] == 0.0 and perfect["pearson"] == pytest.approx(1.0)
    assert math.isnan(L.compare([1.0], [2.0])["spearman"])
    with pytest.raises(InputError, match="equal length"):
        L.compare([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="> 0"):
        L.compare([0.0, 1.0], [1.0, 1.0])


# ---------------------------------------------------------------- build_vit_lut
def test_build_vit_lut_times_blocks_on_the_grid():
    grid = {"embed": [16, 64], "heads": [1, 2], "qk": [8], "v": [8], "mlp": [16, 256]}
    t = L.build_vit_lut("cpu", grid, batch=4, tokens=17, warmup=1, repeats=3)
    assert t.names == ["embed", "heads", "qk", "v", "mlp"] and t.values.shape == (2, 2, 1, 1, 2)
    assert np.all(np.isfinite(t.values)) and np.all(t.values > 0)
    assert t.metadata["batch"] == 4 and t.metadata["tokens"] == 17 and t.metadata["kind"] == "vit-block"
    assert t.metadata["device"] == "cpu" and "torch" in t.metadata
    # exact on grid points
    assert t(embed=64, heads=2, qk=8, v=8, mlp=256) == t.values[1, 1, 0, 0, 1]
    with pytest.raises(InputError):
        L.build_vit_lut("cpu", {"embed": [16]}, batch=1, tokens=2)
    from tenfold.core.io import ConfigError

    with pytest.raises(ConfigError, match="bogus"):  # was a raw RuntimeError from torch.device
        L.build_vit_lut("bogus", grid, batch=1, tokens=2)


def test_build_shuffled_order_visits_every_point_once_and_cpu_clock():
    """Shuffled order: same table, every point once, not in grid order; clock='cpu' stores cpu_median."""
    axes = {"a": [1, 2, 3], "b": [10, 20], "c": [5, 6]}
    seen: list[tuple[int, int, int]] = []

    def f(a: int, b: int, c: int) -> float:
        seen.append((a, b, c))
        return a * 100.0 + b + 0.1 * c

    grid = L.build(axes, f)
    grid_order = list(seen)
    seen.clear()
    shuf = L.build(axes, f, order="shuffled", seed=3)
    np.testing.assert_array_equal(shuf.values, grid.values)
    assert sorted(seen) == sorted(grid_order) and len(set(seen)) == len(seen) == 12
    assert seen != grid_order and shuf.metadata["order"] == "shuffled"

    def res(a: int, b: int, c: int) -> L.LatencyResult:
        return L.LatencyResult(median=float(a), mean=float(a), min=float(a), p90=float(a), std=0.0,
                               cpu_median=10.0 * a, cpu_mean=10.0 * a, repeats=1, warmup=0, threads=1,
                               device="cpu", times=[float(a)], cpu_times=[10.0 * a])

    assert L.build(axes, res, clock="cpu").values[2, 0, 0] == 30.0
    assert L.build(axes, res).values[2, 0, 0] == 3.0
    with pytest.raises(InputError, match="order"):
        L.build(axes, f, order="random")
    with pytest.raises(InputError, match="clock"):
        L.build(axes, f, clock="gpu")


def test_latency_review_of_session21():
    """A transposed or ragged value list loaded scrambled (flattened, then reshaped); unsorted axes failed only after
    the whole sweep; no_grad=False switched gradients on; build_vit_lut moved the global RNG and recorded the
    caller's thread count instead of the one it timed with."""
    d = {"format": L.TABLE_FORMAT, "version": L.TABLE_VERSION, "axes": {"a": [0, 1, 2], "b": [0, 1]},
         "values": [[1, 2, 3], [4, 5, 6]]}
    with pytest.raises(DataError, match=r"values must have shape \(3, 2\)"):
        L.LatencyTable.from_dict(d)
    with pytest.raises(DataError, match="malformed"):
        L.LatencyTable.from_dict({**d, "values": [[1, 2], [3], [4, 5]]})
    assert L.LatencyTable.from_dict({**d, "values": [[1, 2], [3, None], [5, 6]]})(a=0, b=1) == 2.0
    calls = []
    with pytest.raises(InputError, match="strictly increasing"):
        L.build({"a": [3, 2, 1]}, lambda a: calls.append(a) or 1.0)
    assert calls == []
    seen = []
    with torch.no_grad():
        L.measure_latency(lambda: seen.append(torch.is_grad_enabled()), warmup=0, repeats=1, no_grad=False)
    assert seen == [False]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        t = L.build_vit_lut("cpu", {"embed": [8], "heads": [1], "qk": [4], "v": [4], "mlp": [8]}, batch=1, tokens=2,
                            warmup=0, repeats=1)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(state, torch.get_rng_state()) and t.metadata["threads"] == 1


def test_timing_on_a_device_name_this_machine_lacks_is_one_config_error() -> None:
    """measure_latency / measure_ratio took any device string and failed inside torch."""
    from tenfold.core.io import ConfigError
    from tenfold.core.latency import measure_latency, measure_ratio

    fn = torch.nn.Linear(2, 2)
    x = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match="bad device 'bogus'"):
        measure_latency(fn, (x,), device="bogus", warmup=0, repeats=1)
    with pytest.raises(ConfigError, match="bad device 'bogus'"):
        measure_ratio(fn, fn, (x,), device="bogus")
