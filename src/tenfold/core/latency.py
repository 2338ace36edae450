"""Measuring latency and building latency lookup tables (NViT's block LUT, HANT's per-op costs).

Protocol (the NViT and HANT specs): warm-up calls, then ``repeats`` timed calls, median reported;
one thread on CPU by default (pinned with ``torch.set_num_threads`` for the measurement and
restored after); on an accelerator every call is bracketed by a device synchronise, so wall time
covers the kernels. Process CPU time (``time.process_time``) is recorded next to wall time,
because on a loaded shared machine it is the steadier figure.

A :class:`LatencyTable` holds values on a regular grid with named axes and interpolates
multilinearly between grid points (what NViT's reference does with SciPy's
``RegularGridInterpolator``). Tables are saved as JSON with the device, torch version and thread
count they were measured with: a table from another machine predicts nothing about this one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tenfold.core.io import DataError, InputError, check_device, require_file, to_jsonable, write_json

__all__ = ["LatencyResult", "LatencyTable", "RatioResult", "build", "build_vit_lut", "compare", "environment",
           "measure_latency", "measure_ratio"]

TABLE_FORMAT = "tenfold-latency-table"
TABLE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Measuring one callable
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyResult:
    """Per-call timings in seconds: wall clock (``median``, ``mean``, ``min``, ``p90``, ``std``)
    and process CPU time (``cpu_median``, ``cpu_mean``), plus the raw samples and conditions."""

    median: float
    mean: float
    min: float
    p90: float
    std: float
    cpu_median: float
    cpu_mean: float
    repeats: int
    warmup: int
    threads: int
    device: str
    times: list[float] = field(repr=False)
    cpu_times: list[float] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (for benchmark result files)."""
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device``; a no-op on the CPU."""
    if device.type == "cpu":
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "synchronize"):
        acc.synchronize(device)
        return
    mod = getattr(torch, device.type, None)
    if mod is not None and hasattr(mod, "synchronize"):
        mod.synchronize()


def _first_tensor_device(obj: Any) -> torch.device | None:
    if isinstance(obj, torch.Tensor):
        return obj.device
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for v in obj:
            d = _first_tensor_device(v)
            if d is not None:
                return d
    return None


def _call_spec(inputs: Any, device: str | torch.device | None
               ) -> tuple[torch.device, tuple, dict[str, Any]]:
    """(device, positional args, keyword args) of a timed call: ``inputs`` a tuple (positional), a dict
    (keyword) or one object (one argument); the device defaults to that of the first tensor, else CPU."""
    # a bad name or a device this machine lacks: one ConfigError (check_device), not a raw torch error mid-timing
    dev = check_device(device) if device is not None else (_first_tensor_device(inputs) or torch.device("cpu"))
    if isinstance(inputs, tuple):
        return dev, inputs, {}
    if isinstance(inputs, Mapping):
        return dev, (), dict(inputs)
    return dev, (inputs,), {}


def _percentile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def measure_latency(fn: Callable[..., Any] | torch.nn.Module, inputs: Any = (), *, warmup: int = 5,
                    repeats: int = 20, threads: int | None = 1, device: str | torch.device | None = None,
                    no_grad: bool = True) -> LatencyResult:
    """Time ``fn`` on ``inputs``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``inputs``: a tuple (positional arguments), a dict (keyword arguments), or one object (a
    single argument; wrap a list in a tuple to pass it as one argument). Nothing is moved between
    devices: put the module and inputs where they should run. ``device`` (default: the device of
    the first tensor in ``inputs``, else CPU) selects the synchronisation: on cuda and other
    accelerators each timed call is bracketed by a synchronise. ``threads``: intra-op threads
    for the measurement (restored afterwards); None leaves the setting alone. ``no_grad`` runs
    under ``torch.no_grad()`` (inference latency). Why: one protocol for every LUT and benchmark.
    """
    if warmup < 0 or repeats < 1:
        raise InputError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1 or None, got {threads}")
    if not callable(fn):
        raise InputError(f"fn must be callable, got {type(fn).__name__}")
    dev, args, kwargs = _call_spec(inputs, device)

    old_threads = torch.get_num_threads()
    times: list[float] = []
    cpu_times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used_threads = torch.get_num_threads()
        with torch.no_grad() if no_grad else contextlib.nullcontext():  # False: the caller's grad mode, as it is
            for _ in range(warmup):
                fn(*args, **kwargs)
            _synchronize(dev)
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                fn(*args, **kwargs)
                _synchronize(dev)
                t1, c1 = time.perf_counter(), time.process_time()
                times.append(t1 - t0)
                cpu_times.append(c1 - c0)
    finally:
        torch.set_num_threads(old_threads)
    return LatencyResult(
        median=statistics.median(times), mean=statistics.fmean(times), min=min(times),
        p90=_percentile(times, 90), std=statistics.pstdev(times),
        cpu_median=statistics.median(cpu_times), cpu_mean=statistics.fmean(cpu_times),
        repeats=repeats, warmup=warmup, threads=used_threads, device=str(dev),
        times=times, cpu_times=cpu_times)


@dataclass
class RatioResult:
    """Latency of ``fn`` relative to ``ref`` from interleaved single calls: medians of per-pair ratios."""

    ratio: float  # median per-pair ratio on the steady clock (process CPU time on CPU, wall time elsewhere)
    wall_ratio: float
    cpu_ratio: float
    ref_median: float  # seconds, the steady clock
    fn_median: float
    pairs: int
    clock: str
    spread: float  # (p75 - p25) / 2 of the per-pair ratios: the ratio's noise on this machine

    def as_dict(self) -> dict:
        return asdict(self)


def measure_ratio(ref: Callable[..., Any] | torch.nn.Module, fn: Callable[..., Any] | torch.nn.Module,
                  inputs: Any = (), *, pairs: int = 30, warmup: int = 2, threads: int | None = 1,
                  device: str | torch.device | None = None, no_grad: bool = True) -> RatioResult:
    """Latency of ``fn`` as a fraction of ``ref``'s, timing *single* calls in interleaved pairs (ABBA order:
    ref-fn, fn-ref, ...) and taking the median of the per-pair ratios.

    Why: on a shared machine the load changes on a scale of seconds; blocks of repeated calls per model
    (the :func:`measure_latency` protocol run model after model) then read one model in a fast spell and the
    other in a slow one. Neighbouring single calls see the same load, so their ratio is steady: on our 2-core
    box, block protocols read the ratio of the same two ViTs between 0.47 and 0.55 in four repeats, pairs
    between 0.511 and 0.527 (``benchmarks/latency_protocols.py``).
    ``inputs`` as in :func:`measure_latency` (the same inputs for both). The ratio is on process CPU time on
    the CPU and wall time on an accelerator (the host only waits there)."""
    if pairs < 1 or warmup < 0:
        raise InputError(f"need pairs >= 1 and warmup >= 0, got pairs={pairs}, warmup={warmup}")
    for f, name in ((ref, "ref"), (fn, "fn")):
        if not callable(f):
            raise InputError(f"{name} must be callable, got {type(f).__name__}")
    dev, args, kwargs = _call_spec(inputs, device)

    def once(f: Callable[..., Any]) -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        f(*args, **kwargs)
        _synchronize(dev)
        return time.perf_counter() - t0, time.process_time() - c0

    old_threads = torch.get_num_threads()
    walls: list[tuple[float, float]] = []
    cpus: list[tuple[float, float]] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            for _ in range(warmup):
                ref(*args, **kwargs)
                fn(*args, **kwargs)
            _synchronize(dev)
            for i in range(pairs):
                if i % 2 == 0:
                    (wr, cr), (wf, cf) = once(ref), once(fn)
                else:
                    (wf, cf), (wr, cr) = once(fn), once(ref)
                walls.append((wr, wf))
                cpus.append((cr, cf))
    finally:
        torch.set_num_threads(old_threads)
    cpu_clock = dev.type == "cpu"
    wall_r = [f / max(r, 1e-12) for r, f in walls]
    cpu_r = [f / max(r, 1e-12) for r, f in cpus]
    steady = cpu_r if cpu_clock else wall_r
    pick = cpus if cpu_clock else walls
    q = statistics.quantiles(steady, n=4) if len(steady) >= 2 else [steady[0]] * 3
    return RatioResult(ratio=statistics.median(steady), wall_ratio=statistics.median(wall_r),
                       cpu_ratio=statistics.median(cpu_r), ref_median=statistics.median(r for r, _ in pick),
                       fn_median=statistics.median(f for _, f in pick), pairs=pairs,
                       clock="process CPU time" if cpu_clock else "wall time", spread=(q[2] - q[0]) / 2)


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Where a measurement ran: torch version, device (and its name), threads, CPU, host OS."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    env: dict[str, Any] = {
        "torch": torch.__version__, "device": str(dev), "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(dev)
    return env


# --------------------------------------------------------------------------------------------
# Lookup tables on a grid
# --------------------------------------------------------------------------------------------
Outside = Literal["clamp", "linear", "error"]


class LatencyTable:
    """Values (seconds) on a regular grid with named axes; multilinear interpolation in between.

    ``axes``: ordered {name: strictly increasing grid values}; ``values``: array of shape
    ``tuple(len(v) for v in axes.values())`` (NaN marks a point that was not measured; it
    poisons only interpolations that touch it). ``outside`` chooses what happens beyond the grid:
    ``"clamp"`` (default) holds the edge value, so the table never predicts a negative latency
    and shrinking a dim below the grid saves nothing (NViT: ΔT = 0 at the minimum dims);
    ``"linear"`` extends the edge cells' multilinear function; ``"error"`` raises InputError.
    Call with one keyword per axis: ``table(embed=384, heads=6, ...)``; scalars give a float,
    arrays/tensors (broadcast together) give a numpy array.
    """

    def __init__(self, axes: Mapping[str, Sequence[float]], values: Any, *,
                 metadata: Mapping[str, Any] | None = None, outside: Outside = "clamp",
                 unit: str = "s") -> None:
        if not axes:
            raise InputError("a LatencyTable needs at least one axis")
        self.axes: dict[str, np.ndarray] = {}
        for name, grid in axes.items():
            g = np.asarray(grid, dtype=np.float64).reshape(-1)
            if g.size == 0 or not np.all(np.isfinite(g)):
                raise InputError(f"axis '{name}' must hold at least one finite grid value")
            if g.size > 1 and not np.all(np.diff(g) > 0):
                raise InputError(f"axis '{name}' must be strictly increasing, got {g.tolist()}")
            self.axes[str(name)] = g
        vals = np.asarray(values, dtype=np.float64)
        shape = tuple(len(g) for g in self.axes.values())
        if vals.shape != shape:
            raise InputError(f"values must have shape {shape} (one dim per axis), got {vals.shape}")
        if outside not in ("clamp", "linear", "error"):
            raise InputError(f"outside must be 'clamp', 'linear' or 'error', got {outside!r}")
        self.values = vals
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.outside: Outside = outside
        self.unit = unit
        self._corners = np.array(list(itertools.product((0, 1), repeat=len(shape))), dtype=np.int64)
        self._sizes = np.array(shape, dtype=np.int64)

    @property
    def names(self) -> list[str]:
        """Axis names in grid order."""
        return list(self.axes)

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}[{len(v)}]" for k, v in self.axes.items())
        return f"LatencyTable({dims}, unit={self.unit!r}, outside={self.outside!r})"

    def __call__(self, **dims: Any) -> Any:
        """Multilinear interpolation at ``dims`` (one keyword per axis). Exact on grid points."""
        missing = [n for n in self.axes if n not in dims]
        extra = [n for n in dims if n not in self.axes]
        if missing or extra:
            raise InputError(f"LatencyTable takes exactly the axes {self.names}; "
                             f"missing {missing}, unknown {extra}")
        scalar = all(np.ndim(v) == 0 and not isinstance(v, torch.Tensor) for v in dims.values())
        pts = [np.asarray(dims[n].detach().cpu() if isinstance(dims[n], torch.Tensor) else dims[n],
                          dtype=np.float64) for n in self.axes]
        try:
            pts = list(np.broadcast_arrays(*pts))
        except ValueError as e:
            raise InputError(f"LatencyTable arguments do not broadcast: {e}") from None
        out = self._interp(pts)
        return float(out) if scalar else out

    def _interp(self, pts: list[np.ndarray]) -> np.ndarray:
        """pts: one array per axis, all of shape S -> values of shape S (all 2^n cell corners at once)."""
        shape = pts[0].shape
        lo: list[np.ndarray] = []
        frac: list[np.ndarray] = []
        for (name, g), x in zip(self.axes.items(), pts):
            x = x.reshape(-1)
            if not np.all(np.isfinite(x)):
                raise InputError(f"LatencyTable: axis '{name}' got a NaN/Inf value")
            if self.outside == "error" and (np.any(x < g[0]) or np.any(x > g[-1])):
                bad = x[(x < g[0]) | (x > g[-1])][0]
                raise InputError(f"LatencyTable: {name}={bad:g} is outside the grid [{g[0]:g}, {g[-1]:g}]")
            if g.size == 1:  # constant along this axis: the upper corner gets weight 0
                lo.append(np.zeros(x.shape, dtype=np.int64))
                frac.append(np.zeros_like(x))
                continue
            i = np.clip(np.searchsorted(g, x, side="right") - 1, 0, g.size - 2)
            f = (x - g[i]) / (g[i + 1] - g[i])
            if self.outside == "clamp":
                f = np.clip(f, 0.0, 1.0)
            lo.append(i)
            frac.append(f)
        n = len(lo)
        corners, sizes = self._corners, self._sizes  # (2^n, n), (n,)
        idx = np.stack(lo, -1)[None] + corners[:, None, :]  # (2^n, P, n)
        idx = np.minimum(idx, sizes - 1)
        fr = np.stack(frac, -1)[None]  # (1, P, n)
        w = np.where(corners[:, None, :] == 1, fr, 1.0 - fr).prod(-1)  # (2^n, P)
        v = self.values[tuple(idx[..., k] for k in range(n))]  # (2^n, P)
        # a NaN corner with weight exactly 0 must not poison the result
        out = np.where(w == 0.0, 0.0, w * v).sum(0)
        return out.reshape(shape)

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: format header, axes, values (NaN as null), unit, outside, metadata."""
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "unit": self.unit, "outside": self.outside,
                "axes": {k: [_num(x) for x in v.tolist()] for k, v in self.axes.items()},
                "values": to_jsonable(self.values.tolist()), "metadata": to_jsonable(self.metadata)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON (atomically); returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table written by :meth:`save`; raises DataError when it is missing or malformed."""
        p = require_file(path, "latency table")
        try:
            d = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"corrupt latency table {p}: {e}") from None
        return cls.from_dict(d, str(p))

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency table") -> LatencyTable:
        """The table of :meth:`to_dict`'s output ``d`` (e.g. embedded in a larger JSON); ``where`` names it in the
        DataError a malformed one raises."""
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT:
            raise DataError(f"{where} is not a tenfold latency table (no format '{TABLE_FORMAT}')")
        if d.get("version") != TABLE_VERSION:
            raise DataError(f"{where} has latency-table version {d.get('version')}; this tenfold reads {TABLE_VERSION}")
        try:
            # kept nested: the constructor checks the shape (flattened and reshaped, a transposed table loaded
            # scrambled) and numpy refuses a ragged list
            vals = np.array(_nan_for_none(d["values"]), dtype=np.float64)
            return cls(d["axes"], vals, metadata=d.get("metadata") or {},
                       outside=d.get("outside", "clamp"), unit=d.get("unit", "s"))
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as e:
            raise DataError(f"malformed latency table {where}: {e}") from None


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def _nan_for_none(nested: Any) -> Any:
    """The nested value lists of a saved table with its nulls (NaN entries in JSON) back as NaN."""
    if isinstance(nested, list):
        return [_nan_for_none(item) for item in nested]
    return np.nan if nested is None else nested


def build(axes: Mapping[str, Sequence[float]], measure_fn: Callable[..., Any], *,
          metadata: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
          outside: Outside = "clamp", progress: bool = False, order: str = "grid", seed: int = 0,
          clock: str = "wall") -> LatencyTable:
    """Measure ``measure_fn(**point)`` at every grid point and return the table.

    ``axes``: ordered {name: grid values}; ``measure_fn`` gets one keyword per axis and returns
    seconds (a float), a :class:`LatencyResult` or None/NaN (not measured). ``clock`` picks what a
    LatencyResult contributes: ``"wall"`` its median, ``"cpu"`` its process-CPU median (the steady
    figure on a shared, time-sliced CPU). ``order="shuffled"`` visits the points in a seeded random
    order, so a load change during the sweep adds noise instead of a slope along the first axis
    (in grid order the first axis is measured in blocks, one value after the other). ``metadata`` is
    stored next to :func:`environment` (device, torch, threads), which records where the table was
    built. Why: NViT's block LUT and HANT's per-op cost tables.
    """
    if order not in ("grid", "shuffled"):
        raise InputError(f"order must be 'grid' or 'shuffled', got {order!r}")
    if clock not in ("wall", "cpu"):
        raise InputError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    names = list(axes)
    grids = [list(axes[n]) for n in names]
    if not names or any(len(g) == 0 for g in grids):
        raise InputError("build needs at least one axis, each with at least one grid value")
    shape = tuple(len(g) for g in grids)
    LatencyTable(axes, np.zeros(shape), outside=outside)  # the axes checked before the sweep, not after it
    vals = np.full(shape, np.nan)
    points = list(itertools.product(*[range(len(g)) for g in grids]))
    if order == "shuffled":
        points = [points[i] for i in np.random.default_rng(seed).permutation(len(points))]
    it: Any = points
    if progress:
        from tqdm import tqdm

        it = tqdm(points, desc="latency table")
    t0 = time.perf_counter()
    for idx in it:
        point = {n: g[i] for n, g, i in zip(names, grids, idx)}
        r = measure_fn(**point)
        if isinstance(r, LatencyResult):
            r = r.cpu_median if clock == "cpu" else r.median
        vals[idx] = np.nan if r is None else float(r)
    meta = {**environment(device), "build_seconds": time.perf_counter() - t0, "order": order, "clock": clock,
            **dict(metadata or {})}
    return LatencyTable(axes, vals, metadata=meta, outside=outside)


def compare(measured: Sequence[float] | np.ndarray | torch.Tensor,
            predicted: Sequence[float] | np.ndarray | torch.Tensor) -> dict[str, float]:
    """How well predicted latencies match measured ones (e.g. LUT sums vs timed models).

    Returns ``n``; ``mape`` (mean |p - m| / m, percent); ``bias`` (mean (p - m) / m, percent:
    systematic over/under-prediction); ``max_ape`` (percent); ``spearman`` and ``pearson``
    correlations (NaN when either side is constant or n < 2).
    """
    from scipy import stats

    m = np.asarray(measured.detach().cpu() if isinstance(measured, torch.Tensor) else measured, dtype=np.float64)
    p = np.asarray(predicted.detach().cpu() if isinstance(predicted, torch.Tensor) else predicted,
                   dtype=np.float64)
    m, p = m.reshape(-1), p.reshape(-1)
    if m.shape != p.shape or m.size == 0:
        raise InputError(f"measured and predicted must be non-empty and of equal length, got {m.size}, {p.size}")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(p))):
        raise InputError("measured and predicted must be finite")
    if np.any(m <= 0):
        raise InputError("measured latencies must be > 0")
    rel = (p - m) / m
    out = {"n": int(m.size), "mape": float(100 * np.mean(np.abs(rel))), "bias": float(100 * np.mean(rel)),
           "max_ape": float(100 * np.max(np.abs(rel))), "spearman": math.nan, "pearson": math.nan}
    if m.size >= 2 and np.ptp(m) > 0 and np.ptp(p) > 0:
        out["spearman"] = float(stats.spearmanr(m, p).statistic)
        out["pearson"] = float(np.corrcoef(m, p)[0, 1])
    return out


def build_vit_lut(device: str | torch.device = "cpu", grid: Mapping[str, Sequence[float]] | None = None,
                  batch: int = 64, tokens: int = 65, *, warmup: int = 2, repeats: int = 5,
                  threads: int | None = 1, dtype: torch.dtype = torch.float32,
                  progress: bool = False, order: str = "grid", clock: str = "wall") -> LatencyTable:
    """Per-block latency LUT of a pre-norm ViT block on ``device`` (NViT, spec §2 "LUT").

    ``grid`` axes: ``embed``, ``heads``, ``qk`` and ``v`` (per-head widths), ``mlp`` (hidden
    width); the default is NViT's DeiT-B grid thinned to 3 points per axis. Each point times one
    :class:`tenfold.core.models.Block` with those widths on a ``(batch, tokens, embed)`` input
    (median of ``repeats`` after ``warmup``). ``order`` and ``clock`` as in :func:`build` (on a
    shared CPU: ``order="shuffled", clock="cpu"``). The table stores batch, tokens and dtype with the
    environment; read it with ``table(embed=..., heads=..., qk=..., v=..., mlp=...)``.
    """
    from tenfold.core.models import Block

    names = ("embed", "heads", "qk", "v", "mlp")
    if grid is None:
        grid = {"embed": [256, 512, 768], "heads": [1, 6, 12], "qk": [16, 32, 64], "v": [16, 32, 64],
                "mlp": [128, 1536, 3072]}
    if sorted(grid) != sorted(names):
        raise InputError(f"build_vit_lut grid needs exactly the axes {list(names)}, got {sorted(grid)}")
    if batch < 1 or tokens < 1:
        raise InputError(f"batch and tokens must be >= 1, got {batch}, {tokens}")
    if any(v < 1 for n in names for v in grid[n]):
        raise InputError("every grid value of build_vit_lut must be >= 1")
    dev = check_device(device)  # "bogus" was a raw RuntimeError
    gen = torch.Generator().manual_seed(0)

    def measure(embed: float, heads: float, qk: float, v: float, mlp: float) -> LatencyResult:
        with torch.random.fork_rng(devices=[]):  # the block's init leaves the global RNG as it was
            blk = Block(int(embed), int(heads), int(mlp), qk_dim=int(qk), v_dim=int(v)).to(dev, dtype).eval()
        x = torch.randn(batch, tokens, int(embed), generator=gen).to(dev, dtype)
        return measure_latency(blk, (x,), warmup=warmup, repeats=repeats, threads=threads, device=dev)

    meta = {"kind": "vit-block", "batch": batch, "tokens": tokens, "dtype": str(dtype).replace("torch.", ""),
            "warmup": warmup, "repeats": repeats,
            "threads": threads if threads is not None else torch.get_num_threads()}  # what it timed with
    return build({n: list(grid[n]) for n in names}, measure, metadata=meta, device=dev, progress=progress,
                 order=order, clock=clock)
