"""LSGM's verbs: ``train`` (stage 1: the N(0, I) VAE; stage 2: the score prior, two-stage or end-to-end, on
the engine with EMA, exact resume and DDP), ``sample`` (probability-flow ODE through dopri5, NFE reported;
ancestral SDE as an option) and ``evaluate`` (NELBO by DSM and by the ODE's change of variables, FD)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from tenfold.core.config import config_dict
from tenfold.core.data import absolute_spec
from tenfold.core.engine import EMA, Checkpointer, barrier, dist_info, fit, seed_everything, unwrap, warmup_cosine
from tenfold.core.io import (
    INPUTS_FILE,
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    TenfoldWarning,
    check_device,
    check_inputs,
    input_files,
    is_whole_number,
    load_checkpoint,
    save_checkpoint,
    write_json,
)

from .config import Config
from .data import TENSORS, Split, check_images, image_keys, load_split
from .nets import MixedScore, UNet
from .objective import LSGMNet, VAEStage, vae_terms
from .ode import ode_nll, ode_sample, sde_sample, timed
from .sde import SDE, build_sde, sample_t
from .vae import VAE, kl_normal

METHOD = "lsgm"


# ------------------------------------------------------------------------------------------------------
# build
# ------------------------------------------------------------------------------------------------------
def build_vae(cfg: Config, channels: int) -> VAE:
    """The VAE of a config."""
    return VAE(image_channels=channels, image_size=cfg.image_size, pad=cfg.pad, ch=cfg.vae_ch, levels=cfg.vae_levels,
               latent_ch=cfg.latent_ch, groups=cfg.groups,
               decoder="bernoulli" if cfg.binarize else "logistic_mixture", num_levels=cfg.num_levels,
               num_mix=cfg.num_mix)


def build_score(cfg: Config, latent_channels: int) -> MixedScore:
    """The score prior eps_hat of a config (zero-initialised output: starts as N(0, I))."""
    net = UNet(latent_channels, ch=cfg.score_ch, ch_mult=tuple(cfg.score_mult), num_res_blocks=cfg.score_blocks,
               dropout=cfg.dropout, time_scale=cfg.time_scale)
    return MixedScore(net, latent_channels, logit_init=cfg.mix_logit_init, mixed=cfg.mixed)


def build(cfg: Config, channels: int = 1) -> tuple[VAE, MixedScore, SDE]:
    """Config -> (VAE, score prior, SDE): the one place where the config becomes objects."""
    sde = build_sde(cfg.sde, beta0=cfg.beta0, beta1=cfg.beta1, sigma2_0=cfg.sigma2_0, sigma2_min=cfg.sigma2_min,
                    sigma2_max=cfg.sigma2_max)
    vae = build_vae(cfg, channels)  # (time_eps: checked against this SDE by Config.__post_init__)
    return vae, build_score(cfg, vae.latent_shape[0]), sde


def _device(cfg: Config) -> torch.device:
    return check_device(cfg.device)


# ------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------
def _log_rows(run_dir: Path) -> list[dict[str, Any]]:
    p = run_dir / "metrics.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else []


@torch.no_grad()
def channel_kl(vae: VAE, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Mean KL(q(z0|x) || N(0, I)) per latent channel (nats), from the posterior means. With ``groups > 1`` the later
    groups' posteriors depend on the earlier groups' samples: those are drawn from a fixed seed, so the figure is
    deterministic as it is for one group (two global seeds gave two figures), and the global RNG
    is left as it was."""
    groups = getattr(vae, "groups", 1)
    fork = torch.random.fork_rng(devices=[x.device] if x.is_cuda else []) if groups > 1 else contextlib.nullcontext()
    tot = None
    with fork:
        if groups > 1:
            torch.manual_seed(0)
        for i in range(0, len(x), batch):
            _, mu, ls = vae.encode(x[i:i + batch])
            k = kl_normal(mu, ls).sum((2, 3)).sum(0)
            tot = k if tot is None else tot + k
    return tot / len(x)


def stage2_optimizer(score: MixedScore, vae: VAE | None, *, lr_score: float, lr_mix: float, lr_vae: float,
                     weight_decay: float) -> torch.optim.Adam:
    """Stage 2's Adam: groups [score net, mixing logits, VAE (end-to-end only)], eps 1e-4 / 1e-4 / 1e-3.

    The mixing logits get their own lr: Adam moves a logit by about lr per step, so from the paper's init -6 at
    its lr 3e-4 alpha needs ~10^4 steps to leave the Normal score (the paper runs ~5e4); CPU budgets of a few
    thousand steps need a larger ``lr_mix`` (the official code has one lr for the whole score net)."""
    rest = [p for n, p in score.named_parameters() if n != "mix_logit"]
    groups = [{"params": rest, "lr": lr_score, "eps": 1e-4, "weight_decay": weight_decay},
              {"params": [score.mix_logit], "lr": lr_mix, "eps": 1e-4, "weight_decay": weight_decay}]
    if vae is not None:
        groups.append({"params": list(vae.parameters()), "lr": lr_vae, "eps": 1e-3, "weight_decay": weight_decay})
    return torch.optim.Adam(groups)


def train_stages(cfg: Config, run_dir: Path, split: Split, *, resume: bool = False, progress: bool = False
                 ) -> dict[str, Any]:
    """Stage 1 (N(0, I) VAE) in ``run_dir/stage1``, then stage 2 (score prior) in ``run_dir/stage2``; saves
    ``run_dir/model`` (VAE + EMA score net). ``stage2_steps=0`` or ``prior="normal"`` gives the N(0, I) VAE alone
    (the latter with LSGM's stage-2 optimizer and KL schedule: the like-for-like baseline)."""
    run_dir = Path(run_dir)
    if split.source.startswith(TENSORS):  # the model's record names what it trained on: `evaluate` re-split the
        cfg = dataclasses.replace(cfg, data=split.source)  # config's own dataset, and scored training images
    check_images(split.train, "the split's training images", size=cfg.image_size,
                 channels=1 if cfg.binarize else None)  # binarize=True is the Bernoulli decoder's grey data
    channels = split.train.shape[1]
    for what, t in (("validation", split.val), ("held-out", split.heldout_grey)):
        if len(t):
            check_images(t, f"the split's {what} images", size=cfg.image_size, channels=channels)
    seed_everything(cfg.seed)  # the initial weights are a function of the seed
    vae, score, sde = build(cfg, channels)
    x_bin = cfg.binarize
    train_set = TensorDataset(split.train)
    common = dict(batch_size=cfg.batch_size, accum=cfg.accum, amp=cfg.amp, device=cfg.device, seed=cfg.seed,
                  grad_clip=cfg.grad_clip or None,  # the engine's NaN-loss advice names it
                  resume=resume, ckpt_every=cfg.ckpt_every, log_every=cfg.log_every, progress=progress, method=METHOD,
                  config=config_dict(cfg), tensorboard=False, keep=2)

    # ---- stage 1: the N(0, I) VAE (Adamax, cosine lr, KL warm-up) ---------------------------------------
    s1 = VAEStage(vae, sr=cfg.sr_vae > 0)
    n1 = max(cfg.stage1_steps, 1)

    def step1(net: torch.nn.Module, batch: list[torch.Tensor]) -> dict[str, Any]:
        m = unwrap(net)
        x = torch.bernoulli(batch[0]) if x_bin else _quantise(batch[0], cfg.num_levels)
        s = int(m.micro_step) // cfg.accum  # the optimizer step: schedules run in steps
        m.micro_step += 1
        kl = cfg.kl_min + (cfg.kl_max - cfg.kl_min) * min(1.0, s / max(1.0, cfg.kl_anneal * n1))
        return net(x, kl_coef=kl, sr_vae=cfg.sr_vae)

    t0 = time.process_time()
    fit(s1, step1, train_set, run_dir=run_dir / "stage1", steps=cfg.stage1_steps,
        optimizer=lambda m: torch.optim.Adamax(m.parameters(), lr=cfg.lr_vae1),
        scheduler=lambda o: warmup_cosine(o, min(cfg.warmup, n1), n1, cfg.lr_vae1_min / cfg.lr_vae1), **common)
    cpu1 = time.process_time() - t0
    rows1 = _log_rows(run_dir / "stage1")
    vae = s1.vae.cpu()

    # ---- drop inactive latent channels (KL < inactive_kl nats) -------------------------------------------
    # on inputs as the encoder trains on them: binarised (a fixed draw, so the global RNG stream is untouched) or
    # quantised; the grey images it used before are never an input in training
    x_kl = split.train[:2000]
    x_kl = (torch.bernoulli(x_kl, generator=torch.Generator().manual_seed(cfg.seed)) if x_bin
            else _quantise(x_kl, cfg.num_levels))
    kl_ch = channel_kl(vae, x_kl)
    if cfg.drop_inactive:
        score.active.copy_((kl_ch >= cfg.inactive_kl).float())
        if cfg.prior == "sgm" and cfg.stage2_steps > 0 and not bool(score.active.any()):
            warnings.warn(f"every latent channel's KL is below inactive_kl={cfg.inactive_kl:g} nats (largest "
                          f"{float(kl_ch.max()):.3g}), so all are dropped and the score prior models nothing: the "
                          "model is the N(0, I) VAE; lower inactive_kl or train stage 1 longer", TenfoldWarning,
                          stacklevel=2)
    result: dict[str, Any] = {"stage1_cpu_seconds": round(cpu1, 2), "active_channels": int(score.active.sum()),
                              "latent_channels": int(score.active.numel())}
    if resume:  # a resumed stage's figure would otherwise read as the whole stage's cost
        result["cpu_seconds_note"] = "stage*_cpu_seconds count this process only: the run was resumed"

    rows2: list[dict[str, Any]] = []
    ema_score = None
    n2 = cfg.stage2_steps
    w2 = min(cfg.warmup, n2)

    def score_f(s: int) -> float:  # stage-2 score net: warm-up, then constant
        return min(1.0, (s + 1) / max(1, w2))

    def vae_f(s: int) -> float:  # stage-2 VAE: warm-up, then cosine lr_vae2 -> lr_vae2_min
        r = cfg.lr_vae2_min / cfg.lr_vae2
        if s < w2:
            return (s + 1) / max(1, w2)
        u = min(1.0, (s - w2) / max(1, n2 - w2))
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * u))

    def kl_coef2(s: int) -> float:  # stage-2 KL weight: kl_start2 -> 1 over the first kl_anneal2 of stage 2
        return cfg.kl_start2 + (1 - cfg.kl_start2) * min(1.0, s / max(1.0, cfg.kl_anneal2 * n2))

    if n2 > 0 and cfg.prior == "normal":
        # ---- stage 2 of the baseline: the same VAE, same optimizer and KL schedule, N(0, I) prior kept ------
        s2n = VAEStage(vae, sr=cfg.sr_vae > 0)

        def step2n(net: torch.nn.Module, batch: list[torch.Tensor]) -> dict[str, Any]:
            m = unwrap(net)
            x = torch.bernoulli(batch[0]) if x_bin else _quantise(batch[0], cfg.num_levels)
            s = int(m.micro_step) // cfg.accum  # the optimizer step: schedules run in steps
            m.micro_step += 1
            return net(x, kl_coef=kl_coef2(s), sr_vae=cfg.sr_vae)

        t0 = time.process_time()
        fit(s2n, step2n, train_set, run_dir=run_dir / "stage2", steps=n2,
            optimizer=lambda m: torch.optim.Adam(m.vae.parameters(), lr=cfg.lr_vae2, eps=1e-3,
                                                 weight_decay=cfg.weight_decay),
            scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, vae_f), **common)
        result["stage2_cpu_seconds"] = round(time.process_time() - t0, 2)
        rows2 = _log_rows(run_dir / "stage2")
        vae = s2n.vae.cpu()
    elif n2 > 0:
        # ---- stage 2: the score prior, two-stage (VAE frozen) or end-to-end --------------------------------
        for p in vae.parameters():
            p.requires_grad_(cfg.end_to_end)
        s2 = LSGMNet(vae, score, sr=(cfg.sr_vae > 0 and cfg.end_to_end) or cfg.sr_score > 0,
                     sr_score_convs=cfg.sr_score_convs)

        def make_opt(m: LSGMNet) -> torch.optim.Optimizer:
            return stage2_optimizer(m.score, m.vae if cfg.end_to_end else None, lr_score=cfg.lr_score,
                                    lr_mix=cfg.lr_mix or cfg.lr_score, lr_vae=cfg.lr_vae2,
                                    weight_decay=cfg.weight_decay)

        def make_sched(o: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
            return torch.optim.lr_scheduler.LambdaLR(o, [score_f, score_f, vae_f][: len(o.param_groups)])

        def step2(net: torch.nn.Module, batch: list[torch.Tensor]) -> dict[str, Any]:
            m = unwrap(net)
            x = torch.bernoulli(batch[0]) if x_bin else _quantise(batch[0], cfg.num_levels)
            s = int(m.micro_step) // cfg.accum  # the optimizer step: schedules run in steps
            m.micro_step += 1
            return net(x, sde=sde, scheme=cfg.scheme, time_eps=cfg.time_eps, kl_coef=kl_coef2(s),
                       train_vae=cfg.end_to_end,
                       sr_vae=cfg.sr_vae if cfg.end_to_end else 0.0, sr_score=cfg.sr_score)

        ema = EMA(s2, cfg.ema)
        t0 = time.process_time()
        fit(s2, step2, train_set, run_dir=run_dir / "stage2", steps=n2, optimizer=make_opt, scheduler=make_sched,
            ema=ema, **common)
        result["stage2_cpu_seconds"] = round(time.process_time() - t0, 2)
        rows2 = _log_rows(run_dir / "stage2")
        vae, score = s2.vae.cpu(), s2.score.cpu()
        # EMA on the score net only (the paper); the VAE keeps its trained weights
        ema_score = {k[len("score."):]: v.cpu() for k, v in ema.shadow.items() if k.startswith("score.")}
    state = {"vae": vae.state_dict(), "channels": channels}
    if ema_score is not None:
        state["score"] = ema_score
    if dist_info().is_main:  # under torchrun every rank holds the same weights: one writer
        save_checkpoint(run_dir / "model", state, method=METHOD, config=config_dict(cfg))
    barrier()
    rows = rows1 + rows2
    nel = [r["nelbo"] for r in rows if "nelbo" in r]
    result.update({"loss_start": nel[0] if nel else float("nan"), "loss_end": nel[-1] if nel else float("nan"),
                   "loss_note": "loss_start / loss_end: the training NELBO's Monte Carlo estimate (nats per image) "
                                "over the first / last logging window; unbiased, but heavy-tailed under the "
                                f"reweighted t-sampling schemes ({cfg.scheme} here"
                                f"{'' if cfg.scheme.startswith('ll_') else ': it can even read negative'}); "
                                "`evaluate` gives the held-out bound",
                   "checkpoint": str(run_dir / "model"), "kl_per_channel": [round(float(k), 3) for k in kl_ch]})
    return result


def _quantise(x: torch.Tensor, levels: int) -> torch.Tensor:
    return torch.round(x * (levels - 1)) / (levels - 1)


# ------------------------------------------------------------------------------------------------------
# a trained model
# ------------------------------------------------------------------------------------------------------
class Trained:
    """A loaded LSGM (or N(0, I) VAE when ``score`` is None), in eval mode, with its SDE and config."""

    def __init__(self, cfg: Config, vae: VAE, score: MixedScore | None, sde: SDE) -> None:
        self.cfg, self.vae, self.score, self.sde = cfg, vae.eval(), score.eval() if score else None, sde
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> Trained:
        """Move the networks to ``device`` (evaluation and sampling follow them there); returns self."""
        self.device = torch.device(device)
        self.vae.to(self.device)
        if self.score is not None:
            self.score.to(self.device)
        return self

    def eps_fn(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_hat(z, t) in float32 (the ODE's network calls)."""
        assert self.score is not None
        return self.score(z.float(), t.float(), self.sde.var(t.float()).sqrt()).to(z.dtype)


def _check_tol(tol: float | None, default: str) -> None:
    """The ODE tolerance a caller passes: None or 0 take ``default``, else a finite number in (0, 1) (rtol = atol of
    1 or more accepts any step, so ``sample --tol 5`` took one solver step and called it a sample)."""
    if tol is not None and not (math.isfinite(tol) and 0 <= tol < 1):
        raise ConfigError(f"tol must be a finite number >= 0 and < 1 (0: {default}), got {tol}")


def load_model(checkpoint: str | Path, cfg: Config | None = None) -> Trained:
    """Load ``run_dir/model`` (or a path to it) written by ``train``."""
    p = Path(checkpoint)
    if p.is_dir():
        if not (p / "model.json").exists() and any((p / s / "checkpoints").is_dir() for s in ("stage1", "stage2")):
            # was "checkpoint file not found: RUN/model.json", which did not say the run was only unfinished
            raise CheckpointError(f"{checkpoint} has no trained model yet: its training stopped before the end (the "
                                  f"model is written when training ends); finish it with `tenfold lsgm train "
                                  f"--resume --out {checkpoint}` (a run of the Python API: train_stages(cfg, run, "
                                  f"split, resume=True))")
        p = p / "model"
    state, header = load_checkpoint(p, method=METHOD)
    if "channels" not in state or "vae" not in state:  # a training checkpoint (stage*/checkpoints/...) is no model
        raise CheckpointError(f"{p} is a training checkpoint, not a trained model: pass the run directory (its "
                              "model.* is written when training ends; resume an unfinished run with train --resume)")
    bad = [k for k, v in {**state["vae"], **state.get("score", {})}.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # sample failed in a Bernoulli draw and evaluate wrote null NELBOs with exit 0
        raise CheckpointError(f"{p}: {len(bad)} weight tensor(s) hold NaN/Inf (first: {bad[0]}); the model diverged "
                              "or the file was damaged")
    if cfg is None:
        saved = header.get("config") or {}
        try:
            cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
        except TypeError as e:
            raise CheckpointError(f"{p}: its config does not match this version of lsgm ({e})") from None
        except ConfigError as e:  # a value an earlier version took and this one refuses: name the file
            raise CheckpointError(f"{p}: its saved config is refused by this version of lsgm ({e})") from None
    vae, score, sde = build(cfg, int(state["channels"]))
    try:
        vae.load_state_dict(state["vae"])
        if "score" in state:
            score.load_state_dict(state["score"])
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not fit the config ({str(e).splitlines()[0]})") from None
    return Trained(cfg, vae, score if "score" in state else None, sde)


@torch.no_grad()
def generate(model: Trained, n: int, *, tol: float | None = None, sampler: str = "ode", batch: int = 250,
             seed: int = 0) -> dict[str, Any]:
    """n images from the prior (N(0, I) for the VAE, the probability-flow ODE or ancestral SDE for LSGM) decoded
    to the decoder mean and a decoder draw; ``tol`` None or 0: the model config's ``ode_tol`` (as ``nelbo``).
    Returns images, NFE per batch, wall and CPU seconds."""
    if not (is_whole_number(n) and is_whole_number(batch)) or n < 1 or batch < 1:  # 4.5 was a raw TypeError
        raise ConfigError(f"the number of samples and the batch must be whole numbers >= 1, got n={n}, batch={batch}")
    _check_tol(tol, "the model config's ode_tol")  # 0 reached the solver, which refused it where nelbo falls back
    tol = tol or model.cfg.ode_tol
    if sampler not in ("ode", "sde"):  # anything else used to run the SDE sampler without a word
        raise ConfigError(f"sampler must be ode or sde, got '{sampler}'")
    g = torch.Generator().manual_seed(seed)
    means, draws, nfes = [], [], []
    wall = cpu = 0.0
    shape = model.vae.latent_shape
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z1 = torch.randn((b, *shape), generator=g, device="cpu").to(model.device)  # CPU draw: same samples anywhere
        if model.score is None:
            z, nfe, w, c = z1, 0, 0.0, 0.0
        elif sampler == "ode":
            z, nfe, w, c = timed(lambda z1=z1: ode_sample(model.eps_fn, model.sde, z1, ode_eps=model.cfg.ode_eps,
                                                          tol=tol))
        else:
            z, nfe, w, c = timed(lambda z1=z1: sde_sample(model.eps_fn, model.sde, z1, steps=model.cfg.sde_steps,
                                                          ode_eps=model.cfg.ode_eps, generator=g))
        params = model.vae.decode(z).float().cpu()
        means.append(model.vae.mean_image(params))
        draws.append(model.vae.sample_image(params, generator=g))
        nfes.append(nfe)
        wall, cpu = wall + w, cpu + c
    return {"mean": torch.cat(means), "draw": torch.cat(draws), "nfe": sum(nfes) / len(nfes),
            "seconds": wall, "cpu_seconds": cpu}


def _log_normal(z: torch.Tensor, mu: torch.Tensor, ls: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - mu) * torch.exp(-ls)) ** 2 - ls - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def nelbo(model: Trained, x: torch.Tensor, *, ode: bool = True, tol: float | None = None, seed: int = 0,
          batch: int = 250) -> dict[str, Any]:
    """Per-image negative ELBOs (nats) of held-out images x: ``dsm`` (-ln p(x|z0) - H + CE by DSM with ll_iw
    t-sampling), ``ode`` (-ln p(x|z0) + ln q(z0|x) - ln p_ODE(z0), Hutchinson trace), or the N(0, I) VAE's
    analytic ``vae`` bound. Returns tensors (N,) and the mean ODE NFE. ``x`` is checked against the model (its
    channels and size; binary for the Bernoulli decoder, on the K-level grid for the logistic one), and the caller's
    global random state is left as it was (it was reseeded to ``seed``)."""
    c = model.cfg
    check_images(x, "the images to score", channels=model.vae.image_channels, size=model.vae.image_size,
                 binary=c.binarize, levels=None if c.binarize else c.num_levels)
    if not (is_whole_number(batch) and batch >= 1):  # 0 was a raw range() error, -1 an empty result
        raise ConfigError(f"batch must be a whole number >= 1, got {batch}")
    _check_tol(tol, "the model config's ode_tol")
    x = x.float()  # float64 images met float32 weights as a raw dtype error (the checks above hold in either)
    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _nelbo(model, x, ode=ode, tol=tol, generator=torch.Generator().manual_seed(seed), batch=batch)


def _nelbo(model: Trained, x: torch.Tensor, *, ode: bool, tol: float | None, generator: torch.Generator,
           batch: int) -> dict[str, Any]:
    g = generator
    out: dict[str, list[torch.Tensor]] = {"dsm": [], "ode": [], "vae": []}
    nfes = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(model.device)
        with torch.no_grad():
            terms = vae_terms(model.vae, xb)
        z0, mu, ls, rec = terms["z0"], terms["mu"], terms["log_sigma"], terms["rec"]
        if model.score is None:
            out["vae"].append(-rec + kl_normal(mu, ls).flatten(1).sum(1))
            continue
        from .objective import ce_constant, cross_entropy_dsm, diffuse

        with torch.no_grad():
            t, _, wq = (a.to(model.device) for a in sample_t(model.sde, "ll_iw", len(xb), model.cfg.time_eps,
                                                             generator=g))
            noise = torch.randn(z0.shape, generator=g, device="cpu").to(model.device)
            z_t, sigma = diffuse(model.sde, z0, t, noise)
            ce = cross_entropy_dsm(noise, model.score(z_t, t, sigma), wq,
                                   ce_constant(model.sde, model.cfg.time_eps, z0[0].numel()))
        out["dsm"].append(-rec - terms["H"] + ce)
        if ode:
            nll_p, nfe = ode_nll(model.eps_fn, model.sde, z0, ode_eps=model.cfg.ode_eps,
                                 tol=tol or model.cfg.ode_tol, generator=g)
            out["ode"].append(-rec + _log_normal(z0, mu, ls) + nll_p)
            nfes.append(nfe)
    res: dict[str, Any] = {k: torch.cat(v).cpu() for k, v in out.items() if v}
    res["nfe"] = sum(nfes) / len(nfes) if nfes else 0
    return res


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """Save a sample grid PNG (its folder is created: the Python API need not go through the CLI's run dir)."""
    from torchvision.utils import save_image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(images[: nrow * nrow].clamp(0, 1), str(path), nrow=nrow, padding=1)
    return path


def _bpd(nats: float, cfg: Config, dims: int) -> float:
    return nats / (dims * math.log(2))


# ------------------------------------------------------------------------------------------------------
# verbs
# ------------------------------------------------------------------------------------------------------
def train(cfg: Config, run_dir: Path, *, resume: bool = False) -> dict[str, Any]:
    """Train the VAE (stage 1) and the score prior (stage 2); writes ``model.*``, ``samples.png``, logs.

    Args:
        resume: continue from the run's last checkpoint, exactly (the CLI's ``--resume --out RUN``).
    """
    if resume and not any(Checkpointer(Path(run_dir) / st, method=METHOD).steps() for st in ("stage1", "stage2")):
        # it started over from step 0 without a word (prune and attack say so too)
        raise CheckpointError(f"nothing to resume: no training checkpoint in {run_dir}/stage1 or stage2")
    if absolute_spec(cfg.data) != cfg.data:  # recorded absolute: evaluate and --resume read the same folder anywhere
        cfg = dataclasses.replace(cfg, data=absolute_spec(cfg.data))
        _record_config(Path(run_dir), cfg)
    # the folder's digest: a resume or an evaluate that re-splits a changed folder scored training images as held out
    check_inputs(run_dir, input_files({"data": cfg.data}), resume=resume)
    split = load_split(cfg.data, cfg.split_seed, image_size=cfg.image_size, binarize=cfg.binarize,
                       num_levels=cfg.num_levels)
    _device(cfg)
    res = train_stages(cfg, Path(run_dir), split, resume=resume, progress=True)
    res["split"] = split.description
    if dist_info().is_main:  # the sample grid: one process draws and writes it
        model = load_model(Path(run_dir) / "model", cfg).to(_device(cfg))
        gen = generate(model, 64, tol=cfg.ode_tol, sampler=cfg.sampler, batch=64)
        save_grid(gen["mean"], Path(run_dir) / "samples.png")
        res["sample_nfe"] = gen["nfe"]
    return res


def same_data(a: str, b: str) -> bool:
    """Whether two dataset specs name the same data: names compared case-blind, paths resolved (``Digits``,
    `` digits`` and ``folder:./x`` vs ``folder:x`` used to count as other datasets, all of whose images,
    training ones included, were then scored as held out)."""
    def key(spec: str) -> tuple[str, str]:
        name, _, path = spec.strip().partition(":")
        return name.strip().lower(), str(Path(path.strip()).expanduser().resolve()) if path.strip() else ""
    return key(a) == key(b)


def _record_config(run_dir: Path, cfg: Config, **extra: Any) -> None:
    """Put the config a verb really runs with into the run's ``config.json``, the CLI's record, which --resume
    reloads: train's with its data path made absolute; sample's and evaluate's the checkpoint's (the CLI wrote the
    preset's there, which they do not use). Nothing without one (the Python API)."""
    p = Path(run_dir) / "config.json"
    if p.is_file():
        saved = json.loads(p.read_text())
        saved.update(config=config_dict(cfg), **extra)
        write_json(p, saved)


def _load_on_device(checkpoint: str, device: str) -> Trained:
    """Load a trained model onto ``device`` (default: the device its config names)."""
    model = load_model(checkpoint)
    dev = device or model.cfg.device
    return model.to(_device(dataclasses.replace(model.cfg, device=dev)))


def _check_sample_options(cfg: Config, *, checkpoint: str = "", tol: float = 0.0, **_: Any) -> None:
    """sample's checks before its model is read (the CLI runs them before ``--dry-run`` prints too)."""
    if not checkpoint:
        raise ConfigError("sample needs --checkpoint RUN_DIR (a directory written by `tenfold lsgm train`)")
    _check_tol(tol, "the checkpoint config's ode_tol")  # a model without a score prior never reaches the solver


def _check_evaluate_options(cfg: Config, *, checkpoint: str = "", limit: int = 0, fd_samples: int = 500,
                            **_: Any) -> None:
    """evaluate's checks before its model is read (the CLI runs them before ``--dry-run`` prints too)."""
    if not checkpoint:
        raise ConfigError("evaluate needs --checkpoint RUN_DIR (a directory written by `tenfold lsgm train`)")
    if limit < 0 or fd_samples < 0:  # a negative limit used to drop images from the end of the held-out set
        raise ConfigError(f"limit and fd_samples must be >= 0 (0: all images / no FD), got {limit}, {fd_samples}")
    if fd_samples == 1:  # checked before the NELBO, which it used to follow by minutes
        raise ConfigError("fd_samples must be 0 (no FD) or >= 2 (a Frechet distance needs a covariance)")


def sample(cfg: Config, run_dir: Path, *, checkpoint: str = "", num_samples: int = 64, tol: float = 0.0,
           sampler: str = "", seed: int = 0, device: str = "") -> dict[str, Any]:
    """Draw samples from a trained model; writes ``samples.png`` (decoder means) and ``samples.safetensors``
    (means and decoder draws); reports NFE per batch and seconds.

    Args:
        checkpoint: the run directory ``tenfold lsgm train`` wrote.
        num_samples: images to draw (named so that ``torchrun`` does not take the flag for one of its own).
        tol: the ODE solver's rtol = atol; 0: the checkpoint config's ``ode_tol``.
        sampler: ``ode`` (probability flow, adaptive) or ``sde`` (ancestral); empty: the config's.
        seed: seed of the prior noise (the same seed gives the same images).
        device: ``cpu``, ``cuda``, ``cuda:1``; empty: the checkpoint config's.
    """
    n = num_samples
    _check_sample_options(cfg, checkpoint=checkpoint, tol=tol)
    model = _load_on_device(checkpoint, device)
    _record_config(run_dir, model.cfg, config_from=str(checkpoint), preset=None, overrides=[])
    gen = generate(model, n, tol=tol or model.cfg.ode_tol, sampler=sampler or model.cfg.sampler,
                   batch=min(n, model.cfg.eval_batch), seed=seed)
    save_grid(gen["mean"], Path(run_dir) / "samples.png")
    from safetensors.torch import save_file

    save_file({"mean": gen["mean"].contiguous(), "draw": gen["draw"].contiguous()},
              str(Path(run_dir) / "samples.safetensors"))
    return {"num_samples": n, "nfe": gen["nfe"], "seconds": round(gen["seconds"], 3),
            "cpu_seconds": round(gen["cpu_seconds"], 3),
            "tol": tol or model.cfg.ode_tol, "sampler": sampler or model.cfg.sampler}


def evaluate(cfg: Config, run_dir: Path, *, checkpoint: str = "", limit: int = 0, fd_samples: int = 500,
             ode: bool = True, data: str = "", device: str = "") -> dict[str, Any]:
    """Held-out NELBO (DSM and ODE bounds, nats per image and bits/dim) and FD-CNN / FD-ResNet56 of
    ``fd_samples`` samples against the held-out images, on ``--device`` (default: the checkpoint config's).
    ``--data`` names another dataset, all of whose images are then held out (e.g. cifar10-test for a model
    trained on cifar10-train); naming the training data again evaluates its held-out split.

    Args:
        checkpoint: the run directory ``tenfold lsgm train`` wrote.
        limit: score only the first ``limit`` held-out images; 0: all of them.
        fd_samples: samples drawn (with the checkpoint's sampler) for the Frechet distance against all held-out
            images; 0: skip it.
        ode: also compute the ODE bound (probability flow with Hutchinson's trace; slower than the DSM one).
        data: another dataset of the same format whose images are all held out; empty: the training data's
            held-out split.
        device: ``cpu``, ``cuda``, ``cuda:1``; empty: the checkpoint config's.
    """
    _check_evaluate_options(cfg, checkpoint=checkpoint, limit=limit, fd_samples=fd_samples)
    model = _load_on_device(checkpoint, device)
    _record_config(run_dir, model.cfg, config_from=str(checkpoint), preset=None, overrides=[])
    c = model.cfg
    in_memory = c.data[len(TENSORS):] if c.data.startswith(TENSORS) else None  # split_tensors' images: unreadable
    if in_memory is not None and not data:
        raise ConfigError(f"{checkpoint} was trained on in-memory images ({in_memory}, split_tensors), "
                          "which evaluate cannot read again; pass --data with a dataset to score it on, or call "
                          "tenfold.lsgm.nelbo on your held-out tensors")
    other = bool(data) and not same_data(data, c.data)
    # the training folder re-split: files added or changed since training moved training images into "held out"
    try:
        check_inputs(run_dir, input_files({"data": c.data}), resume=True,  # the name train recorded it under
                     record=Path(checkpoint) / INPUTS_FILE, since="the model was trained",
                     what="its held-out split is drawn from that data again, so evaluate needs it as it was")
    except InputError as e:
        if not other:
            raise
        # --data OTHER: the training data only names the images to leave out of OTHER
        warnings.warn(f"{e}; the training images left out of --data {data} are read from it as it is now",
                      TenfoldWarning, stacklevel=2)
    exclude = None
    if other and in_memory is not None:
        warnings.warn(f"the model trained on in-memory images ({in_memory}), which evaluate cannot "
                      f"read, so --data {data} is not checked for them: if it holds them, some of its held-out "
                      "images are training images", TenfoldWarning, stacklevel=2)
    elif other:  # the model's training images, wherever they are found under another spec, are not held out
        try:
            exclude = image_keys(load_split(c.data, c.split_seed, image_size=c.image_size, binarize=c.binarize,
                                            num_levels=c.num_levels).train)
        except DataError as e:
            warnings.warn(f"the model's training data {c.data} cannot be read ({str(e).split(';')[0]}), so --data "
                          f"{data} is not checked for its training images", TenfoldWarning, stacklevel=2)
    try:
        split = load_split(data or c.data, c.split_seed, image_size=c.image_size, binarize=c.binarize,
                           num_levels=c.num_levels, all_heldout=other, exclude=exclude)
    except DataError as e:
        if not data:
            raise
        # the loader's advice (e.g. "use --set binarize=false") is for training; a trained model is fixed
        raise DataError(f"--data {data} does not fit this model (image_size {c.image_size}, "
                        f"{'binarised grey' if c.binarize else str(c.num_levels) + '-level'} images): "
                        f"{str(e).split(';')[0]}") from None
    if split.heldout.shape[1] != model.vae.image_channels:  # grey data on a colour model was a conv traceback
        raise DataError(f"--data {data or c.data} has {split.heldout.shape[1]}-channel images but the model was "
                        f"trained on {model.vae.image_channels}-channel ones")
    x = split.heldout[:limit] if limit else split.heldout
    dims = x[0].numel()
    r = nelbo(model, x, ode=ode and model.score is not None, batch=c.eval_batch)
    out: dict[str, Any] = {"split": split.description, "n": len(x), "nfe_nll": r["nfe"]}
    for k in ("vae", "dsm", "ode"):
        if k in r:
            v = r[k]
            out[f"nelbo_{k}_nats"] = float(v.mean())
            out[f"nelbo_{k}_se"] = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else None  # one image: none
            out[f"nelbo_{k}_bpd"] = _bpd(float(v.mean()), c, dims)
    if fd_samples:
        from .fd import cifar_feature_net, fd, feature_cnn

        gen = generate(model, fd_samples, tol=c.ode_tol, sampler=c.sampler, batch=min(fd_samples, c.eval_batch))
        real = split.heldout_grey if c.binarize else split.heldout
        if split.train.shape[1] == 3:
            out["FD-ResNet56_mean"] = fd(cifar_feature_net(), gen["mean"], real)
        elif int(split.train_labels.max()) < 1:  # e.g. folder:PATH without class sub-folders
            out["FD-CNN_mean"] = "skipped: the data has one class, so there is nothing to train the FD-CNN on"
        else:
            out["FD-CNN_mean"] = fd(feature_cnn(split.train, split.train_labels, key=c.data), gen["mean"], real)
        out["sample_nfe"] = gen["nfe"]
        save_grid(gen["mean"], Path(run_dir) / "samples.png")
    return out


sample.check_options = _check_sample_options  # the CLI runs them before --dry-run prints
evaluate.check_options = _check_evaluate_options
