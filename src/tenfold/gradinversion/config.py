"""GradInversion's frozen ``Config`` (flat fields, every threat-model switch explicit), ``PRESETS`` and ``build``.

The paper's α values were not retrievable (spec §2): every weight below is **second-hand**, from
breaching's ``config/attack/seethroughgradients.yaml`` (grad 1e-4, TV 1e-4, l2 1e-6, BN 0.1, Adam 0.1,
warm-up 50, cosine decay, 20k iterations) and LeakPro's preset (group 1e-2, 4 seeds, noise 0.2).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from tenfold.core.io import ConfigError, TenfoldWarning


@dataclass(frozen=True)
class Config:
    """Attack hyper-parameters and the threat model (paper's symbols; see the method README)."""

    # --- threat model (recorded with every result) ---
    labels: Literal["recover", "oracle"] = "recover"  # restore ŷ from ∇W, or the attacker knows y
    # Yin et al. 2021 Sec. 3.1; yin_mass, count, count_mass: ours (labels.py says when each is the one to use)
    label_rule: Literal["yin", "yin_mass", "rowsum", "bias", "idlg", "count", "count_mass"] = "yin"
    force_label_rule: bool = False  # allow Yin's rule even when the FC input can be negative
    bn_stats: Literal["running", "user", "none"] = "running"  # BN prior reference: server buffers, client's, none
    client_mode: Literal["auto", "train", "eval"] = "auto"  # auto: eval iff bn_stats=running (breaching's rule)
    update: Literal["gradient", "fedavg"] = "gradient"  # FedSGD gradient or FedAvg update of k local steps
    local_steps: int = 1  # FedAvg local SGD steps k (full batch each step)
    local_lr: float = 0.01  # FedAvg local learning rate η
    noise_sigma: float = 0.0  # defence: Gaussian noise std added to every shared entry
    prune_ratio: float = 0.0  # defence: fraction of smallest-magnitude entries zeroed per layer
    # --- objective (Eq. 2-6) ---
    grad_distance: Literal["l2", "sq_l2", "cosine", "layer_cosine"] = "l2"  # paper: L2 distance (unsquared, per layer)
    normalize_grad: bool = False  # divide the gradient term by the target's scale (tenfold's option)
    alpha_grad: float = 1e-4  # α_G, second-hand (breaching)
    alpha_tv: float = 1e-4  # α_TV, second-hand (breaching)
    alpha_l2: float = 1e-6  # α_l2, second-hand (breaching)
    alpha_bn: float = 0.1  # α_BN, second-hand (breaching)
    first_bn_multiplier: float = 10.0  # DeepInversion's weight on the first BN layer
    bn_after_sign: bool = False  # signed: the BN prior's gradient added after the sign (alpha_bn: fraction of a step)
    alpha_group: float = 1e-2  # α_group, second-hand (LeakPro); never disclosed. signed=True: fraction of a step
    group_size: int = 4  # G seeds
    group_every: int = 100  # T_reg: recompute the registered consensus every T_reg steps (tenfold's choice)
    group_warmup: float = 0.25  # group term starts after this fraction of iterations (tenfold's choice)
    registration: Literal["none", "translation", "similarity"] = "translation"  # RANSAC-flow substitute
    # --- optimisation ---
    iterations: int = 20000
    lr: float = 0.1  # Adam step size
    warmup: int = 50  # linear LR warm-up steps, then cosine decay to 0
    signed: bool = False  # Adam on sign(∇x̂) (Inverting Gradients' "hard" signed gradient); paper: plain Adam
    lr_schedule: Literal["cosine", "step"] = "cosine"  # paper: warm-up + cosine; step: x0.1 at 3/8, 5/8, 7/8
    init: Literal["randn", "rand", "zeros"] = "randn"  # x̂ start: N(0, I) in normalised space (paper)
    langevin_sigma: float = 0.2  # σ of the σ·lr·N(0, I) noise on the image gradient (paper 0.2, breaching 0.01)
    pyramid: int = 0  # x̂ as pixels plus this many coarser levels, bilinearly upsampled (tenfold's); 0: pixels (paper)
    pyramid_decay: float = 0.25  # level k steps at lr·decay^k (tenfold's, tuned with the `cpu` preset)
    seed: int = 0
    ckpt_every: int = 500  # attack: save the loop state every this many iterations (0: never); --resume continues
    device: str = "cpu"  # where leak / attack / audit run (`--set device=cuda`); outputs come back to the CPU

    def __post_init__(self) -> None:
        # a negative interval used to be taken without a word, and silently disabled the attack's checkpoints
        if self.ckpt_every < 0:
            raise ConfigError(f"ckpt_every must be >= 0 (0: no checkpoints), got {self.ckpt_every}")
        if not (0.0 <= self.prune_ratio < 1.0 and 0.0 <= self.noise_sigma < math.inf):  # NaN fails both
            raise ConfigError(f"need 0 <= prune_ratio < 1 and a finite noise_sigma >= 0, got {self.prune_ratio}, "
                              f"{self.noise_sigma}")
        # the attack's own checks, here too: a bad value (--set alpha_tv=-1, lr=nan) is one ConfigError when the
        # config is made, so before any work and on --dry-run; it used to come after the model and the leak
        from tenfold.gradinversion.attack import GradInversion

        GradInversion(client_mode=self.resolved_client_mode(), **self._attack_kwargs())

    def _attack_kwargs(self) -> dict[str, Any]:
        """The fields :class:`~tenfold.gradinversion.attack.GradInversion` takes as they are."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("client_mode", "noise_sigma", "prune_ratio", "device", "ckpt_every")}

    def resolved_client_mode(self) -> str:
        """``client_mode`` with ``auto`` resolved: eval when the server distributes BN buffers, else train."""
        if self.client_mode != "auto":
            return self.client_mode
        return "eval" if self.bn_stats == "running" else "train"

    def threat_model(self) -> dict[str, Any]:
        """The switches that define what the attacker knows; stored with every result."""
        return {"labels": self.labels if self.labels == "oracle" else f"recover ({self.label_rule})",
                # a reference the attack does not use must not look used: say so where it is recorded
                "bn_stats": self.bn_stats + (" (BN prior off: alpha_bn = 0)"
                                             if self.alpha_bn == 0 and self.bn_stats != "none" else ""),
                "client_mode": self.resolved_client_mode(),
                "update": self.update if self.update == "gradient" else
                f"fedavg (k={self.local_steps}, lr={self.local_lr})",
                "defences": {"noise_sigma": self.noise_sigma, "prune_ratio": self.prune_ratio},
                "attacker_knows": "architecture and weights (white box)"}


PRESETS: dict[str, Config] = {
    # the paper's setting as far as it is known: breaching's α values, σ = 0.2, G = 4 (second-hand)
    "paper": Config(),
    # CPU budget on 32 px, tuned at 160 iterations on cifar10-train batches disjoint from the benchmark's
    # (benchmarks/gradinversion.py --tune, results/gradinversion_tuning*.json): cosine distance (the spec's
    # option) and signed Adam won; no Langevin noise (σ·lr = 1e-3 swamps the cosine term's ~1e-4 pixel
    # gradients, so the sign was noise); the BN prior hurt at B = 1 (alpha_bn 0); G = 1 (group consistency
    # is a separate, measured option with G = 3: alpha_group 0.05 of a signed step, added after the sign, and
    # the consensus re-registered every step, group_every 1; a consensus 50 steps stale lost most of the gain;
    # tuned at 160 iterations: at 1,000 the pull lost to the plain mean of the G runs, at 0.05 and at 0.005 alike,
    # results/gradinversion_1000it). Labels: yin_mass (Yin's sure rows, then the rest by mass; on cifar10-train
    # batches never below Yin's order, and unique B = 4 / 8 from 0.90 / 0.90 to 1.00 on the calibrated net; labels.py).
    # Image pyramid (session 17): x̂ as pixels plus 4 coarser levels stepping at lr·0.25^k, +0.13 / +0.34 / +0.38 dB
    # mean PSNR over the pixel attack on three sets of tuning runs (needs images of at least 16 px per side)
    "cpu": Config(iterations=1500, label_rule="yin_mass", grad_distance="cosine", signed=True, alpha_grad=1.0,
                  alpha_tv=0.2, alpha_l2=1e-4, alpha_bn=0.0, langevin_sigma=0.0, group_size=1, group_every=1,
                  alpha_group=0.05, pyramid=4, pyramid_decay=0.25),
    # seconds on one CPU core: tests, the demo and the end-to-end smoke run. The `cpu` recipe at a short budget
    # (G = 2 to exercise the group path): until session 9 it was normalised L2 + plain Adam + BN prior + Langevin,
    # which at 16-60 iterations did not leave the random start (PSNR ~8.5 dB on cifar10-mini against 9.3-11.1
    # with this recipe), so smoke-scale audits could not tell a defence from none. No image pyramid (pyramid 0), so
    # that it runs on images of any size
    "smoke": Config(iterations=16, warmup=4, label_rule="yin_mass", grad_distance="cosine", signed=True,
                    alpha_grad=1.0, alpha_tv=0.2, alpha_l2=1e-4, alpha_bn=0.0, langevin_sigma=0.0, group_size=2,
                    group_every=1, alpha_group=0.05, group_warmup=0.5),
}


def build(cfg: Config) -> Any:
    """The one place a Config becomes objects: a :class:`~tenfold.gradinversion.attack.GradInversion`."""
    from tenfold.gradinversion.attack import GradInversion

    if not isinstance(cfg, Config):
        raise ConfigError(f"build needs a gradinversion Config, got {type(cfg).__name__}")
    if cfg.bn_stats == "user" and cfg.resolved_client_mode() == "eval":
        warnings.warn("bn_stats=user with client_mode=eval: an eval-mode client's BN buffers do not change, so it "
                      "sends no batch statistics; the attack gets more than this threat model gives it",
                      TenfoldWarning, stacklevel=2)
    return GradInversion(client_mode=cfg.resolved_client_mode(), **cfg._attack_kwargs())
