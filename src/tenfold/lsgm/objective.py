"""LSGM's training objectives (Sec. 3, Algorithms 1-3): the cross-entropy between q(z0|x) and the score-based
prior as weighted denoising score matching, the analytic entropy, and the two losses for the VAE (q-pass,
likelihood weighting, a bound) and the score net (p-pass, possibly reweighted).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .nets import MixedScore, SpectralReg
from .sde import SDE, sample_t
from .vae import VAE, gaussian_entropy, kl_normal


def diffuse(sde: SDE, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t = m_t z0 + sigma_t eps (Eq. 2's marginal); returns (z_t, sigma_t (B,))."""
    shape = (-1,) + (1,) * (z0.dim() - 1)
    sigma = sde.var(t).sqrt()
    return sde.mean_coef(t).reshape(shape) * z0 + sigma.reshape(shape) * noise, sigma


def ce_constant(sde: SDE, time_eps: float, dims: int) -> float:
    """(D / 2) ln(2 pi e sigma2_eps): no gradient, but needed for the CE to be a bound."""
    var_eps = float(sde.var(torch.tensor(time_eps, dtype=torch.float64, device="cpu")))
    return 0.5 * dims * math.log(2 * math.pi * math.e * var_eps)


def cross_entropy_dsm(noise: torch.Tensor, eps_hat: torch.Tensor, w: torch.Tensor, constant: float) -> torch.Tensor:
    """CE(q(z0|x) || p) ~ w(t) |eps - eps_hat|^2 + (D/2) ln(2 pi e sigma2_eps), one t per example (Eq. 8).
    noise, eps_hat (B, ...); w (B,) -> (B,) nats."""
    return w * (noise - eps_hat).pow(2).flatten(1).sum(1) + constant


class LSGMNet(nn.Module):
    """The VAE and the score prior in one module, so the engine checkpoints, averages and DDP-wraps them
    together; ``forward`` computes the stage-2 loss, so under DDP every gradient goes through the wrapper."""

    def __init__(self, vae: VAE, score: MixedScore, sr: bool = False, sr_score_convs: bool = True) -> None:
        super().__init__()
        self.vae, self.score = vae, score
        self.register_buffer("micro_step", torch.zeros((), dtype=torch.long))  # drives the KL schedule; checkpointed
        if sr:
            self.sr_vae, self.sr_score = SpectralReg(vae), SpectralReg(score, convs=sr_score_convs)

    def eps_hat(self, z_t: torch.Tensor, t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
        """The mixed-score prediction eps_hat(z_t, t)."""
        return self.score(z_t, t, sigma_t)

    def forward(self, x: torch.Tensor, **kw: object) -> dict[str, torch.Tensor]:
        """The stage-2 loss dict of :func:`lsgm_loss`."""
        return lsgm_loss(self, x, **kw)  # type: ignore[arg-type]


class VAEStage(nn.Module):
    """Stage 1: the N(0, I) VAE, with ``forward`` computing its loss (see :class:`LSGMNet`)."""

    def __init__(self, vae: VAE, sr: bool = False) -> None:
        super().__init__()
        self.vae = vae
        self.register_buffer("micro_step", torch.zeros((), dtype=torch.long))
        if sr:
            self.sr_vae = SpectralReg(vae)

    def forward(self, x: torch.Tensor, kl_coef: float, sr_vae: float = 0.0) -> dict[str, torch.Tensor]:
        """Stage-1 loss dict of :func:`normal_vae_loss` (+ spectral regularisation)."""
        out = normal_vae_loss(self.vae, x, kl_coef)
        if sr_vae and hasattr(self, "sr_vae"):
            out["loss"] = out["loss"] + sr_vae * self.sr_vae()
        return out


def vae_terms(vae: VAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Encode, decode, reconstruction and entropy: z0, mu, log_sigma, rec = ln p(x|z0) (B,), H (B,)."""
    z0, mu, ls = vae.encode(x)
    rec = vae.log_px(vae.decode(z0), x)
    return {"z0": z0, "mu": mu, "log_sigma": ls, "rec": rec, "H": gaussian_entropy(ls)}


def normal_vae_loss(vae: VAE, x: torch.Tensor, kl_coef: float) -> dict[str, torch.Tensor]:
    """Stage 1 (the N(0, I) VAE): -ln p(x|z0) + beta_KL KL(q || N(0, I)); also returns the NELBO (nats)."""
    out = vae_terms(vae, x)
    kl = kl_normal(out["mu"].float(), out["log_sigma"].float()).flatten(1).sum(1)
    nelbo = -out["rec"] + kl
    loss = (-out["rec"] + kl_coef * kl).mean()
    return {"loss": loss, "nelbo": nelbo.mean().detach(), "kl": kl.mean().detach()}


def lsgm_loss(m: LSGMNet, x: torch.Tensor, sde: SDE, *, scheme: str, time_eps: float, kl_coef: float,
              train_vae: bool, sr_vae: float = 0.0, sr_score: float = 0.0) -> dict[str, torch.Tensor]:
    """Stage 2 (Algorithms 1-3). q-pass: L_q = -ln p(x|z0) + beta_KL (-H + CE_q) (+ SR) for the VAE;
    p-pass: L_p = w_p |eps - eps_hat(stopgrad z_t)|^2 (+ SR) for the score net. When w_p = w_q (``ll_*``)
    the two passes are one backward pass through the same CE. Returns the loss and the per-image NELBO
    estimate (nats)."""
    if train_vae:
        out = vae_terms(m.vae, x)
    else:
        with torch.no_grad():
            out = vae_terms(m.vae, x)
    z0 = out["z0"].float()  # SDE maths in fp32 (w_ll overflows fp16)
    B = z0.shape[0]
    D = z0[0].numel()
    t, w_p, w_q = sample_t(sde, scheme, B, time_eps, device=z0.device)
    noise = torch.randn_like(z0)
    const = ce_constant(sde, time_eps, D)
    joint = scheme.startswith("ll_")
    if joint or not train_vae:
        z_t, sigma = diffuse(sde, z0 if train_vae else z0.detach(), t, noise)
        eps_hat = m.eps_hat(z_t, t, sigma)
        ce_q = cross_entropy_dsm(noise, eps_hat.float(), w_q, const)
        loss_p = (w_p * (noise - eps_hat.float()).pow(2).flatten(1).sum(1)).mean() if not joint else None
    else:
        # Disjoint passes: the q-pass calls the score net with detached parameters (no gradient to it) ...
        z_t, sigma = diffuse(sde, z0, t, noise)
        params = {k: v.detach() for k, v in m.score.named_parameters()}
        buffers = dict(m.score.named_buffers())
        eps_q = torch.func.functional_call(m.score, {**params, **buffers}, (z_t, t, sigma))
        ce_q = cross_entropy_dsm(noise, eps_q.float(), w_q, const)
        # ... and the p-pass sees z_t as data (stop-gradient into the VAE).
        eps_p = m.eps_hat(z_t.detach(), t, sigma)
        loss_p = (w_p * (noise - eps_p.float()).pow(2).flatten(1).sum(1)).mean()
    nelbo = -out["rec"] - out["H"] + ce_q
    if joint and not train_vae:
        loss = ce_q.mean()  # only the score net learns; -rec - H are constants
    elif joint:
        loss = (-out["rec"] + kl_coef * (-out["H"] + ce_q)).mean()
    else:
        loss = loss_p + ((-out["rec"] + kl_coef * (-out["H"] + ce_q)).mean() if train_vae else 0.0)
    if sr_vae and train_vae and hasattr(m, "sr_vae"):
        loss = loss + sr_vae * m.sr_vae()
    if sr_score and hasattr(m, "sr_score"):
        loss = loss + sr_score * m.sr_score()
    return {"loss": loss, "nelbo": nelbo.mean().detach(), "ce": ce_q.mean().detach()}
