"""Session-19 probes of GradInversion's G seeds: can the G runs be fused better than by their plain mean?

Two questions, both on the tuning pool (cifar10-train[1000:4000], never the benchmark's batches), 160 iterations,
the ``cpu`` preset's attack (pyramid 4), oracle labels, eval-mode client:

``selection``: G independent seeds per batch (no group term). Does a seed's final objective predict its PSNR? If it
did, the seeds could be weighed or selected by it (or a population search could replace its worst seed). Writes,
per batch, every seed's PSNR and objective, the objective at the truth, and the PSNR of the plain mean, of the
best-by-objective seed and of the mean of the better half by objective.

``lowpass``: the group pull restricted to low spatial frequencies. The pull's direction ∂R_group/∂x̂ is averaged
over 2^L x 2^L blocks (then rescaled to the same norm per seed), so the seeds share their coarse layout but keep
independent fine detail, whose errors the final mean can then average away. Scored by
``benchmarks.gradinversion.tune`` on the group candidates' batches (calibrated B = 1, seeds 9001/9002/9003/9005);
``--level 0`` is the unmodified group term, ``--alpha 0`` the control (the plain mean of G independent runs).

Not tenfold options: neither beat the plain mean of G independent runs (the README's stage 9). Run from the
repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/gradinversion_group_probes.py selection --out /tmp/selection.json
    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/gradinversion_group_probes.py lowpass --level 2 --alpha 0.2 \
        --out /tmp/lowpass.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


def selection(out: Path, G: int, iterations: int, seeds: list[int], B: int) -> None:
    """Per batch: G independent seeds, each seed's PSNR and single-seed objective."""
    from scipy.stats import spearmanr

    from benchmarks.gradinversion import PYRAMID, TUNE_POOL
    from tenfold.core.data import load_dataset
    from tenfold.gradinversion import PRESETS, build, simulate_client
    from tenfold.gradinversion.evaluation import image_metrics
    from tenfold.gradinversion.verbs import load_model, pick_batch

    xs, ys = load_dataset("cifar10-train", limit=TUNE_POOL[1]).tensors()
    xs, ys = xs[TUNE_POOL[0]:], ys[TUNE_POOL[0]:]
    models = {"trained": load_model("cifar10-resnet20", "default"),
              "calibrated": load_model("cifar10-resnet20", "none", calibrate_bn_images=512, seed=0)}
    cfg = dataclasses.replace(PRESETS["cpu"], iterations=iterations, labels="oracle",
                              **dict(PYRAMID, group_size=G, alpha_group=0.0, registration="none"))
    one = build(dataclasses.replace(cfg, group_size=1))  # the single-seed objective
    rows: list[dict[str, Any]] = []
    for regime, (model, mean, std) in models.items():
        for s in seeds:
            idx = pick_batch(ys, B, s)
            g = simulate_client(model, xs[idx], ys[idx], "eval")
            r = build(cfg).run(model, g, num_images=B, mean=mean, std=std, labels=ys[idx], bn_ref="running")
            psnr = [image_metrics(r.seeds[k], xs[idx])["psnr"] for k in range(G)]
            obj = [one.objective(model, g, r.seeds[k], r.labels, mean=mean, std=std)["total"] for k in range(G)]
            order = sorted(range(G), key=lambda k: obj[k])
            row = {"regime": regime, "batch_seed": s, "psnr": psnr, "objective": obj,
                   "objective_truth": one.objective(model, g, xs[idx], ys[idx], mean=mean, std=std)["total"],
                   "plain_mean_psnr": image_metrics(r.images, xs[idx])["psnr"],
                   "best_by_objective_psnr": psnr[order[0]],
                   "better_half_mean_psnr": image_metrics(r.seeds[order[:G // 2]].mean(0), xs[idx])["psnr"],
                   "spearman_objective_psnr": float(spearmanr(obj, psnr).correlation)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    summary = {"median_spearman": statistics.median(r["spearman_objective_psnr"] for r in rows),
               "one_seed_psnr": statistics.mean(statistics.mean(r["psnr"]) for r in rows),
               **{k: statistics.mean(r[k] for r in rows)
                  for k in ("plain_mean_psnr", "best_by_objective_psnr", "better_half_mean_psnr")},
               "truth_below_every_seed": all(r["objective_truth"] < min(r["objective"]) for r in rows)}
    out.write_text(json.dumps({"G": G, "iterations": iterations, "B": B, "batch_seeds": seeds,
                               "pool": "cifar10-train[1000:4000]", "summary": summary, "runs": rows}, indent=1))
    print(json.dumps(summary))


def lowpass(out: Path, level: int, alpha: float, batch_seeds: list[int] | None) -> None:
    """The group candidates' tuning run with the pull's direction averaged over 2^level blocks; ``alpha`` 0 is the
    honest control (the plain mean of G independent runs, no registration). ``batch_seeds``: calibrated B = 1 batches
    (pick_batch seeds in the tuning pool) instead of the group candidates' four."""
    import importlib

    import benchmarks.gradinversion as bench

    attack = importlib.import_module("tenfold.gradinversion.attack")  # the module (the package's `attack` is a verb)

    exact = attack.group_consistency

    def low(X: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, d = exact(X, E)
        if level == 0:
            return r, d
        k = 2 ** level
        lo = F.interpolate(F.avg_pool2d(d.flatten(0, 1), k), scale_factor=k, mode="nearest").view_as(d)
        scale = d.flatten(1).norm(dim=1) / lo.flatten(1).norm(dim=1).clamp_min(1e-12)
        return r, lo * scale.view(-1, *[1] * (d.dim() - 1))

    attack.group_consistency = low  # the loop looks the function up in its module at every step
    if batch_seeds:
        bench.TUNE_GROUP_SEEDS[:] = batch_seeds
    name = f"pyramid 4, group G=3, alpha {alpha}, lowpass {level}" if alpha else "pyramid 4, group G=3, control"
    bench.CANDIDATES[name] = dict(bench.PYRAMID, group_size=3, alpha_group=alpha, group_every=1,
                                  registration="translation" if alpha else "none")
    bench.tune([name], 160, str(out.resolve()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="probe", required=True)
    s = sub.add_parser("selection")
    s.add_argument("--G", type=int, default=6)
    s.add_argument("--iterations", type=int, default=160)
    s.add_argument("--batch-size", type=int, default=1)
    s.add_argument("--seeds", default="9001,9002,9003,9005,9006,9007")
    s.add_argument("--out", type=Path, required=True)
    lp = sub.add_parser("lowpass")
    lp.add_argument("--level", type=int, required=True)
    lp.add_argument("--alpha", type=float, required=True)
    lp.add_argument("--batch-seeds", default="", help="comma-separated pick_batch seeds (default: tune's four)")
    lp.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.probe == "selection":
        selection(a.out, a.G, a.iterations, [int(v) for v in a.seeds.split(",")], a.batch_size)
    else:
        lowpass(a.out, a.level, a.alpha, [int(v) for v in a.batch_seeds.split(",") if v])


if __name__ == "__main__":
    main()
