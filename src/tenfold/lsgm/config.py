"""LSGM's configuration: one frozen dataclass with the paper's defaults (MNIST recipe, Table 7 of the paper
and the official README), and named presets from a seconds-long smoke run to the paper's GPU scale."""

from __future__ import annotations

import dataclasses
import math

from tenfold.core.io import ConfigError
from tenfold.lsgm.sde import SCHEMES, build_sde, check_time_eps


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of an LSGM run. Defaults: binarised MNIST, VPSDE with ll_iw (one backward pass)."""

    # data
    data: str = "mnist-test"  # mnist-test (seeded 8,000 / 2,000), omniglot-small1, cifar10-train, digits, folder:PATH
    split_seed: int = 0
    image_size: int = 28
    pad: int = 2  # 28 -> 32 so the conv VAE halves cleanly; the decoder output is cropped back
    binarize: bool = True  # dynamic binarisation + Bernoulli decoder; False: K-level logistic mixture
    num_levels: int = 256
    # VAE (conv; groups > 1 is the NVAE-style hierarchy at one scale)
    vae_ch: int = 32
    vae_levels: int = 2
    latent_ch: int = 20
    groups: int = 2
    num_mix: int = 10
    # score net (our U-Net in place of NCSN++)
    score_ch: int = 256
    score_mult: tuple[int, ...] = (1, 2)
    score_blocks: int = 8
    dropout: float = 0.2
    time_scale: float = 1000.0  # the score net's time features are sin/cos of time_scale * t (official: 1000)
    mixed: bool = True
    mix_logit_init: float = -6.0
    drop_inactive: bool = True
    inactive_kl: float = 0.1  # nats per channel
    # SDE and objective
    sde: str = "vpsde"  # vpsde | geometric
    beta0: float = 0.1
    beta1: float = 20.0
    sigma2_0: float = 0.0  # geometric: 0 means sigma2_min (ln sigma2_t linear in t), the official default
    sigma2_min: float = 3e-5
    sigma2_max: float = 0.999
    time_eps: float = 0.01
    scheme: str = "ll_iw"  # ll_iw | ll_uniform | drop_all_iw | drop_sigma2t_iw | reweight_uniform (sde.sample_t)
    prior: str = "sgm"  # sgm (LSGM) | normal (the baseline: stage 2 keeps the N(0, I) prior, same schedule)
    end_to_end: bool = True  # False: two-stage (SGM on the frozen stage-1 VAE's latents)
    # stage 1 (N(0, I) VAE): Adamax, cosine lr, KL anneal from kl_min
    stage1_steps: int = 8000
    lr_vae1: float = 1e-2
    lr_vae1_min: float = 1e-4
    kl_min: float = 1e-4
    kl_max: float = 0.7
    kl_anneal: float = 0.3  # fraction of stage 1
    sr_vae: float = 1e-2
    # stage 2: Adam, score net constant lr, VAE lr decays; KL 0.7 -> 1 over the first kl_anneal2
    stage2_steps: int = 32000
    lr_score: float = 3e-4
    lr_mix: float = 0.0  # the mixing logits' lr; 0 = lr_score (the official code: one optimizer for the score net)
    lr_vae2: float = 1e-4
    lr_vae2_min: float = 1e-5
    weight_decay: float = 3e-4
    warmup: int = 500
    kl_start2: float = 0.7
    kl_anneal2: float = 0.1
    sr_score: float = 0.0
    sr_score_convs: bool = True  # False: the score net's SR covers its norm layers only (official CIFAR FID recipe)
    ema: float = 0.9999
    batch_size: int = 128  # global: split over torchrun's ranks and `accum` micro-steps
    accum: int = 1  # micro-steps per optimizer step: the same global batch on fewer GPUs or less memory
    grad_clip: float = 0.0  # clip the global gradient norm of each step to this (0: off, the official code's)
    # run
    amp: str = "none"  # none | bf16 (networks only; SDE maths stays fp32)
    device: str = "cpu"
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 50
    # sampling and evaluation
    ode_eps: float = 1e-5
    ode_tol: float = 1e-5
    sampler: str = "ode"  # ode | sde (ancestral: the forward process's posterior given the denoised estimate)
    sde_steps: int = 200
    eval_batch: int = 250

    def __post_init__(self) -> None:
        if self.sde not in ("vpsde", "geometric"):
            raise ConfigError(f"sde must be vpsde or geometric, got '{self.sde}'")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown t-sampling scheme '{self.scheme}'; choose one of: {', '.join(SCHEMES)}")
        if self.scheme == "drop_all_iw" and self.sde != "vpsde":
            raise ConfigError("scheme drop_all_iw needs sde=vpsde")
        if self.prior not in ("sgm", "normal"):
            raise ConfigError(f"prior must be sgm or normal, got '{self.prior}'")
        if self.sampler not in ("ode", "sde"):
            raise ConfigError(f"sampler must be ode or sde, got '{self.sampler}'")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, got '{self.amp}'")
        if not self.time_scale > 0:  # 0 would make every time look the same to the score net
            raise ConfigError(f"time_scale must be > 0, got {self.time_scale}")
        # weights, rates and tolerances: a NaN or negative one would fail (or silently misbehave) only after the
        # stages before it had run, so refuse it here
        for name in ("sr_vae", "sr_score", "weight_decay", "lr_vae1", "lr_vae1_min", "lr_score", "lr_mix", "lr_vae2",
                     "lr_vae2_min", "kl_min", "kl_max", "kl_start2", "dropout", "ema", "sigma2_0", "grad_clip"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")
        for name in ("beta0", "beta1", "ode_tol", "ode_eps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v}")
        # sizes: a zero one used to surface as a torch reshape / cat error deep inside the model
        for name in ("vae_ch", "vae_levels", "latent_ch", "groups", "num_mix", "score_ch", "score_blocks",
                     "sde_steps", "eval_batch", "image_size", "accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_levels < 2:
            raise ConfigError(f"num_levels must be >= 2 (the discretised decoder's bins), got {self.num_levels}")
        if not self.score_mult or min(self.score_mult) < 1:
            raise ConfigError(f"score_mult must be one or more multipliers >= 1, got {self.score_mult}")
        for lr, low in (("lr_vae1", "lr_vae1_min"), ("lr_vae2", "lr_vae2_min")):  # their ratio is a cosine floor
            if not (getattr(self, lr) > 0 and getattr(self, low) <= getattr(self, lr)):  # (0: a ZeroDivisionError)
                raise ConfigError(f"{lr} must be > 0 and {low} at most {lr} (the cosine schedule ends there), got "
                                  f"{getattr(self, lr)} and {getattr(self, low)}")
        if not self.ode_tol < 1:  # rtol = atol of 1 or more accepts any step: one solver step, not a solve
            raise ConfigError(f"ode_tol must be < 1 (it is the solver's rtol = atol), got {self.ode_tol}")
        if not (self.dropout < 1 and self.ema < 1):
            raise ConfigError(f"dropout and ema must be < 1, got {self.dropout} and {self.ema}")
        # any other float: a NaN one went through (inactive_kl=nan pinned every latent channel, the score prior then
        # learnt nothing, and the run reported active_channels 0 without a word)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{f.name} must be a finite number, got {v}")
        if self.pad < 0:  # -1 failed later with a loss-shape ValueError
            raise ConfigError(f"pad must be >= 0, got {self.pad}")
        if self.inactive_kl < 0:
            raise ConfigError(f"inactive_kl must be >= 0, got {self.inactive_kl}")
        # session 22 review: these went through without a word (-1 stage-2 steps read as 0; a KL anneal that falls;
        # a negative variance floor)
        if self.stage2_steps < 0 or self.warmup < 0:
            raise ConfigError(f"stage2_steps and warmup must be >= 0, got {self.stage2_steps} and {self.warmup}")
        # session 26 walkthrough: these passed --dry-run and were refused only when training reached them
        if self.stage1_steps < 0 or self.ckpt_every < 0:
            raise ConfigError(f"stage1_steps and ckpt_every must be >= 0, got {self.stage1_steps} and "
                              f"{self.ckpt_every}")
        if self.batch_size < 1 or self.log_every < 1:
            raise ConfigError(f"batch_size and log_every must be >= 1, got {self.batch_size} and {self.log_every}")
        if self.kl_anneal < 0 or self.kl_anneal2 < 0:  # fractions of a stage (above 1: the anneal outlasts it)
            raise ConfigError(f"kl_anneal and kl_anneal2 must be >= 0 (fractions of their stage), got "
                              f"{self.kl_anneal} and {self.kl_anneal2}")
        if self.kl_min > self.kl_max:
            raise ConfigError(f"kl_min ({self.kl_min}) must not exceed kl_max ({self.kl_max}): the KL weight anneals "
                              "up from kl_min to kl_max")
        if not self.sigma2_min > 0:
            raise ConfigError(f"sigma2_min must be > 0 (the geometric SDE's variance floor), got {self.sigma2_min}")
        # the SDE's own checks of time_eps (in [0, 1), a non-zero variance there), here so that --dry-run sees them
        check_time_eps(build_sde(self.sde, beta0=self.beta0, beta1=self.beta1, sigma2_0=self.sigma2_0,
                                 sigma2_min=self.sigma2_min, sigma2_max=self.sigma2_max), self.time_eps)


# CPU budgets (thousands of steps, not the paper's ~5e4): an EMA horizon well inside stage 2 (0.999 over 1,500
# steps keeps 22 % of the initial, zero-output score net), a larger score-net lr, and the mixing logits' own lr
# (see benchmarks/lsgm.py "what_we_tried")
def _steps(epochs: float, n_train: int, batch: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_train`` images at global batch ``batch``."""
    return round(epochs * n_train / batch)


_CPU = dict(vae_ch=32, latent_ch=8, groups=1, score_ch=48, score_mult=(1, 2), score_blocks=1, dropout=0.1,
            ema=0.995, lr_score=1e-3, lr_mix=1e-2, batch_size=64, warmup=100, ckpt_every=500)

PRESETS: dict[str, Config] = {
    # seconds on one core: scikit-learn's real 8x8 digits (ships with sklearn), binarised
    "smoke": Config(data="digits", image_size=8, pad=0, vae_ch=8, vae_levels=1, latent_ch=2, groups=1, score_ch=8,
                    score_mult=(1,), score_blocks=1, dropout=0.0, stage1_steps=30, stage2_steps=30, batch_size=32,
                    warmup=5, ema=0.9, ckpt_every=20, log_every=5, ode_tol=1e-3, eval_batch=100, kl_anneal=0.5,
                    time_eps=1e-3),
    # the demo: a minute on one core
    "digits": Config(data="digits", image_size=8, pad=0, vae_ch=16, vae_levels=1, latent_ch=4, groups=1,
                     score_ch=32, score_mult=(1,), score_blocks=1, dropout=0.0, stage1_steps=600, stage2_steps=600,
                     batch_size=64, warmup=50, ema=0.99, ckpt_every=300, log_every=50, ode_tol=1e-3, time_eps=1e-3),
    # CPU-sized MNIST / OMNIGLOT (the benchmark's settings)
    "mnist": Config(**_CPU, stage1_steps=1500, stage2_steps=1500),
    # OMNIGLOT's official recipe regularises the score net too (SR 1e-3): at the benchmark's scale it cut NFE at
    # tol 1e-5 from 284 to 176 and FD-CNN from 55 to 24 at the same NELBO (results/lsgm_sr.json)
    "omniglot": Config(**{**_CPU, "data": "omniglot-small1", "kl_max": 1.0, "sr_score": 1e-3}, stage1_steps=1500,
                       stage2_steps=1500),
    # a short GPU run: CIFAR-10, 16x16 latent, 128-channel U-Net, bf16, global batch 128 (split over torchrun's
    # ranks); on one H100: 0.02 + 0.14 s per stage-1 / stage-2 step, 3.4 GiB, 1.7 h in all (results/lsgm_gpu.json)
    "cifar10": Config(data="cifar10-train", image_size=32, pad=0, binarize=False, num_levels=256, vae_ch=64,
                      vae_levels=1, latent_ch=16, groups=1, score_ch=128, score_mult=(1, 2, 2), score_blocks=2,
                      dropout=0.1, mix_logit_init=-3.0, drop_inactive=False, scheme="drop_all_iw", kl_max=0.7,
                      stage1_steps=20000, stage2_steps=40000, lr_score=1e-4, sr_score=1e-2, sr_score_convs=False,
                      ema=0.9999,
                      batch_size=128, amp="bf16", device="cuda", warmup=1000, ode_eps=1e-6),
    # the paper's MNIST recipe (2 x 20 channels at 8x8, 256-ch score net with 8 blocks, 200 + 800 epochs, warm-up
    # 20 epochs) as steps over our 7,500 training images at batch 128 (both stages: one batch size here)
    "paper": Config(stage1_steps=_steps(200, 7500, 128), stage2_steps=_steps(800, 7500, 128),
                    warmup=_steps(20, 7500, 128)),
    # OMNIGLOT: 200 + 1,500 epochs, warm-up 20, over the 2,040 training images (drawers 1-15)
    "paper-omniglot": Config(data="omniglot-small1", latent_ch=20, groups=3, vae_levels=1, score_mult=(1, 2, 2),
                             kl_max=1.0, sr_score=1e-3, stage1_steps=_steps(200, 2040, 128),
                             stage2_steps=_steps(1500, 2040, 128), warmup=_steps(20, 2040, 128)),
    # 20 groups of 9 latent channels (the official --num_latent_per_group 9 --num_groups_per_scale 20; it was 9 of 20
    # before session 14, when the GPU costs below were measured)
    # global batch 256 = 32 per rank on the paper's 8 GPUs (0.34 s per stage-2 step and 32 GiB per rank on an H100;
    # 256 on one 80 GB card runs out of memory)
    "paper-cifar10": Config(data="cifar10-train", image_size=32, pad=0, binarize=False, vae_ch=128, vae_levels=1,
                            latent_ch=9, groups=20, score_ch=512, score_mult=(1, 2, 2), score_blocks=8,
                            mix_logit_init=-3.0, drop_inactive=False, scheme="drop_all_iw", lr_score=1e-4,
                            sr_score=1e-2, sr_score_convs=False, stage1_steps=_steps(400, 48000, 256),
                            stage2_steps=366000, batch_size=256, amp="bf16", device="cuda",
                            warmup=_steps(20, 48000, 256), ode_eps=1e-6),
}
# the official CIFAR-10 NLL recipe's objective: geometric VPSDE, likelihood weighting with uniform t, time_eps 0,
# 4 x 45 latent groups, score-net SR on its convs too. Its VAE's two normalising flows are not implemented here.
PRESETS["paper-cifar10-nll"] = dataclasses.replace(
    PRESETS["paper-cifar10"], sde="geometric", scheme="ll_uniform", time_eps=0.0, groups=4, latent_ch=45,
    sr_score_convs=True)
