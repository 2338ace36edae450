"""Session 22: the figures its code and READMEs quote for two review findings, measured by one rerunnable command.

1. `tenfold.kama.facing_backwards` on SYNTHETIC procedural bodies (1,000 random in-limit poses, seed 7) with 0 and
   25 mm keypoint noise: how often true bodies read backwards, and how often the same keypoints read backwards
   with left and right swapped, or mirrored (x -> -x).
2. What `kama fit` made of such keypoints before it warned: the analytic + refined fit (the `smoke` preset's
   refinement) of 50 bodies with 10 mm noise (seed 3), their keypoints as given, in a shuffled order, with left and
   right swapped, and mirrored: the mean keypoint error (the fit's own residual) and the MPJPE against the truth
   (the mirrored truth for the mirrored input: no rotation reaches it).

3. KAMA's analytic CPU time per body against the bodies per call: the benchmark times the analytic fit on chunks
   of 10 bodies (one batched call) and the optimiser one body at a time, so its CPU ratio depends on the chunk.
   The benchmark's 30 clean bodies (seed 100), at chunks of 1, 3 and 10, each timed three times back to back;
   the median CPU ms per body.

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/session22_review_figures.py \
        --out benchmarks/results/session22_review_figures.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import git_commit
from tenfold.core.io import write_json

PAIRS = ("hip", "knee", "ankle", "big_toe", "small_toe", "heel", "eye", "ear", "shoulder", "elbow", "wrist")


def _swap() -> list[int]:
    from tenfold.kama.keypoints import K

    order = list(range(26))
    for part in PAIRS:
        order[K["left_" + part]], order[K["right_" + part]] = K["right_" + part], K["left_" + part]
    return order


def facing_rates(n: int = 1000, seed: int = 7) -> dict[str, Any]:
    """The share of bodies that read backwards, per noise level and keypoint variant."""
    from tenfold.kama.keypoints import facing_backwards
    from tenfold.kama.procedural import procedural_model
    from tenfold.kama.verbs import _synthetic_bodies

    model = procedural_model(0)
    out: dict[str, Any] = {"bodies": n, "seed": seed}
    for mm in (0.0, 25.0):
        X = _synthetic_bodies(model, n, seed, mm)["keypoints"]
        mirrored = X * torch.tensor([-1.0, 1.0, 1.0], dtype=X.dtype)
        out[f"{int(mm)} mm"] = {name: round(float(facing_backwards(x).float().mean()), 4)
                                for name, x in (("true", X), ("left/right swapped", X[:, _swap()]),
                                                ("mirrored", mirrored))}
    return out


def bad_keypoint_fits(n: int = 50, seed: int = 3, noise_mm: float = 10.0) -> dict[str, Any]:
    """Mean keypoint error and MPJPE (mm) of the smoke preset's fit on keypoints given right and given wrong."""
    from tenfold.kama import PRESETS
    from tenfold.kama.procedural import procedural_model
    from tenfold.kama.verbs import _fit, _synthetic_bodies

    cfg = PRESETS["smoke"]
    model = procedural_model(cfg.seed)
    s = _synthetic_bodies(model, n, seed, noise_mm)
    X = s["keypoints"]
    flip = torch.tensor([-1.0, 1.0, 1.0], dtype=X.dtype)
    with torch.no_grad():
        truth = model(s["pose"], s["betas"], s["transl"])["joints"]
    order = torch.randperm(26, generator=torch.Generator().manual_seed(0))
    out: dict[str, Any] = {"bodies": n, "seed": seed, "noise_mm": noise_mm, "refine_iters": cfg.refine_iters}
    for name, x, t in (("as given", X, truth), ("shuffled order", X[:, order], truth),
                       ("left/right swapped", X[:, _swap()], truth), ("mirrored", X * flip, truth * flip)):
        fit = _fit(dataclasses.replace(cfg, device="cpu"), model, x, torch.ones(x.shape[:2], dtype=x.dtype))
        with torch.no_grad():
            j = model(fit["pose"], fit["betas"], fit["transl"])["joints"]
        mpjpe = ((j - j[:, :1]) - (t - t[:, :1])).norm(dim=-1).mean() * 1e3
        out[name] = {"keypoint_error_mm": round(float(fit["residual"].mean() * 1e3), 2),
                     "mpjpe_mm": round(float(mpjpe), 2)}
    return out


def analytic_ms_by_chunk(n: int = 30, seed: int = 100, chunks: tuple[int, ...] = (1, 3, 10)) -> dict[str, Any]:
    """Median CPU ms per body of the analytic fit (refine_iters 0) at each chunk size, three passes each."""
    import statistics

    from tenfold.kama.articulate import fit
    from tenfold.kama.config import Config
    from tenfold.kama.procedural import procedural_model
    from tenfold.kama.verbs import _synthetic_bodies

    cfg = Config()  # the benchmark's
    model = procedural_model(cfg.seed)
    X = _synthetic_bodies(model, n, seed, 0.0)["keypoints"]
    fit(model, X[:2], refine_iters=0, with_vertices=False)  # warm-up
    out: dict[str, Any] = {"bodies": n, "seed": seed}
    for chunk in chunks:
        passes = []
        for _ in range(3):
            c0 = time.process_time()
            for i in range(0, n, chunk):
                fit(model, X[i:i + chunk], refine_iters=0, with_vertices=False, shape_rounds=cfg.shape_rounds)
            passes.append(1e3 * (time.process_time() - c0) / n)
        out[f"chunk {chunk}"] = round(statistics.median(passes), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/session22_review_figures.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    figures = {"kama_facing_backwards": facing_rates(), "kama_fits_of_bad_keypoints": bad_keypoint_fits(),
               "kama_analytic_cpu_ms_per_body_by_chunk": analytic_ms_by_chunk()}
    write_json(args.out, {"command": "OMP_NUM_THREADS=1 PYTHONPATH=. python tools/session22_review_figures.py "
                                     f"--out {args.out}", "commit": git_commit(), "figures": figures,
                          "wall_seconds": round(time.perf_counter() - t0, 1),
                          "process_cpu_seconds": round(time.process_time() - c0, 1)})
    print(figures)


if __name__ == "__main__":
    main()
