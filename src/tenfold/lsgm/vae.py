"""The VAE of LSGM: a convolutional encoder q(z0|x) (one latent tensor, or NVAE-style groups at one scale
with q(z_l | x, z_<l) from a top-down state), a decoder p(x|z0) (Bernoulli for binary images, discretised
logistic mixture for K-level images), and the analytic Gaussian entropy of q.

Images are padded to a multiple of 2^levels (28 -> 32 with ``pad=2``) and the decoder output is cropped
back, so likelihoods count only the real pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.io import InputError

LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def soft_clamp5(x: torch.Tensor) -> torch.Tensor:
    """5 tanh(x / 5): keeps posterior mu and log sigma in (-5, 5) without killing gradients."""
    return 5.0 * torch.tanh(x / 5.0)


def gaussian_entropy(log_sigma: torch.Tensor) -> torch.Tensor:
    """Analytic entropy of a diagonal Gaussian, summed per example: sum 1/2 ln(2 pi e) + log sigma. (B, ...) -> (B,)."""
    return (0.5 * LOG_2PI_E + log_sigma).flatten(1).sum(1)


def kl_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per element (the N(0, I) VAE's prior term)."""
    return 0.5 * (mu * mu + torch.exp(2 * log_sigma) - 1.0) - log_sigma


# ------------------------------------------------------------------------------------------------------
# Decoders
# ------------------------------------------------------------------------------------------------------
def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ln p(x | logits) for binary x, summed per example: (B, C, H, W) -> (B,)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def _log_sigmoid_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ln(sigmoid(a) - sigmoid(b)) for a > b, stable: sigmoid(a)-sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^{b-a})."""
    return F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a).clamp(max=-1e-12))


def dlogistic_mixture_log_prob(params: torch.Tensor, x: torch.Tensor, num_levels: int = 256,
                               num_mix: int = 10) -> torch.Tensor:
    """Discretised logistic mixture (PixelCNN++ / NVAE): ln p(x) per example for K-level x in [-1, 1].

    params (B, M * (1 + 3C), H, W) for C = 1 or 3 channels: mixture logits, then per component and
    channel a mean, a log-scale (>= -7) and, for RGB, the coupling coefficients (R -> G -> B).
    Bins have half-width 1 / (K - 1); the edge bins are open; where a bin's mass is below 1e-5 its
    density times width is used instead. x (B, C, H, W) -> (B,).
    """
    B, C, H, W = x.shape
    M = num_mix
    n_coef = 3 if C == 3 else 0
    if C not in (1, 3) or params.shape != (B, M * (1 + 2 * C + n_coef), H, W):
        raise InputError(f"params must have shape ({B}, {M * (1 + 2 * C + n_coef)}, {H}, {W}) for x {tuple(x.shape)}")
    logit_pi = params[:, :M]  # (B, M, H, W)
    rest = params[:, M:].reshape(B, M, 2 * C + n_coef, H, W)
    means = rest[:, :, :C]  # (B, M, C, H, W)
    log_s = rest[:, :, C:2 * C].clamp(min=-7.0)
    xc = x[:, None].expand(B, M, C, H, W)
    if C == 3:
        coef = torch.tanh(rest[:, :, 2 * C:])
        m_r = means[:, :, 0]
        m_g = means[:, :, 1] + coef[:, :, 0] * xc[:, :, 0]
        m_b = means[:, :, 2] + coef[:, :, 1] * xc[:, :, 0] + coef[:, :, 2] * xc[:, :, 1]
        means = torch.stack([m_r, m_g, m_b], 2)
    half = 1.0 / (num_levels - 1)
    centred = xc - means
    inv_s = torch.exp(-log_s)
    plus, minus = inv_s * (centred + half), inv_s * (centred - half)
    log_cdf_plus = F.logsigmoid(plus)  # left edge bin: ln sigmoid(plus)
    log_one_minus_cdf_min = F.logsigmoid(-minus)  # right edge bin: ln (1 - sigmoid(minus))
    log_mass = _log_sigmoid_diff(plus, minus)
    mid = inv_s * centred
    log_density = mid - log_s - 2.0 * F.softplus(mid) + math.log(2 * half)  # density * bin width
    mass = torch.exp(log_mass)
    inner = torch.where(mass > 1e-5, log_mass, log_density)
    log_p = torch.where(xc < -1 + half / 2, log_cdf_plus, torch.where(xc > 1 - half / 2, log_one_minus_cdf_min, inner))
    log_p = log_p.sum(2) + F.log_softmax(logit_pi, 1)  # (B, M, H, W)
    return torch.logsumexp(log_p, 1).flatten(1).sum(1)


def dlogistic_mixture_sample(params: torch.Tensor, channels: int, num_mix: int = 10, num_levels: int = 256,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from the discretised logistic mixture of :func:`dlogistic_mixture_log_prob`, on its K-level grid in
    [-1, 1]: a component per pixel (Gumbel-max on the mixture logits), then R, G, B in turn, each from its logistic
    with the coupling applied to the channels already drawn, clipped into the edge bins and binned, so every value
    has exactly the probability the likelihood gives it. (B, M(1+3C), H, W) -> (B, C, H, W). (Until session 21 the
    colour decoder's "draws" were :func:`dlogistic_mixture_mean`.)"""
    B, _, H, W = params.shape
    M, C = num_mix, channels

    def uniform(shape: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, dtype=params.dtype,
                       device=generator.device if generator is not None else params.device)
        return u.to(params.device).clamp(1e-6, 1 - 1e-6)

    gumbel = -torch.log(-torch.log(uniform((B, M, H, W))))
    k = (params[:, :M] + gumbel).argmax(1, keepdim=True)  # (B, 1, H, W)
    rest = params[:, M:].reshape(B, M, -1, H, W)
    pick = torch.gather(rest, 1, k[:, :, None].expand(B, 1, rest.shape[2], H, W))[:, 0]  # (B, 2C(+3), H, W)
    means, log_s = pick[:, :C], pick[:, C:2 * C].clamp(min=-7.0)
    coef = torch.tanh(pick[:, 2 * C:]) if C == 3 else None
    noise = uniform((B, C, H, W))
    noise = torch.log(noise) - torch.log1p(-noise)  # standard logistic
    levels = num_levels - 1
    out: list[torch.Tensor] = []
    for c in range(C):
        mu = means[:, c]
        if c >= 1 and coef is not None:
            mu = mu + coef[:, 0 if c == 1 else 1] * out[0] + (coef[:, 2] * out[1] if c == 2 else 0.0)
        v = (mu + torch.exp(log_s[:, c]) * noise[:, c]).clamp(-1.0, 1.0)
        out.append(torch.round((v + 1.0) / 2.0 * levels) / levels * 2.0 - 1.0)  # the bin the value falls in
    return torch.stack(out, 1)


def dlogistic_mixture_mean(params: torch.Tensor, channels: int, num_mix: int = 10) -> torch.Tensor:
    """A display image from the mixture: the pi-weighted component means with the R -> G -> B coupling
    applied to the previous channels' values, clamped to [-1, 1]. (B, M(1+3C), H, W) -> (B, C, H, W). Not the
    mixture's mean: it ignores the mass piled in the edge bins and couples G and B to the averaged R."""
    B, _, H, W = params.shape
    M, C = num_mix, channels
    pi = torch.softmax(params[:, :M], 1)[:, :, None]
    rest = params[:, M:].reshape(B, M, -1, H, W)
    means = rest[:, :, :C]
    if C == 3:
        coef = torch.tanh(rest[:, :, 2 * C:])
        r = (pi[:, :, 0] * means[:, :, 0]).sum(1).clamp(-1, 1)
        g = (pi[:, :, 0] * (means[:, :, 1] + coef[:, :, 0] * r[:, None])).sum(1).clamp(-1, 1)
        b = (pi[:, :, 0] * (means[:, :, 2] + coef[:, :, 1] * r[:, None] + coef[:, :, 2] * g[:, None])).sum(1)
        return torch.stack([r, g, b.clamp(-1, 1)], 1)
    return (pi * means).sum(1).clamp(-1, 1)


# ------------------------------------------------------------------------------------------------------
# The VAE
# ------------------------------------------------------------------------------------------------------
def _block(cin: int, cout: int, stride: int = 1, up: bool = False) -> nn.Sequential:
    conv = (nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1) if up
            else nn.Conv2d(cin, cout, 3, stride=stride, padding=1))
    return nn.Sequential(conv, nn.GroupNorm(math.gcd(8, cout), cout), nn.SiLU())


class VAE(nn.Module):
    """Conv VAE: x (B, C, S, S) -> z0 (B, groups * latent_ch, S / 2^levels, S / 2^levels) -> p(x|z0).

    ``groups > 1`` is the NVAE-style hierarchy at one scale: group l's posterior is computed from the
    encoder features and a top-down state that has seen z_1..z_{l-1}; the SGM (or N(0, I)) prior models
    all groups concatenated along channels, as in LSGM.
    """

    def __init__(self, image_channels: int = 1, image_size: int = 28, pad: int = 2, ch: int = 32,
                 levels: int = 2, latent_ch: int = 8, groups: int = 1, decoder: str = "bernoulli",
                 num_levels: int = 2, num_mix: int = 10) -> None:
        super().__init__()
        if decoder not in ("bernoulli", "logistic_mixture"):
            raise InputError(f"decoder must be bernoulli or logistic_mixture, got '{decoder}'")
        self.image_channels, self.image_size, self.pad = image_channels, image_size, pad
        self.decoder_kind, self.num_levels, self.num_mix = decoder, num_levels, num_mix
        self.latent_ch, self.groups = latent_ch, groups
        s = image_size + 2 * pad
        if s % (2 ** levels):
            raise InputError(f"image_size + 2 pad = {s} must be divisible by 2^levels = {2 ** levels}")
        self.latent_size = s // 2 ** levels
        enc, c = [_block(image_channels, ch)], ch
        for i in range(levels):
            enc += [_block(c, ch * 2 ** (i + 1), stride=2), _block(ch * 2 ** (i + 1), ch * 2 ** (i + 1))]
            c = ch * 2 ** (i + 1)
        self.enc = nn.Sequential(*enc)
        self.feat_ch = c
        self.q_heads = nn.ModuleList([nn.Conv2d(c + (c if g else 0), 2 * latent_ch, 3, padding=1)
                                      for g in range(groups)])
        self.td = nn.ModuleList([nn.Sequential(nn.Conv2d((c if g else 0) + latent_ch, c, 3, padding=1), nn.SiLU())
                                 for g in range(groups - 1)])
        dec = [_block(groups * latent_ch, c)]
        for i in reversed(range(levels)):
            cout = ch * 2 ** i
            dec += [_block(c, cout, up=True), _block(cout, cout)]
            c = cout
        self.dec = nn.Sequential(*dec)
        out_ch = image_channels if decoder == "bernoulli" else num_mix * (1 + 2 * image_channels
                                                                         + (3 if image_channels == 3 else 0))
        self.out = nn.Conv2d(c, out_ch, 3, padding=1)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of z0."""
        return (self.groups * self.latent_ch, self.latent_size, self.latent_size)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the decoder's space ({0,1} stays, K-level goes to [-1, 1]) and padding."""
        if self.decoder_kind == "logistic_mixture":
            x = 2.0 * x - 1.0
        return F.pad(x, [self.pad] * 4, value=0.0 if self.decoder_kind == "bernoulli" else -1.0)

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) in [0, 1] -> z0, mu, log_sigma, each (B, groups * latent_ch, h, w); z0 is a
        reparameterised posterior sample (mu, log sigma soft-clamped)."""
        h = self.enc(self.to_model_space(x))
        zs, mus, lss = [], [], []
        state = None
        for g in range(self.groups):
            inp = h if state is None else torch.cat([h, state], 1)
            # posterior parameters, z0 and so the entropy in fp32 under autocast (bf16 is for inside the networks;
            # a bf16 entropy summed rounding over thousands of latent dimensions); a no-op in fp32
            mu, ls = soft_clamp5(self.q_heads[g](inp).float()).chunk(2, 1)
            where = generator.device if generator is not None else mu.device  # a seeded generator's own device
            noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=where).to(mu.device)
            z = mu + torch.exp(ls) * noise
            zs.append(z)
            mus.append(mu)
            lss.append(ls)
            if g < self.groups - 1:
                state = self.td[g](z if state is None else torch.cat([state, z], 1))
        return torch.cat(zs, 1), torch.cat(mus, 1), torch.cat(lss, 1)

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """z0 -> decoder parameters (B, out, S, S), cropped to the unpadded image."""
        p = self.out(self.dec(z0))
        return p[..., self.pad:p.shape[-2] - self.pad, self.pad:p.shape[-1] - self.pad] if self.pad else p

    def log_px(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ln p(x | z0) per example for images x in [0, 1] (binary for Bernoulli, K-level otherwise)."""
        if self.decoder_kind == "bernoulli":
            return bernoulli_log_prob(params.float(), x)
        return dlogistic_mixture_log_prob(params.float(), 2.0 * x - 1.0, self.num_levels, self.num_mix)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder mean as an image in [0, 1]."""
        if self.decoder_kind == "bernoulli":
            return torch.sigmoid(params.float())
        return (dlogistic_mixture_mean(params.float(), self.image_channels, self.num_mix) + 1.0) / 2.0

    def sample_image(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from p(x | z0) in [0, 1]: binary images for Bernoulli decoders, K-level ones for the logistic
        mixture (which returned its mean until session 21)."""
        if self.decoder_kind == "bernoulli":
            p = torch.sigmoid(params.float())
            where = generator.device if generator is not None else p.device  # a CPU generator with a CUDA model
            return torch.bernoulli(p.to(where), generator=generator).to(p.device)
        x = dlogistic_mixture_sample(params.float(), self.image_channels, self.num_mix, self.num_levels, generator)
        return (x + 1.0) / 2.0
