"""LSGM benchmark: LSGM vs the same VAE with a N(0, I) prior vs a data-space score model of equal parameter count
(its learning rate picked by a small sweep on the validation images), on dynamically binarised real MNIST
(10,000 test digits, seeded 8,000 / 2,000 split) and OMNIGLOT background-small-1 (drawers 1-16 / 17-20).

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm                       # CPU default, ~25 min on one busy core
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm --data mnist-test     # one dataset
    OMP_NUM_THREADS=8 python -m benchmarks.lsgm --scale large          # bigger nets, 10x the steps (hours)

Every contender gets the same number of optimizer steps at the same batch (LSGM splits them between stage 1
and stage 2); the data-space sweep is extra and reported. Sampling uses the probability-flow ODE (dopri5) at one
tolerance for every model; its CPU time is measured alternating LSGM and the data-space model (warm-up, repeats,
median). Goals (issue 5): LSGM's FD-CNN clearly below the VAE's (<= 0.8x); LSGM's NELBO within 1 % of the VAE's;
>= 3x fewer NFE than the data-space model at the same tol with FD <= its FD; IS of t cuts the CE std >= 10x.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmarks.common import goal, parser, write_result
from tenfold.core.engine import fit, unwrap
from tenfold.lsgm import PRESETS
from tenfold.lsgm.data import load_split
from tenfold.lsgm.fd import accuracy, fd, feature_cnn
from tenfold.lsgm.nets import MixedScore, UNet
from tenfold.lsgm.objective import ce_constant, cross_entropy_dsm, diffuse
from tenfold.lsgm.ode import ode_nll, ode_sample, timed
from tenfold.lsgm.sde import VPSDE, sample_t
from tenfold.lsgm.train import generate, load_model, nelbo, train_stages, vae_terms


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------------------------
# The data-space score model (baseline): VPSDE, ll_iw DSM on uniformly dequantised binary data in [-1, 1]
# ---------------------------------------------------------------------------------------------------------
class DataSGM(nn.Module):
    """eps'_theta on images y = x + u - 1 in [-1, 1] (K = 2: discrete NLL <= density NLL + D ln(K / 2) = +0)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.score = MixedScore(net, 1, mixed=False)

    def forward(self, y: torch.Tensor, sde: VPSDE, time_eps: float) -> dict[str, torch.Tensor]:
        t, w, _ = sample_t(sde, "ll_iw", y.shape[0], time_eps, device=y.device)
        noise = torch.randn_like(y)
        y_t, sigma = diffuse(sde, y, t, noise)
        ce = cross_entropy_dsm(noise, self.score(y_t, t, sigma), w, ce_constant(sde, time_eps, y[0].numel()))
        return {"loss": ce.mean() / y[0].numel(), "nll": ce.mean().detach()}


def dequantise(x: torch.Tensor) -> torch.Tensor:
    return torch.bernoulli(x) + torch.rand_like(x) - 1.0


def train_data_sgm(ch: int, lr: float, train: torch.Tensor, steps: int, batch: int, run_dir: Path, sde: VPSDE,
                   time_eps: float, seed: int = 0) -> tuple[DataSGM, float, dict[str, Any]]:
    torch.manual_seed(seed)
    model = DataSGM(UNet(1, ch=ch, ch_mult=(1, 2), num_res_blocks=1, dropout=0.1))

    def step(net: nn.Module, b: list[torch.Tensor]) -> dict[str, Any]:
        return net(dequantise(b[0]), sde=sde, time_eps=time_eps)

    t0 = time.process_time()
    res = fit(model, step, TensorDataset(train), run_dir=run_dir, steps=steps, batch_size=batch,
              optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=lr), ema=0.999, progress=False,
              tensorboard=False, log_every=max(1, steps // 10), ckpt_every=None, method="lsgm-data", seed=seed)
    return model, time.process_time() - t0, res


@torch.no_grad()
def data_dsm_nll(model: DataSGM, x: torch.Tensor, sde: VPSDE, time_eps: float, draws: int = 4) -> float:
    """Mean DSM bound (nats / image) on images x, averaged over ``draws`` dequantisations and t draws."""
    torch.manual_seed(123)
    vals = [unwrap(model)(dequantise(x), sde=sde, time_eps=time_eps)["nll"] for _ in range(draws)]
    return float(torch.stack(vals).mean())


# ---------------------------------------------------------------------------------------------------------
def run_dataset(data: str, a: Any, work: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = data.split(":")[0]
    base = PRESETS["omniglot" if name.startswith("omniglot") else "mnist"]
    size = dict(vae_ch=a.vae_ch, latent_ch=a.latent_ch, score_ch=a.score_ch, batch_size=a.batch, data=data,
                warmup=a.steps // 10, ckpt_every=10 ** 9, log_every=max(1, a.steps // 20), ode_tol=a.tol,
                eval_batch=a.fd_samples)
    split = load_split(data, 0, image_size=28)
    fig: dict[str, Any] = {"split": split.description, "steps_per_contender": a.steps, "batch": a.batch}
    print(f"== {data}: {split.description}", flush=True)

    # FD network: trained once on the training split, cached
    fdnet = feature_cnn(split.train, split.train_labels, key=data)
    n_fd = a.fd_samples
    real = split.heldout_grey[:n_fd]
    fig["fd_cnn_heldout_accuracy"] = accuracy(fdnet, split.heldout_grey, split.heldout_labels)
    fig["fd_floor_real_vs_real"] = fd(fdnet, split.train[:n_fd], real)
    fig["fd_floor_binarised_real"] = fd(fdnet, torch.bernoulli(split.train[:n_fd]), real)
    fig["fd_noise"] = fd(fdnet, torch.rand_like(real), real)
    x_nll = split.heldout[: a.nll_images]

    # ---- VAE with a N(0, I) prior: all steps in stage 1 ---------------------------------------------------
    cfg_vae = dataclasses.replace(base, **size, stage1_steps=a.steps, stage2_steps=0)
    train_stages(cfg_vae, work / f"{name}-vae", split)
    vae = load_model(work / f"{name}-vae")
    r = nelbo(vae, split.heldout, ode=False)
    g = generate(vae, n_fd, tol=a.tol, batch=n_fd)
    fig["vae"] = {"nelbo_nats": float(r["vae"].mean()), "nelbo_se": float(r["vae"].std() / math.sqrt(len(r["vae"]))),
                  "nelbo_nats_nll_subset": float(r["vae"][: a.nll_images].mean()),
                  "fd_mean": fd(fdnet, g["mean"], real), "fd_draw": fd(fdnet, g["draw"], real),
                  "params": n_params(vae.vae)}
    print("vae", fig["vae"], flush=True)

    # ---- LSGM end-to-end: half the steps in stage 1, half in stage 2 -------------------------------------
    cfg_l = dataclasses.replace(base, **size, stage1_steps=a.steps // 2, stage2_steps=a.steps - a.steps // 2)
    tr = train_stages(cfg_l, work / f"{name}-lsgm", split)
    lsgm = load_model(work / f"{name}-lsgm")
    r_dsm = nelbo(lsgm, split.heldout, ode=False)
    r_ode = nelbo(lsgm, x_nll, ode=True, tol=a.nll_tol)
    g = generate(lsgm, n_fd, tol=a.tol, batch=n_fd)
    lparams = n_params(lsgm.vae) + n_params(lsgm.score)
    fig["lsgm"] = {"nelbo_dsm_nats": float(r_dsm["dsm"].mean()),
                   "nelbo_dsm_se": float(r_dsm["dsm"].std() / math.sqrt(len(r_dsm["dsm"]))),
                   "nelbo_ode_nats_nll_subset": float(r_ode["ode"].mean()),
                   "nelbo_ode_se": float(r_ode["ode"].std() / math.sqrt(len(r_ode["ode"]))),
                   "nfe_nll": r_ode["nfe"], "fd_mean": fd(fdnet, g["mean"], real),
                   "fd_draw": fd(fdnet, g["draw"], real),
                   "nfe_sampling": g["nfe"], "params": lparams, "active_channels": tr["active_channels"],
                   "train_cpu_seconds": tr["stage1_cpu_seconds"] + tr.get("stage2_cpu_seconds", 0.0),
                   "mix_alpha_mean": float(lsgm.score.alpha().detach().mean())}
    print("lsgm", fig["lsgm"], flush=True)

    # ---- data-space score model of equal parameter count; lr from a sweep on the val images ---------------
    sde, teps = VPSDE(), 1e-5
    ch = min(range(8, 129, 2), key=lambda c: abs(n_params(UNet(1, ch=c, ch_mult=(1, 2), num_res_blocks=1)) - lparams))
    sweep = {}
    for lr in a.sweep:
        m, _, _ = train_data_sgm(ch, lr, split.train, a.sweep_steps, a.batch, work / f"{name}-sweep-{lr}", sde, teps)
        sweep[lr] = data_dsm_nll(m, split.val, sde, teps)
    best = min(sweep, key=sweep.get)
    dm, dcpu, _ = train_data_sgm(ch, best, split.train, a.steps, a.batch, work / f"{name}-data", sde, teps)
    dm.eval()

    def d_eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dm.score(z, t, sde.var(t).sqrt())

    g2 = torch.Generator().manual_seed(0)
    nll_d, nfe_dn = ode_nll(d_eps, sde, dequantise(x_nll), ode_eps=1e-5, tol=a.nll_tol, generator=g2)
    y1 = torch.randn(n_fd, 1, 28, 28, generator=g2)
    yd, nfe_d = ode_sample(d_eps, sde, y1, ode_eps=1e-5, tol=a.tol)
    xd = (yd > 0).float()  # the dequantisation bin the sample falls in
    fig["data_space"] = {"channels": ch, "params": n_params(dm), "lr_sweep_val_dsm_nats": sweep, "lr": best,
                         "nelbo_dsm_nats": data_dsm_nll(dm, split.heldout, sde, teps),
                         "nll_ode_nats_nll_subset": float(nll_d.mean()),
                         "nll_ode_se": float(nll_d.std() / math.sqrt(len(nll_d))), "nfe_nll": nfe_dn,
                         "fd_draw": fd(fdnet, xd, real), "fd_grey": fd(fdnet, ((yd + 1) / 2).clamp(0, 1), real),
                         "nfe_sampling": nfe_d, "train_cpu_seconds": dcpu}
    print("data", fig["data_space"], flush=True)

    # ---- sampling speed at the same tol, alternating, median; NFE at tol 1e-5 too -------------------------
    nb = a.speed_samples
    gen = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {"lsgm": [], "data_space": []}
    nfes: dict[str, list[int]] = {"lsgm": [], "data_space": []}
    for rep in range(a.repeats + 1):  # the first round is the warm-up
        for who in ("lsgm", "data_space"):
            if who == "lsgm":
                z1 = torch.randn(nb, *lsgm.vae.latent_shape, generator=gen)
                _, nfe, _, cpu = timed(lambda z1=z1: ode_sample(lsgm.eps_fn, lsgm.sde, z1, ode_eps=1e-5, tol=a.tol))
            else:
                y1 = torch.randn(nb, 1, 28, 28, generator=gen)
                _, nfe, _, cpu = timed(lambda y1=y1: ode_sample(d_eps, sde, y1, ode_eps=1e-5, tol=a.tol))
            if rep:
                times[who].append(cpu)
                nfes[who].append(nfe)
    for who in times:
        fig[who]["sampling_cpu_seconds_per_batch_median"] = statistics.median(times[who])
        fig[who]["sampling_nfe_speed_batches"] = nfes[who]
    for who, fn, shape in (("lsgm", lsgm.eps_fn, lsgm.vae.latent_shape), ("data_space", d_eps, (1, 28, 28))):
        z1 = torch.randn(a.nfe_samples, *shape, generator=gen)
        fig[who]["nfe_tol_1e-5"] = ode_sample(fn, sde if who == "data_space" else lsgm.sde, z1, ode_eps=1e-5,
                                              tol=1e-5)[1]

    # ---- variance of the CE estimate: IS of t (ll_iw) vs uniform t, per sample, on the held-out latents -----
    with torch.no_grad():
        torch.manual_seed(7)
        xb = split.heldout[:200]
        z0 = vae_terms(lsgm.vae, xb)["z0"]
        const = ce_constant(lsgm.sde, lsgm.cfg.time_eps, z0[0].numel())
        stds = {}
        for scheme in ("ll_uniform", "ll_iw"):
            per = []
            for _ in range(a.var_draws):
                t, _, wq = sample_t(lsgm.sde, scheme, len(z0), lsgm.cfg.time_eps)
                noise = torch.randn_like(z0)
                z_t, sigma = diffuse(lsgm.sde, z0, t, noise)
                per.append(cross_entropy_dsm(noise, lsgm.score(z_t, t, sigma), wq, const))
            per_t = torch.stack(per)  # (draws, images)
            stds[scheme] = {"mean": float(per_t.mean()), "per_sample_std": float(per_t.std(0).mean())}
    fig["ce_variance"] = stds

    # ---- goals -------------------------------------------------------------------------------------------
    L, V, Dd = fig["lsgm"], fig["vae"], fig["data_space"]
    fd_ratio = L["fd_mean"] / V["fd_mean"]
    nll_rel = L["nelbo_ode_nats_nll_subset"] / V["nelbo_nats_nll_subset"] - 1
    nfe_ratio = Dd["nfe_sampling"] / max(L["nfe_sampling"], 1)
    std_ratio = stds["ll_uniform"]["per_sample_std"] / stds["ll_iw"]["per_sample_std"]
    goals = [
        goal(f"{name}: LSGM FD-CNN clearly below the N(0,I) VAE's (ratio)", "<= 0.8", round(fd_ratio, 3),
             fd_ratio <= 0.8),
        goal(f"{name}: LSGM held-out NELBO (ODE) no worse than the VAE's by more than 1 % (relative)", "<= 0.01",
             round(nll_rel, 4), nll_rel <= 0.01),
        goal(f"{name}: data-space NFE / LSGM NFE at tol {a.tol}", ">= 3", round(nfe_ratio, 2), nfe_ratio >= 3),
        goal(f"{name}: LSGM FD (decoder draws) <= data-space FD (binarised samples)", f"<= {Dd['fd_draw']:.2f}",
             round(L["fd_draw"], 2), L["fd_draw"] <= Dd["fd_draw"]),
        goal(f"{name}: CE per-sample std, uniform t / importance-sampled t", ">= 10", round(std_ratio, 1),
             std_ratio >= 10),
    ]
    return fig, goals


def main() -> None:
    p = parser(__doc__.splitlines()[0], "mnist-test,omniglot-small1")
    p.add_argument("--scale", choices=["cpu", "large"], default="cpu", help="large: bigger nets, 10x the steps")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per contender")
    p.add_argument("--tol", type=float, default=1e-3, help="ODE rtol = atol for sampling")
    p.add_argument("--nll-tol", type=float, default=1e-4)
    a = p.parse_args()
    torch.set_num_threads(1)
    big = a.scale == "large"
    a.steps = a.steps or (4000 if big else 400)
    a.batch, a.vae_ch, a.latent_ch, a.score_ch = (128, 32, 8, 64) if big else (32, 8, 4, 12)
    a.fd_samples, a.nll_images, a.speed_samples, a.nfe_samples = (2000, 2000, 250, 250) if big else (300, 50, 25, 10)
    a.sweep, a.sweep_steps, a.repeats, a.var_draws = [3e-4, 1e-3, 3e-3], a.steps // 5, 2, 20
    started = time.perf_counter()
    figures: dict[str, Any] = {"settings": {k: v for k, v in vars(a).items() if k not in ("out",)}}
    goals: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in a.data.split(","):
            f, g = run_dataset(data.strip(), a, Path(tmp))
            figures[data.strip().split(":")[0]] = f
            goals += g
    write_result("lsgm", figures, goals, device=a.device, out=a.out, started=started)


if __name__ == "__main__":
    main()
