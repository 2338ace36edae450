"""Registration for group consistency (Yin et al. 2021, Sec. 3.3): align each seed's images to the group mean.

The paper registers with RANSAC-flow, whose pretrained weights are not available offline; this is
tenfold's substitute (documented in the README). A transform is a 2x3 affine matrix ``A`` acting
on normalised coordinates as ``torch.nn.functional.affine_grid`` uses them (align_corners=False):
``warp(x, A)(p) = x(A [p; 1])``. Horizontal flips, translations and similarities are all such
matrices, so inverting and composing them is plain 3x3 algebra.

- ``translation``: FFT cross-correlation, integer peak plus a parabolic sub-pixel refinement,
  tried on the image and its mirror (flip-aware). Deterministic, no gradients.
- ``similarity``: starts from the translation estimate and refines (scale, angle, shift) by a few
  Adam steps on the MSE through ``grid_sample`` (differentiable in the images and the parameters).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from tenfold.core.io import ConfigError, check_tensor

Registration = Literal["none", "translation", "similarity"]


def warp(x: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Resample images ``x (N, C, H, W)`` at ``A (N, 2, 3)`` applied to each output pixel (border padding)."""
    grid = F.affine_grid(A.to(x.dtype), list(x.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def invert(A: torch.Tensor) -> torch.Tensor:
    """Inverse of affine maps ``A (N, 2, 3)``."""
    M = A[:, :, :2]
    Mi = torch.linalg.inv(M)
    return torch.cat([Mi, -(Mi @ A[:, :, 2:])], dim=2)


def shift_matrix(dy: torch.Tensor, dx: torch.Tensor, H: int, W: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 2, 3)`` maps with ``warp(x, A)(i, j) = x'(i - dy, j - dx)``, x' = x mirrored where ``flip``."""
    N = dy.shape[0]
    A = torch.zeros(N, 2, 3, dtype=dy.dtype, device=dy.device)
    sx = torch.ones_like(dx) if flip is None else 1.0 - 2.0 * flip.to(dx.dtype)
    # x_in = sx * (x_out - 2 dx / W): shift first, then mirror
    A[:, 0, 0] = sx
    A[:, 0, 2] = -sx * 2.0 * dx / W
    A[:, 1, 1] = 1.0
    A[:, 1, 2] = -2.0 * dy / H
    return A


def _subpixel(c_m: torch.Tensor, c_0: torch.Tensor, c_p: torch.Tensor) -> torch.Tensor:
    """Vertex offset of the parabola through (-1, c_m), (0, c_0), (1, c_p), clipped to [-0.5, 0.5]."""
    den = c_m - 2 * c_0 + c_p
    off = torch.where(den.abs() > 1e-12, 0.5 * (c_m - c_p) / den, torch.zeros_like(den))
    return off.clamp(-0.5, 0.5)


def _xcorr_peak(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift (dy, dx) maximising the circular cross-correlation of ``x`` shifted onto ``ref`` and its value."""
    N, C, H, W = x.shape
    xc = x - x.mean(dim=(2, 3), keepdim=True)
    rc = ref - ref.mean(dim=(2, 3), keepdim=True)
    # c(s) = sum_p ref(p) x(p - s): the correlation of ref with x moved by s
    c = torch.fft.irfft2(torch.fft.rfft2(rc) * torch.fft.rfft2(xc).conj(), s=(H, W)).sum(1)  # (N, H, W)
    flat = c.flatten(1).argmax(1)
    iy, ix = flat // W, flat % W
    n = torch.arange(N, device=x.device)
    peak = c[n, iy, ix]
    dy = iy.to(x.dtype) + _subpixel(c[n, (iy - 1) % H, ix], peak, c[n, (iy + 1) % H, ix])
    dx = ix.to(x.dtype) + _subpixel(c[n, iy, (ix - 1) % W], peak, c[n, iy, (ix + 1) % W])
    dy = torch.where(dy > H / 2, dy - H, dy)  # wrap to (-H/2, H/2]
    dx = torch.where(dx > W / 2, dx - W, dx)
    return dy, dx, peak


def register_translation(x: torch.Tensor, ref: torch.Tensor, flip_aware: bool = True) -> torch.Tensor:
    """Affine maps ``(N, 2, 3)`` with ``warp(x, A) ≈ ref``: FFT translation, optionally over mirror images."""
    check_tensor(x, "x", ("N", "C", "H", "W"))
    check_tensor(ref, "ref", tuple(x.shape))
    H, W = x.shape[-2:]
    x, ref = x.detach(), ref.detach()
    dy, dx, peak = _xcorr_peak(x, ref)
    A = shift_matrix(dy, dx, H, W)
    if flip_aware:
        fy, fx, fpeak = _xcorr_peak(x.flip(-1), ref)
        Af = shift_matrix(fy, fx, H, W, flip=torch.ones_like(fy))
        A = torch.where((fpeak > peak)[:, None, None], Af, A)
    return A


def register_similarity(x: torch.Tensor, ref: torch.Tensor, steps: int = 30, lr: float = 0.02,
                        flip_aware: bool = True) -> torch.Tensor:
    """Affine maps ``(N, 2, 3)`` of the form translation-init ∘ similarity(scale, angle, shift) minimising
    ``||warp(x, A) - ref||^2`` by Adam on the four parameters (differentiable through grid_sample)."""
    A0 = register_translation(x, ref, flip_aware)
    N = x.shape[0]
    x, ref = x.detach(), ref.detach()
    p = torch.zeros(N, 4, dtype=x.dtype, device=x.device, requires_grad=True)  # log s, angle, tx, ty
    opt = torch.optim.Adam([p], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            A = compose(A0, similarity_matrix(p))
            loss = (warp(x, A) - ref).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return compose(A0, similarity_matrix(p.detach()))


def similarity_matrix(p: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` similarity ``s R(theta) [u; v] + t`` from ``p = (log s, theta, tx, ty) (N, 4)``."""
    s, th = p[:, 0].exp(), p[:, 1]
    c, si = s * th.cos(), s * th.sin()
    row0 = torch.stack([c, -si, p[:, 2]], dim=1)
    row1 = torch.stack([si, c, p[:, 3]], dim=1)
    return torch.stack([row0, row1], dim=1)


def compose(A: torch.Tensor, Bm: torch.Tensor) -> torch.Tensor:
    """The map ``p -> A(B(p))`` (sampling with B first, then A): ``(N, 2, 3)``."""
    M = A[:, :, :2] @ Bm[:, :, :2]
    t = A[:, :, :2] @ Bm[:, :, 2:] + A[:, :, 2:]
    return torch.cat([M, t], dim=2)


def register(x: torch.Tensor, ref: torch.Tensor, method: str) -> torch.Tensor:
    """Affine maps ``(N, 2, 3)`` registering ``x`` to ``ref`` with ``method`` (``none`` gives identities)."""
    if method == "none":
        eye = torch.eye(2, 3, dtype=x.dtype, device=x.device)
        return eye.expand(x.shape[0], 2, 3).clone()
    if method == "translation":
        return register_translation(x, ref)
    if method == "similarity":
        return register_similarity(x, ref)
    raise ConfigError(f"unknown registration '{method}'; choose one of: none, translation, similarity")


def consensus(xs: torch.Tensor, method: str, iters: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Group consensus E of G reconstructions ``xs (G, B, C, H, W)``: register each to the pixel-wise mean,
    average the registered images, repeat ``iters`` times. Returns E ``(B, C, H, W)`` and the maps
    ``A (G, B, 2, 3)`` with ``warp(xs[g], A[g]) ≈ E``."""
    check_tensor(xs, "xs", ("G", "B", "C", "H", "W"))
    G, B = xs.shape[:2]
    flat = xs.detach().flatten(0, 1)  # (G*B, C, H, W)
    E = xs.detach().mean(0)  # (B, C, H, W): start from the plain mean
    A = register(flat, flat, "none")
    if method == "none" or G == 1:
        return E, A.view(G, B, 2, 3)
    for _ in range(iters):
        ref = E.unsqueeze(0).expand(G, *E.shape).flatten(0, 1)
        A = register(flat, ref, method)
        E = warp(flat, A).view(xs.shape).mean(0)
    return E, A.view(G, B, 2, 3)
