"""Where the probability-flow ODE spends its evaluations at tight tolerance, and what the score nets' time features
have to do with it: LSGM and the data-space model on MNIST at ``time_scale`` 1000 (the official 1000 t features) and
smaller scales.

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_time_scale     # about 25 min on one core
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_time_scale --time-scales 1000,100,10   # one more scale
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_time_scale --time-scales 1000 --tols 1e-2,1e-3,1e-4,1e-5 \
        --data-steps 3200 --out benchmarks/results/lsgm_tolerance.json   # NFE ratio against tolerance
    python -m benchmarks.lsgm_time_scale --time-scales 1000 --device cuda --steps 9600 --data-steps 9600 \
        --models lsgm --out L.json      # one model per process (and --models data_space --out D.json beside it),
    python -m benchmarks.lsgm_time_scale --merge L.json D.json --out LD.json   # then joined (gpu_slot.sh lsgm_budget)

Why: in the LSGM benchmark most drift calls at tol 1e-5 land at t in [0.1, 1], where the latent distribution is
nearly Normal and the ODE should be easy. The drift there is not smooth in t: with features sin(1000 t f), the
fastest has period 0.006 in t, and a net trained for a few thousand steps keeps ripples at that period, which a
tight adaptive solver must resolve. This script trains both models (the LSGM benchmark's sizes and schedule; the
data-space model with ``reweight_uniform`` at lr 3e-3, its sweep winner, for ``--data-steps``) per time scale,
and reports NFE at tol 1e-3 and 1e-5 (the median of 3 100-sample batches), drift calls per decade of t, the
roughness of the drift (residual of a cubic fit over a window of 5 % of t), and FD-CNN of 500 samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import clock, goal, parser, write_result
from benchmarks.lsgm import data_channels, n_params, preset_for, train_data_sgm
from tenfold.lsgm.data import load_split
from tenfold.lsgm.fd import fd, feature_cnn
from tenfold.lsgm.ode import _drift, ode_sample
from tenfold.lsgm.sde import SDE, VPSDE
from tenfold.lsgm.train import build, generate, load_model, train_stages


def ode_profile(fn: Any, sde: SDE, shape: tuple[int, ...], batches: int = 3, n: int = 100,
                tols: tuple[float, ...] = (1e-3, 1e-5), device: str | torch.device = "cpu") -> dict[str, Any]:
    """NFE at each of ``tols`` (median over ``batches`` noise batches, seeds shared by every model), drift calls
    per decade of t (first batch), and the drift's roughness at t ~ 0.9 / 0.5 / 0.1 / 0.01. The noise is drawn on
    the CPU and moved to ``device``, so every device starts from the same batches."""
    out: dict[str, Any] = {}
    for tol in tols:
        g = torch.Generator().manual_seed(5)
        counts: list[int] = []
        seen: list[float] = []

        def rec(z: torch.Tensor, t: torch.Tensor, seen: list[float] = seen) -> torch.Tensor:
            seen.append(float(t[0]))
            return fn(z, t)

        for b in range(batches):
            counts.append(ode_sample(rec if b == 0 else fn, sde, torch.randn(n, *shape, generator=g).to(device),
                                     ode_eps=1e-5, tol=tol)[1])
        decades: dict[str, int] = {}
        for t in seen:
            k = str(math.floor(math.log10(max(t, 1e-12))))
            decades[k] = decades.get(k, 0) + 1
        out[f"tol_{tol:g}"] = {"nfe_median": statistics.median(counts), "nfe_batches": counts,
                               "calls_per_decade_of_t": dict(sorted(decades.items(), key=lambda kv: int(kv[0])))}
    z = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    rough = {}
    for lo in (0.9, 0.5, 0.1, 0.01):
        ts = torch.linspace(lo, lo * 1.05, 201)
        with torch.no_grad():
            f = torch.stack([_drift(sde, fn, z, float(t)) for t in ts]).flatten(1).cpu()
        T = (ts - ts.mean()) / (ts.max() - ts.min())
        A = torch.stack([torch.ones_like(T), T, T ** 2, T ** 3], 1)
        res = f - A @ torch.linalg.lstsq(A, f).solution
        rough[f"t~{lo:g}"] = float(res.abs().mean() / f.abs().mean())
    out["drift_roughness_relative"] = rough
    return out


def data_space_profile(dm: Any, sde: VPSDE, fdnet: Any, real: torch.Tensor, tols: tuple[float, ...] = (1e-3, 1e-5),
                       device: str | torch.device = "cpu") -> dict[str, Any]:
    """:func:`ode_profile` of a trained data-space model (on ``device``), plus FD-CNN of 500 of its samples at
    tol 1e-3 (binarised: the dequantisation bin each falls in)."""
    dm.eval()

    def d_eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dm.score(z, t, sde.var(t).sqrt())

    out = ode_profile(d_eps, sde, (1, 28, 28), tols=tols, device=device)
    y1 = torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    yd, _ = ode_sample(d_eps, sde, y1, ode_eps=1e-5, tol=1e-3)
    out["fd_draw_tol_1e-3"] = fd(fdnet, (yd > 0).float().cpu(), real)
    return out


def study_setup(data: str, steps: int) -> tuple[Any, Any, torch.Tensor, dict[str, Any]]:
    """What the LSGM studies share: the split, the cached FD-CNN, 500 held-out reference images, and the config
    overrides that give the benchmark's sizes (the same small VAE and score net, EMA and learning rates)."""
    split = load_split(data, 0, image_size=28)
    fdnet = feature_cnn(split.train, split.train_labels, key=data)
    size = dict(vae_ch=8, latent_ch=4, score_ch=16, batch_size=32, data=data, warmup=(steps - steps // 2) // 10,
                ckpt_every=10 ** 9, log_every=10 ** 9, ode_tol=1e-3, eval_batch=500, ema=0.995, lr_score=1e-3,
                lr_mix=1e-2)
    return split, fdnet, split.heldout_grey[:500], size


def main() -> None:
    p = parser(__doc__.splitlines()[0], "mnist-test")
    p.add_argument("--time-scales", default="1000,100")
    p.add_argument("--steps", type=int, default=3200, help="LSGM: half VAE stage 1, half stage 2 (as the benchmark)")
    p.add_argument("--data-steps", type=int, default=1600)
    p.add_argument("--tols", default="1e-3,1e-5", help="ODE tolerances of the NFE profile (1e-3 and 1e-5 needed)")
    p.add_argument("--models", default="lsgm,data_space",
                   help="which to train: both, or one of them (two processes, joined afterwards by --merge)")
    p.add_argument("--merge", nargs="+", type=Path, default=None,
                   help="join result files of the same study run per model (--models lsgm / data_space) into --out")
    a = p.parse_args()
    torch.set_num_threads(1)
    started = clock()
    if a.merge:
        fig, scales = merge(a.merge)
        write_result("lsgm_time_scale", fig, goals_of(fig, scales), device=a.device, out=a.out, started=started)
        return
    scales = [float(s) for s in a.time_scales.split(",")]
    tols = tuple(float(t) for t in a.tols.split(","))
    models = a.models.split(",")
    if not {1e-3, 1e-5} <= set(tols):
        raise SystemExit(f"--tols must include 1e-3 and 1e-5, got '{a.tols}'")
    if not models or not set(models) <= {"lsgm", "data_space"}:
        raise SystemExit(f"--models must name lsgm and/or data_space, got '{a.models}'")
    split, fdnet, real, size = study_setup(a.data, a.steps)
    sde = VPSDE()
    fig: dict[str, Any] = {"data": a.data, "lsgm_steps": a.steps, "data_space_steps": a.data_steps,
                           "time_scales": scales, "models": models,
                           "data_space": {"weighting": "reweight_uniform", "lr": 3e-3}}
    with tempfile.TemporaryDirectory() as tmp:
        for s in scales:
            cfg = dataclasses.replace(preset_for(a.data), **size, stage1_steps=a.steps // 2,
                                      stage2_steps=a.steps - a.steps // 2, time_scale=s, device=a.device)
            vae, score, _ = build(cfg, split.train.shape[1])
            ch = data_channels(n_params(vae) + n_params(score))  # the data-space net gets LSGM's parameter count
            fig["data_space"]["channels"] = ch
            row: dict[str, Any] = {}
            fig[f"time_scale_{s:g}"] = row
            if "lsgm" in models:
                train_stages(cfg, Path(tmp) / f"lsgm-{s:g}", split)
                m = load_model(Path(tmp) / f"lsgm-{s:g}").to(a.device)
                row["lsgm"] = ode_profile(m.eps_fn, m.sde, m.vae.latent_shape, tols=tols, device=a.device)
                g = generate(m, 500, tol=1e-3, batch=500)
                row["lsgm"]["fd_draw_tol_1e-3"] = fd(fdnet, g["draw"].cpu(), real)
                print(s, "LSGM NFE", {k: v["nfe_median"] for k, v in row["lsgm"].items() if k.startswith("tol_")},
                      "FD", round(row["lsgm"]["fd_draw_tol_1e-3"], 1), flush=True)
                write_result("lsgm_time_scale", fig, goals_of(fig, scales), device=a.device, out=a.out,
                             started=started)  # a run cut off in the data-space model keeps LSGM's row
            if "data_space" in models:
                dm, _, _ = train_data_sgm(ch, 3e-3, split.train, a.data_steps, 32, Path(tmp) / f"data-{s:g}", sde,
                                          1e-5, scheme="reweight_uniform", time_scale=s, device=a.device)
                row["data_space"] = data_space_profile(dm, sde, fdnet, real, tols, device=a.device)
            add_ratios(row, tols)
            print(s, {k: v for k, v in row.items() if k.startswith("nfe_ratio")}, flush=True)
            write_result("lsgm_time_scale", fig, goals_of(fig, scales), device=a.device, out=a.out,
                         started=started)  # after every scale: a cut run keeps what it measured


def add_ratios(row: dict[str, Any], tols: Any) -> None:
    """The data-space NFE over LSGM's at each tolerance, where the row has both models."""
    if "lsgm" in row and "data_space" in row:
        for tol in tols:
            key = f"tol_{float(tol):g}"
            row[f"nfe_ratio_data_over_lsgm_{key}"] = (row["data_space"][key]["nfe_median"]
                                                      / row["lsgm"][key]["nfe_median"])


def merge(paths: list[Path]) -> tuple[dict[str, Any], list[float]]:
    """One study's figures from result files of runs that each trained one model (same data, steps, scales,
    tolerances and data-space settings; each model from one file). ``sources`` keeps each file's wall and CPU
    seconds, the training time, which the merged file's own seconds (the merge's) are not."""
    runs = []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
            if "data" not in run["figures"]:
                raise KeyError("figures.data")
            runs.append(run)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--merge: {path} is not a readable result of this study ({type(e).__name__}: {e})"
                             ) from None
    figs = [r["figures"] for r in runs]
    same = ("data", "lsgm_steps", "data_space_steps", "time_scales", "data_space")
    for f, path in zip(figs, paths):
        if "time_scales" not in f or "models" not in f:
            raise SystemExit(f"{path}: not a per-model result of this study (no time_scales / models: written before "
                             "--models existed?)")
    for f, path in zip(figs[1:], paths[1:]):
        if any(f.get(k) != figs[0].get(k) for k in same):
            raise SystemExit(f"{path}: not the same study as {paths[0]} (fields {', '.join(same)} differ)")
    models = [m for f in figs for m in f["models"]]
    if len(models) != len(set(models)):
        raise SystemExit(f"--merge: a model appears in more than one file ({', '.join(models)})")
    fig = {k: v for k, v in figs[0].items() if not k.startswith("time_scale_")}
    fig["models"] = sorted(models)
    fig["merged_from"] = [str(p) for p in paths]
    fig["sources"] = {str(p): {"models": f["models"], "wall_seconds": r.get("wall_seconds"),
                               "process_cpu_seconds": r.get("process_cpu_seconds"),
                               "commit": r.get("environment", {}).get("commit")}
                      for p, f, r in zip(paths, figs, runs)}
    scales = [float(s) for s in figs[0]["time_scales"]]
    for s in scales:
        row: dict[str, Any] = {}
        for f in figs:
            row.update({k: v for k, v in f.get(f"time_scale_{s:g}", {}).items() if k in ("lsgm", "data_space")})
        tols = {m: sorted(k for k in row[m] if k.startswith("tol_")) for m in row}
        if len({tuple(v) for v in tols.values()}) > 1:
            raise SystemExit(f"--merge: the files profile different tolerances ({tols})")
        add_ratios(row, [k[4:] for k in row.get("lsgm", {}) if k.startswith("tol_")])
        fig[f"time_scale_{s:g}"] = row
    return fig, scales


def goals_of(fig: dict[str, Any], scales: list[float]) -> list[dict[str, Any]]:
    """NFE at tol 1e-5 of the first (official) time scale over each smaller one, per model."""
    base = fig.get(f"time_scale_{scales[0]:g}", {})
    goals = []
    for key in sorted((k for k in base if k.startswith("nfe_ratio_data_over_lsgm_")),
                      key=lambda k: -float(k.rsplit("_", 1)[1])):
        r = base[key]
        goals.append(goal(f"data-space NFE / LSGM NFE at tol {key.rsplit('_', 1)[1]}, time_scale "
                          f"{scales[0]:g} (report; benchmarks/lsgm.py's goal is >= 3)", ">= 3", round(r, 2), r >= 3))
    for s in scales[1:]:
        r = fig.get(f"time_scale_{s:g}")
        if r is None:
            continue
        for who in ("lsgm", "data_space"):
            if who not in r or who not in base:
                continue
            cut = base[who]["tol_1e-05"]["nfe_median"] / r[who]["tol_1e-05"]["nfe_median"]
            goals.append(goal(f"{who}: NFE at tol 1e-5, time_scale {scales[0]:g} / time_scale {s:g} "
                              "(report: smoother time features need fewer drift calls)", "> 1", round(cut, 2),
                              cut > 1))
    return goals


if __name__ == "__main__":
    main()
