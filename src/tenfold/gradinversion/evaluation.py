"""How much leaked: order matching, PSNR/SSIM, image identifiability (IIP), FFT-2D distance, image grids.

Reconstructions come back in an unknown order, so each is first matched to a ground-truth image by a
Hungarian assignment on pixel MSE (LPIPS backbones are not available offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tenfold.core.io import check_tensor
from tenfold.core.metrics import psnr, ssim


def match_order(rec: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` so that ``rec[perm][i]`` is matched to ``true[i]`` (min total MSE, Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    check_tensor(rec, "rec", ("B", "C", "H", "W"))
    check_tensor(true, "true", tuple(rec.shape))
    cost = torch.cdist(true.flatten(1).double(), rec.flatten(1).double()).pow(2).numpy()  # (B_true, B_rec)
    rows, cols = linear_sum_assignment(cost)
    perm = torch.empty(rec.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def fft2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image L2 distance between 2-D FFT magnitude spectra (tenfold's reading of the paper's FFT-2D; unverified)."""
    fx = torch.fft.fft2(x.double(), norm="ortho").abs()
    fy = torch.fft.fft2(y.double(), norm="ortho").abs()
    return (fx - fy).flatten(1).norm(dim=1)


def iip(rec: torch.Tensor, true_index: torch.Tensor, labels: torch.Tensor, ref_images: torch.Tensor,
        ref_labels: torch.Tensor) -> float:
    """Image identifiability (IIP-pixel, after breaching's): the fraction of reconstructions whose pixel-MSE nearest
    neighbour among reference images of class ``labels`` is their own ground truth. Differs from breaching's code:
    the callers pass the true labels (breaching searches the restored ones), a hit is the exact image (breaching:
    any image within distance 1e-3), distances are on [0, 1] pixels (breaching: normalised ones), and the
    reconstructions are matched to the truth first. With wrong restored labels this reads higher than breaching."""
    hits = 0
    ref_flat = ref_images.flatten(1)
    for r, ti, c in zip(rec, true_index.tolist(), labels.tolist()):
        same = (ref_labels == c).nonzero().flatten()
        d = (ref_flat[same] - r.flatten()[None]).pow(2).mean(1)
        hits += int(int(same[int(d.argmin())]) == ti)
    return hits / max(1, rec.shape[0])


def image_metrics(rec: torch.Tensor, true: torch.Tensor) -> dict[str, Any]:
    """PSNR (mean, max), SSIM and FFT-2D distance of ``rec`` against ``true`` (both [0, 1]) after matching."""
    perm = match_order(rec, true)
    r = rec[perm].clamp(0, 1)
    p = psnr(r.double(), true.double())
    return {"psnr": float(p.mean()), "psnr_max": float(p.max()), "ssim": float(ssim(r.double(), true.double()).mean()),
            "fft2": float(fft2_distance(r, true).mean()), "order": perm.tolist()}


def reference_psnr(true: torch.Tensor, data_images: torch.Tensor) -> dict[str, float]:
    """Two guesses that read no gradient, scored like a reconstruction (mean PSNR over the batch), so an attack's
    PSNR can be read. ``psnr_dataset_mean_colour``: every image is the ``data_images``' mean colour, what the
    attacker knows without the gradient (at or below it, PSNR shows no more than guessing; labels leak apart from
    it). ``psnr_own_mean_colour``: each image is its own mean colour, an oracle for what colour alone explains
    (above it, structure leaked; +inf for a constant image, as for a perfect match). On the GradInversion
    benchmark's cifar10-test batches they read 13.6-13.9 and 14.6-15.8 dB (results/gradinversion.json), the range
    in which its 160-iteration attacks end."""
    check_tensor(true, "true", ("B", "C", "H", "W"))
    check_tensor(data_images, "data_images", ("N", true.shape[1], "H", "W"))
    t = true.double()
    colour = data_images.mean((0, 2, 3), dtype=torch.float64).to(t.device).view(1, -1, 1, 1).expand_as(t)
    own = t.mean((2, 3), keepdim=True).expand_as(t)
    return {"psnr_dataset_mean_colour": float(psnr(colour, t).mean()),
            "psnr_own_mean_colour": float(psnr(own, t).mean())}


def save_grid(path: str | Path, rows: list[torch.Tensor], titles: list[str] | None = None) -> Path:
    """A PNG with one row of images per tensor ``(B, C, H, W)`` in [0, 1] (originals first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.2, 1.4 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.axis("off")
            if j < r.shape[0]:
                img = r[j].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          interpolation="nearest")
        if titles:
            axes[i][0].set_title(titles[i], fontsize=7, loc="left")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def binomial_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval for a proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return (float(max(0.0, c - h)), float(min(1.0, c + h)))
