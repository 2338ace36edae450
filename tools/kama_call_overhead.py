"""KAMA's analytic fit, CPU time per body by bodies per call: this tree's code against a git revision's, same run.

Session 25 batched the four limbs (and the two ankles) of the analytic articulation into one pass of rows instead
of a Python loop per limb, and gave the Levenberg-Marquardt refinement of a few bodies dual-number Jacobians instead
of torch.func's vmapped jacfwd. A call on one body was mostly op overhead (66.7 ms per body alone, 6.7 ms in calls
of 10, session 22), so the changes are measured where they matter: at 1, 3 and 10 bodies per call, the benchmark's
30 clean bodies (seed 100), the `fit` of the benchmark's config with refine_iters 0 (the analytic fit) and 5 (the
CLI presets' refinement). The two versions run in interleaved passes (old, new, old, new, ...; each pass fits all
30 bodies at one chunk size), and the figure is the median over passes of the per-pass ratio old / new, which a
shared machine's load changes less than either time alone. Also: the refinement's two Jacobian paths against each
other at 1 to 8 and 200 bodies per call (where the threshold between them sits), and the benchmark's real CMU walk
fitted as a sequence, old against new.
Session 26 took the refinement's Jacobian from the keypoints alone (the priors' rows are a constant block) and wrote
the keypoint regressor without constant operands, on which forward-mode AD takes a slow Python path in this torch
(its first call imports torch._dynamo); the "old" version now includes that revision's keypoints.py, and the first
refined fit in a fresh process is timed too.
Both versions' outputs are compared too: they must agree to rounding (the batched products round differently).

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/kama_call_overhead.py --against a0e2ba7 \\
        --out benchmarks/results/kama_call_overhead.json
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from benchmarks.common import git_commit
from tenfold.core.io import write_json

PATH = "src/tenfold/kama/articulate.py"
KEYPOINTS_PATH = "src/tenfold/kama/keypoints.py"


def _load_at(rev: str, path: str, name: str) -> ModuleType:
    """The file ``path`` as it was at git revision ``rev``, imported as module ``name``."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if src.returncode != 0:
        raise SystemExit(f"error: cannot read {path} at {rev}: {src.stderr.strip()}")
    f = Path(tempfile.mkdtemp()) / f"{name.rsplit('.', 1)[-1]}.py"
    f.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location(name, f)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def module_at(rev: str) -> ModuleType:
    """``tenfold.kama.articulate`` as it was at git revision ``rev`` (imported under another name), with the
    keypoint regressor of that revision too (session 26 changed keypoints.py): every name it imported from
    ``tenfold.kama.keypoints`` is rebound to that revision's."""
    mod = _load_at(rev, PATH, "tenfold.kama.articulate_at_rev")
    kp = _load_at(rev, KEYPOINTS_PATH, "tenfold.kama.keypoints_at_rev")
    for name, obj in list(vars(mod).items()):
        if getattr(obj, "__module__", None) == "tenfold.kama.keypoints" and hasattr(kp, name):
            setattr(mod, name, getattr(kp, name))
    return mod


FIRST_CALL = """
import sys, time, importlib, warnings
import torch
torch.set_num_threads(1)
sys.path.insert(0, "tools")
from kama_call_overhead import module_at
from tenfold.kama.procedural import procedural_model
from tenfold.kama.verbs import _synthetic_bodies
mod = module_at(sys.argv[1]) if sys.argv[1] != "this-tree" else importlib.import_module("tenfold.kama.articulate")
model = procedural_model(0)
X = _synthetic_bodies(model, 1, 100, 0.0)["keypoints"]
mod.fit(model, X, refine_iters=0, with_vertices=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w, c = time.perf_counter(), time.process_time()
    mod.fit(model, X, refine_iters=5, with_vertices=False)
    w, c = time.perf_counter() - w, time.process_time() - c
print(round(1e3 * w, 1), round(1e3 * c, 1), "torch._dynamo" in sys.modules, len(caught))
"""


def first_call(rev: str, runs: int = 3) -> dict[str, Any]:
    """The first refined fit (5 LM steps, one body) in a fresh process, after one analytic fit: old (``rev``) against
    this tree, ``runs`` processes each, alternating. Its extra cost is torch's one-time work on the first Jacobian:
    torch._dynamo imported by forward-mode AD's slow path (session 26), and torch's jvp decompositions loaded (with
    torch.jit.script warnings, which the new code filters: "warnings reaching the caller")."""
    out: dict[str, Any] = {}
    rows: dict[str, list[list[str]]] = {"old": [], "new": []}
    for _ in range(runs):
        for name, arg in (("old", rev), ("new", "this-tree")):
            run = subprocess.run([sys.executable, "-c", FIRST_CALL, arg], capture_output=True, text=True)
            if run.returncode != 0:
                raise SystemExit(f"error: the first-call probe failed: {run.stderr.strip()[-500:]}")
            rows[name].append(run.stdout.split())
    for name, r in rows.items():
        out[name] = {"wall ms (median)": statistics.median(float(v[0]) for v in r),
                     "cpu ms (median)": statistics.median(float(v[1]) for v in r),
                     "imports torch._dynamo": r[0][2] == "True",
                     "warnings reaching the caller (filter always)": int(r[0][3])}
    out["old / new cpu (median of per-run ratios)"] = round(statistics.median(
        float(a[1]) / float(b[1]) for a, b in zip(rows["old"], rows["new"])), 2)
    return out


def agreement(old: ModuleType, new: ModuleType, model: Any, X: torch.Tensor) -> dict[str, float]:
    """Largest difference of the two versions' rotations, shapes and fitted keypoints, in float32 and float64."""
    out: dict[str, float] = {}
    for name, dt in (("float32", torch.float32), ("float64", torch.float64)):
        m = model.to(dt)  # (in place: nn.Module.to)
        x = X.to(dt)
        a = old.articulate(m, x)
        b = new.articulate(m, x)
        out[f"{name} max |rot diff|"] = float((a["rot"] - b["rot"]).abs().max())
        out[f"{name} max |betas diff|"] = float((a["betas"] - b["betas"]).abs().max())
        out[f"{name} degenerate flags equal"] = bool(torch.equal(a["degenerate"], b["degenerate"]))
        ka, kb = (mod.fit(m, x, refine_iters=5, with_vertices=False)["keypoints"] for mod in (old, new))
        out[f"{name} max refined keypoint diff (mm)"] = float((ka - kb).norm(dim=-1).max()) * 1e3
    model.float()
    return out


def jacobian_paths(new: ModuleType, model: Any, cfg: Any, passes: int = 3) -> dict[str, Any]:
    """The refinement's two Jacobians on the same bodies: dual-number rows (forced for every batch size) against
    torch.func's vmapped jacfwd (forced), CPU ms per body of a 5-LM-step fit at 1 to 8 and at 200 bodies per call."""
    from tenfold.kama.verbs import _synthetic_bodies

    X = _synthetic_bodies(model, 200, 101, 10.0)["keypoints"]
    keep, out = new.DUAL_JACOBIAN_ROWS, {}
    try:
        for bodies, calls in ((1, 12), (2, 12), (4, 12), (6, 8), (8, 6), (200, 1)):
            ms: dict[str, list[float]] = {"dual rows": [], "jacfwd": []}
            for _ in range(passes):
                for name, rows in (("dual rows", 10 ** 9), ("jacfwd", 0)):
                    new.DUAL_JACOBIAN_ROWS = rows
                    c = time.process_time()
                    for i in range(calls):
                        new.fit(model, X[i * bodies:(i + 1) * bodies], refine_iters=5, with_vertices=False,
                                shape_rounds=cfg.shape_rounds, warn=False)
                    ms[name].append(1e3 * (time.process_time() - c) / (bodies * calls))
            out[f"{bodies} bodies per call"] = {k: round(statistics.median(v), 2) for k, v in ms.items()}
    finally:
        new.DUAL_JACOBIAN_ROWS = keep
    out["threshold (rows = bodies x 85)"] = keep
    return out


def cmu_sequence(old: ModuleType, new: ModuleType, model: Any, cfg: Any, passes: int = 2) -> dict[str, Any]:
    """The benchmark's real CMU walk fitted as a sequence (249 frames, one call), old against new code, CPU ms per
    frame of the analytic fit and of the analytic fit + 5 LM steps; skipped when the BVH is not there."""
    from tenfold.core.data import data_root
    from tenfold.kama.mocap import bvh_keypoints

    path = data_root() / "mocap/cmu_131_01_scaled.bvh"
    if not path.exists():
        return {"skipped": f"{path} not found"}
    X, c, _fps = bvh_keypoints(str(path), 30.0)
    out: dict[str, Any] = {"frames": len(X)}
    for refine in (0, 5):
        ms: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(passes):
            for name, mod in (("old", old), ("new", new)):
                t = time.process_time()
                mod.fit(model, X, c, refine_iters=refine, with_vertices=False, sequential=True,
                        shape_rounds=cfg.shape_rounds, warn=False)
                ms[name].append(1e3 * (time.process_time() - t) / len(X))
        out[f"refine_iters {refine}"] = {
            "old ms per frame (median)": round(statistics.median(ms["old"]), 2),
            "new ms per frame (median)": round(statistics.median(ms["new"]), 2),
            "old / new (median of per-pass ratios)": round(statistics.median(a / b for a, b in zip(ms["old"],
                                                                                                  ms["new"])), 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True,
                   help="git revision whose articulate.py and keypoints.py are the 'old' version")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/kama_call_overhead.json"))
    args = p.parse_args()
    if args.passes < 1:
        p.error("--passes must be >= 1")
    torch.set_num_threads(1)
    from tenfold.kama.config import Config
    from tenfold.kama.procedural import procedural_model
    from tenfold.kama.verbs import _synthetic_bodies

    old, new = module_at(args.against), importlib.import_module("tenfold.kama.articulate")
    cfg = Config()  # the benchmark's
    model = procedural_model(cfg.seed)
    n = 30
    X = _synthetic_bodies(model, n, 100, 0.0)["keypoints"]
    t0, c0 = time.perf_counter(), time.process_time()
    for mod in (old, new):  # warm-up
        mod.fit(model, X[:2], refine_iters=5, with_vertices=False)
    figures: dict[str, Any] = {}
    for refine, chunk in ((0, 1), (0, 3), (0, 10), (5, 1), (5, 3), (5, 10)):
        ms: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.passes):
            for name, mod in (("old", old), ("new", new)):
                c = time.process_time()
                for i in range(0, n, chunk):
                    mod.fit(model, X[i:i + chunk], refine_iters=refine, with_vertices=False,
                            shape_rounds=cfg.shape_rounds)
                ms[name].append(1e3 * (time.process_time() - c) / n)
        figures[f"refine_iters {refine}, chunk {chunk}"] = {
            "old ms per body (median)": round(statistics.median(ms["old"]), 2),
            "new ms per body (median)": round(statistics.median(ms["new"]), 2),
            "old / new (median of per-pass ratios)": round(statistics.median(a / b for a, b in zip(ms["old"],
                                                                                                  ms["new"])), 3),
            "passes old": [round(v, 2) for v in ms["old"]], "passes new": [round(v, 2) for v in ms["new"]]}
    figures["first refined fit in a fresh process"] = first_call(args.against)
    figures["jacobian paths, new code"] = jacobian_paths(new, model, cfg)
    figures["cmu sequence"] = cmu_sequence(old, new, model, cfg)
    figures["agreement"] = agreement(old, new, model, X)
    write_json(args.out, {"command": f"OMP_NUM_THREADS=1 PYTHONPATH=. python tools/kama_call_overhead.py --against "
                                     f"{args.against} --out {args.out}", "commit": git_commit(),
                          "against": args.against, "bodies": n, "figures": figures,
                          "wall_seconds": round(time.perf_counter() - t0, 1),
                          "process_cpu_seconds": round(time.process_time() - c0, 1)})
    print(figures)


if __name__ == "__main__":
    sys.exit(main())
