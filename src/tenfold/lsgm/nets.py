"""Networks of LSGM: a small time-conditioned U-Net (the score net, in latent or data space), the mixed
score parameterisation (Sec. 3.2), and the spectral regulariser (App. D) with persistent power iteration.

Our U-Net replaces NCSN++ (whose FIR / CUDA ops we do not need): GroupNorm, SiLU, dropout, a time MLP
on sin/cos features of 1000 t, residual sums scaled by 1/sqrt(2); the output conv is zero-initialised so
that at initialisation LSGM's prior is exactly N(0, I).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _gn(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, ch), ch)


def time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, dtype: torch.dtype = torch.float32
                   ) -> torch.Tensor:
    """Sinusoidal features of ``scale`` t (1000 t as the official code): (B,) -> (B, dim). The fastest feature,
    sin(scale t), has period 2 pi / scale in t. Computed in ``dtype``: float32 (bf16 cannot hold 1000 t whatever
    the net runs in), or float64 for a float64 net."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / max(half - 1, 1))
    a = scale * t.to(dtype)[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time, GN-SiLU-dropout-conv, residual sum / sqrt(2)."""

    def __init__(self, cin: int, cout: int, tdim: int, dropout: float) -> None:
        super().__init__()
        self.n1, self.c1 = _gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.n2, self.c2 = _gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.temb(temb)[:, :, None, None]
        h = self.c2(self.drop(F.silu(self.n2(h))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class UNet(nn.Module):
    """eps'_theta(z_t, t): (B, C, H, W), (B,) -> (B, C, H, W). ``ch_mult`` sets the scales (each after
    the first halves H and W, rounding up); ``num_res_blocks`` blocks per scale on each side."""

    def __init__(self, in_ch: int, ch: int = 64, ch_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1,
                 dropout: float = 0.1, time_scale: float = 1000.0) -> None:
        super().__init__()
        self.time_scale = float(time_scale)
        self.tdim = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, self.tdim), nn.SiLU(), nn.Linear(self.tdim, self.tdim))
        self.ch = ch
        self.inp = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        chans, c = [ch], ch
        for i, m in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, ch * m, self.tdim, dropout))
                c = ch * m
                chans.append(c)
            if i < len(ch_mult) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                chans.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, self.tdim, dropout), ResBlock(c, c, self.tdim, dropout)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, m in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + chans.pop(), ch * m, self.tdim, dropout))
                c = ch * m
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.n_out, self.out = _gn(c), nn.Conv2d(c, in_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # zero output: LSGM starts as the N(0, I) VAE
        nn.init.zeros_(self.out.bias)
        self.levels, self.blocks = len(ch_mult), num_res_blocks

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        wdt = self.inp.weight.dtype  # float32 nets get float32 features from any t, as before float64 support
        temb = self.temb(time_embedding(t, self.ch, self.time_scale,
                                        torch.float64 if wdt == torch.float64 else torch.float32).to(wdt))
        h = self.inp(x)
        hs = [h]
        k = 0
        for i in range(self.levels):
            for _ in range(self.blocks):
                h = self.down[k](h, temb)
                k += 1
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        for blk in self.mid:
            h = blk(h, temb)
        k, u = 0, 0
        for i in reversed(range(self.levels)):
            for _ in range(self.blocks + 1):
                s = hs.pop()
                h = self.up[k](torch.cat([h, s], 1), temb)
                k += 1
            if i > 0:
                h = F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest")
                h = self.upsample[u](h)
                u += 1
        return self.out(F.silu(self.n_out(h)))


class MixedScore(nn.Module):
    """Mixed score (Eq. 7): eps_hat = (1 - alpha) * sigma_t z_t + alpha * eps'_theta(z_t, t), alpha = sigmoid(l)
    with one learnable logit l per channel. score = -eps_hat / sigma_t; sigma_t z_t is the exact eps of a
    N(0, I) latent distribution. ``active`` (buffer) zeroes "inactive" channels at the input and pins
    their logit (Sec. 5: drop inactive)."""

    def __init__(self, net: nn.Module, channels: int, logit_init: float = -6.0, mixed: bool = True) -> None:
        super().__init__()
        self.net = net
        self.mixed = mixed  # False: eps_hat = eps'_theta (the "no mix" ablation, or a data-space model)
        # without the mix the logit takes no part in the loss: frozen, so DDP does not wait for its gradient
        self.mix_logit = nn.Parameter(torch.full((channels,), float(logit_init)), requires_grad=mixed)
        self.register_buffer("active", torch.ones(channels))

    def alpha(self) -> torch.Tensor:
        """alpha (C,), with inactive channels at sigmoid(-15) (effectively the Normal score)."""
        logit = torch.where(self.active > 0, self.mix_logit, torch.full_like(self.mix_logit, -15.0))
        return torch.sigmoid(logit)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
        """eps_hat (B, C, H, W) from z_t (B, C, H, W), t (B,), sigma_t (B,)."""
        eps_net = self.net(z_t * self.active[None, :, None, None], t).float()
        if not self.mixed:  # inactive channels still get the Normal eps (the net never sees their z_t; until
            # session 21 it had to guess their eps blind); with every channel active this is eps_net exactly
            normal = sigma_t[:, None, None, None] * z_t
            return torch.where(self.active[None, :, None, None] > 0, eps_net, normal.to(eps_net.dtype))
        a = self.alpha()[None, :, None, None]
        return (1.0 - a) * sigma_t[:, None, None, None] * z_t + a * eps_net


def _keep_if_zero(vec: torch.Tensor, new: torch.Tensor) -> None:
    """``vec`` <- ``new`` / |new|, or unchanged where |new| = 0 (no host sync: a ``where`` on the device)."""
    n = torch.linalg.vector_norm(new)
    vec.copy_(torch.where(n > 0, new / n.clamp_min(torch.finfo(new.dtype).tiny), vec))


class SpectralReg(nn.Module):
    """Spectral regularisation: sum of sigma_max(W as out x in*k*k) over convs + sum of max |gamma| of norm
    layers, sigma_max by one power iteration per call with persistent u, v buffers (checkpointed).

    Convolutions only, as the spec and the official ``sr_utils`` (Linear layers, e.g. the score net's time MLP,
    were penalised too before session 14); ``convs=False`` keeps the norm layers alone (the official CIFAR-10
    FID / balanced recipes exempt the score net's convs).

    A transposed conv's weight is stored (in, out, k, k), so its matrix here is in x out*k*k: the map from one
    input pixel's channels to the output patch it writes, the transposed conv's own per-pixel operator. The spec's
    "out x in*k*k" is the layout of an ordinary conv (session 23 review; the official code has no transposed convs,
    and the VAE decoder's upsampling blocks are the only ones here)."""

    def __init__(self, model: nn.Module, convs: bool = True) -> None:
        super().__init__()
        self._convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))] if convs else []
        self._norms = [m for m in model.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) and m.affine]
        for i, m in enumerate(self._convs):
            w = m.weight.reshape(m.weight.shape[0], -1)
            g = torch.Generator().manual_seed(i)
            self.register_buffer(f"u{i}", F.normalize(torch.randn(w.shape[0], generator=g), dim=0))
            self.register_buffer(f"v{i}", F.normalize(torch.randn(w.shape[1], generator=g), dim=0))

    def forward(self) -> torch.Tensor:
        """The regulariser value (differentiable in the weights)."""
        total = torch.zeros((), device=self._convs[0].weight.device if self._convs else "cpu")
        for i, m in enumerate(self._convs):
            w = m.weight.reshape(m.weight.shape[0], -1).float()
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            with torch.no_grad():  # a zero product (the zero-initialised output conv) keeps the old vector: it
                # used to normalise to 0, and u = v = 0 then stayed 0 and dropped the layer for good
                _keep_if_zero(v, w.t() @ u)
                _keep_if_zero(u, w @ v)
            total = total + u @ w @ v
        for m in self._norms:
            total = total + m.weight.abs().max()
        return total
