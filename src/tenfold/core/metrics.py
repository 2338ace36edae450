"""Evaluation metrics shared by the methods: image quality, keypoints, 3D pose, gaze, likelihood, FD.

All functions take torch tensors, work on batches and return per-sample values (reduce with
``.mean()``) unless a docstring says otherwise. Bad shapes, NaN/Inf and empty inputs raise
:class:`~tenfold.core.io.InputError` with one line. Metrics are computed in the input dtype; pass
float64 when you need more than float32 accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from tenfold.core.geometry import kabsch
from tenfold.core.io import InputError, check_tensor

__all__ = [
    "angular_error",
    "bits_per_dim",
    "dequantization_offset",
    "frechet_distance",
    "gaussian_stats",
    "keypoint_bbox",
    "lpips_distance",
    "lpips_model",
    "mpjpe",
    "pa_mpjpe",
    "pck",
    "pck_auc",
    "psnr",
    "pve",
    "ssim",
]


def _float(x: torch.Tensor) -> torch.Tensor:
    """At least float32: integers become float64, and float16 / bfloat16 float32 (in float16 a PSNR above 48 dB
    overflowed to inf, and a dot product of 300-long vectors gave an angle of 0)."""
    if not x.is_floating_point():
        return x.to(torch.float64)
    return x.float() if torch.finfo(x.dtype).bits < 32 else x


def _same_shape(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str] = ("x", "y"),
                min_dims: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor(x, names[0])
    check_tensor(y, names[1], tuple(x.shape))
    if x.dim() < min_dims:
        raise InputError(f"{names[0]} must have at least {min_dims} dims, got shape {tuple(x.shape)}")
    if x.numel() == 0:  # an empty batch or sample used to give NaN
        raise InputError(f"{names[0]} and {names[1]} are empty (shape {tuple(x.shape)})")
    return _common_float(x, y)


def _common_float(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both in one floating dtype (float32 against float64 was a raw RuntimeError deep inside a metric)."""
    x, y = _float(x), _float(y)
    dt = torch.promote_types(x.dtype, y.dtype)
    return x.to(dt), y.to(dt)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image: x, y (B, ...) -> (B,) in dB.

    PSNR = 10 log10(data_range^2 / MSE), MSE over all non-batch dims; identical images give +inf.
    Why: the reconstruction metric of gradinversion and inversion.
    """
    x, y = _same_shape(x, y, min_dims=2)
    if not (math.isfinite(data_range) and data_range > 0):  # NaN returned NaN dB, inf inf
        raise InputError(f"data_range must be a finite number > 0, got {data_range}")
    _check_span(x, y, data_range)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _check_span(x: torch.Tensor, y: torch.Tensor, data_range: float) -> None:
    """Refuse images that both span more than ``data_range`` (1 % slack): uint8 or [-1, 1] images scored with the
    default range 1 read 48 dB low or 6 dB high in PSNR, and SSIM moved silently (its constants scale with it). One
    image inside the range passes: an unclamped prediction may overshoot its reference's range."""
    with torch.no_grad():
        span = min(float(x.max() - x.min()), float(y.max() - y.min())) if x.numel() else 0.0
    if span > 1.01 * data_range:
        raise InputError(f"the images span {span:.4g} but data_range is {data_range:g}; pass data_range (e.g. 255 "
                         "for 0-255 images, 2 for [-1, 1]) or rescale them")


def _gaussian_window(win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(win_size,) normalised 1-D Gaussian taps centred on the middle tap."""
    r = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004): x, y (B, C, H, W) -> (B,).

    Gaussian window (win_size taps, std sigma), K1 = 0.01, K2 = 0.03, population (not sample)
    covariances, mean over the valid region (windows fully inside the image) and channels.
    Equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)`` (whose window is 11 taps for sigma 1.5).
    Differentiable, so it also serves as a loss.
    """
    check_tensor(x, "x", ("B", "C", "H", "W"))
    x, y = _same_shape(x, y)
    if win_size < 1 or win_size % 2 == 0:
        raise InputError(f"win_size must be a positive odd integer, got {win_size}")
    if not (math.isfinite(data_range) and data_range > 0 and math.isfinite(sigma) and sigma > 0):
        raise InputError(f"data_range and sigma must be finite numbers > 0, got {data_range}, {sigma}")
    _check_span(x, y, data_range)
    H, W = x.shape[-2:]
    if win_size > H or win_size > W:
        raise InputError(f"images must be at least win_size={win_size} pixels on each side, got {H}x{W}")
    C = x.shape[1]
    g = _gaussian_window(win_size, sigma, x.dtype, x.device)
    kh = g.view(1, 1, -1, 1).expand(C, 1, win_size, 1)
    kw = g.view(1, 1, 1, -1).expand(C, 1, 1, win_size)

    def filt(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only
        # never in TF32 (on by default for CUDA convolutions in this torch): its 10-bit mantissa, amplified by the
        # variance subtraction below, moves SSIM on float32 GPU images (a review's CPU emulation; unverified on a GPU)
        # (only that flag: cudnn.flags() would also reset the caller's deterministic and benchmark settings)
        prev = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            return F.conv2d(F.conv2d(z, kh, groups=C), kw, groups=C)
        finally:
            torch.backends.cudnn.allow_tf32 = prev

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def lpips_model(weights: str | Path) -> torch.nn.Module:
    """LPIPS v0.1 (Zhang et al. 2018) with its backbone read from a local torchvision AlexNet or VGG-16 ImageNet
    checkpoint (``features.*`` keys, e.g. ``alexnet-owt-7be5be79.pth`` of a torch hub cache; the net is told by
    its 5 or 13 convolutions) and the ``lpips`` package's own linear heads: nothing is downloaded.

    A missing package is a ConfigError, a missing or unreadable file a DataError / CheckpointError."""
    from tenfold.core.io import CheckpointError, ConfigError
    from tenfold.core.models import load_state_dict_file

    try:
        import lpips
    except ImportError:
        raise ConfigError("LPIPS needs the lpips package: pip install lpips (or tenfold[lpips])") from None
    sd = load_state_dict_file(weights)
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    convs = sum(1 for k, v in feats.items() if k.endswith(".weight") and v.dim() == 4)
    net = {5: "alex", 13: "vgg"}.get(convs)
    if net is None:
        raise CheckpointError(f"{weights} is not a torchvision AlexNet or VGG-16 checkpoint (found {convs} "
                              "convolutions under features.*; LPIPS needs 5 or 13)")
    import warnings

    with warnings.catch_warnings():  # torchvision's deprecation notes for pretrained=False inside lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)  # random backbone: no download
    # lpips splits features into slices whose modules keep their index in features: slice2.3.weight = features.3
    want = model.net.state_dict()
    try:
        model.net.load_state_dict({k: feats[k.split(".", 1)[1]] for k in want}, strict=True)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{weights}: the {net} backbone does not fit LPIPS's ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]})") from None
    return model.eval()


def lpips_distance(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS ``(B,)`` of images ``x, y (B, 3, H, W)`` in [0, 1] under a :func:`lpips_model`."""
    check_tensor(x, "x", ("B", 3, None, None))
    _same_shape(x, y)
    p = next(model.parameters())
    with torch.no_grad():
        return model(x.to(p), y.to(p), normalize=True).flatten().to(x.dtype)


# --------------------------------------------------------------------------------------------
# Keypoints
# --------------------------------------------------------------------------------------------
def keypoint_bbox(kps: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Box around the visible keypoints: kps (B, K, 2) -> (B, 4) as (x1, y1, x2, y2).

    Invisible (padded) keypoints are ignored: padding with -1 inflated PF-WILLOW's thresholds in
    DHPF/CATs (juhongm999/dhpf#3). A pair with no visible keypoint gets a zero box.
    """
    check_tensor(kps, "kps", ("B", "K", 2))
    vis = _visible(visible, kps.shape[:2], kps.device)
    big = torch.finfo(kps.dtype).max if kps.is_floating_point() else torch.iinfo(kps.dtype).max
    lo = torch.where(vis[..., None], kps, torch.full_like(kps, big)).amin(1)
    hi = torch.where(vis[..., None], kps, torch.full_like(kps, -big)).amax(1)
    box = torch.cat([lo, hi], dim=-1)
    return torch.where(vis.any(1, keepdim=True), box, torch.zeros_like(box))


def _visible(visible: torch.Tensor | None, shape: torch.Size | tuple[int, ...],
             device: torch.device) -> torch.Tensor:
    if visible is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    check_tensor(visible, "visible", tuple(shape))
    return visible.bool()


def pck(pred: torch.Tensor, gt: torch.Tensor, alpha: float, *,
        bbox: torch.Tensor | Literal["keypoints"] | None = None,
        img_size: torch.Tensor | Sequence[int] | None = None, visible: torch.Tensor | None = None,
        reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """Percentage of correct keypoints, PCK@alpha: correct when |pred - gt| <= alpha * thr.

    Shapes: pred, gt (B, K, 2) pixels (x, y); visible (B, K) bool. Exactly one normalisation:
    - ``img_size`` (B, 2) or (2,) as (H, W): thr = max(H, W) of the (target) image
      (alpha_img, PF-PASCAL);
    - ``bbox`` (B, 4) as (x1, y1, x2, y2): thr = max(w, h) of the box (alpha_bbox, SPair-71k's
      ``trg_bndbox``); ``bbox="keypoints"``: the box around gt's visible keypoints
      (PF-WILLOW's convention, alpha_bbox-kp, see :func:`keypoint_bbox`).
    The comparison is <= (as in the HPF/DHPF evaluation code). Per pair the fraction is taken over
    its visible keypoints; ``reduction="mean"`` averages pairs (pairs with no visible keypoint are
    skipped) and returns a 0-d tensor, ``"none"`` returns (B,) with NaN for such pairs.
    Never compare PCK across normalisations or image resolutions.
    """
    check_tensor(pred, "pred", ("B", "K", 2))
    check_tensor(gt, "gt", tuple(pred.shape))
    if alpha <= 0:
        raise InputError(f"alpha must be > 0, got {alpha}")
    if (bbox is None) == (img_size is None):
        raise InputError("pck needs exactly one of bbox= (box or 'keypoints') or img_size= (H, W)")
    B = pred.shape[0]
    pred, gt = _float(pred), _float(gt)
    vis = _visible(visible, pred.shape[:2], pred.device)
    if img_size is not None:
        hw = torch.as_tensor(img_size, dtype=pred.dtype, device=pred.device)
        if hw.dim() == 1:
            hw = hw.expand(B, 2)
        check_tensor(hw, "img_size", (B, 2))
        thr = hw.amax(-1)
    else:
        if isinstance(bbox, str):
            if bbox != "keypoints":
                raise InputError(f"bbox must be a (B, 4) tensor or 'keypoints', got {bbox!r}")
            box = keypoint_bbox(gt, vis)
        else:
            box = _float(check_tensor(bbox, "bbox", (B, 4))).to(pred.dtype)
        thr = (box[:, 2:] - box[:, :2]).amax(-1)
    dist = (pred - gt).norm(dim=-1)  # (B, K)
    hit = (dist <= alpha * thr[:, None]) & vis
    nvis = vis.sum(1)
    per_pair = hit.sum(1).to(pred.dtype) / nvis.clamp_min(1).to(pred.dtype)
    per_pair = torch.where(nvis > 0, per_pair, torch.full_like(per_pair, float("nan")))
    if reduction == "none":
        return per_pair
    if reduction != "mean":
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if not (nvis > 0).any():
        raise InputError("pck: no pair has a visible keypoint")
    return per_pair[nvis > 0].mean()


def pck_auc(errors: torch.Tensor, lo: float, hi: float, steps: int = 100) -> torch.Tensor:
    """Area under the PCK curve over thresholds linspace(lo, hi, steps), normalised to [0, 1].

    errors: (N,) or any shape of per-keypoint distances (e.g. 3D joint errors in cm). PCK(t) is
    the fraction with error <= t; the area is the trapezoid rule divided by (hi - lo), as in the
    HO-3D/FreiHAND evaluation scripts. Returns a 0-d tensor.
    """
    check_tensor(errors, "errors")
    if errors.numel() == 0:
        raise InputError("errors is empty")
    if not hi > lo or steps < 2:
        raise InputError(f"pck_auc needs hi > lo and steps >= 2, got lo={lo}, hi={hi}, steps={steps}")
    e = _float(errors).flatten()
    t = torch.linspace(lo, hi, steps, dtype=e.dtype, device=e.device)
    curve = (e[None, :] <= t[:, None]).to(e.dtype).mean(1)  # (steps,)
    return torch.trapezoid(curve, t) / (hi - lo)


# --------------------------------------------------------------------------------------------
# 3D pose
# --------------------------------------------------------------------------------------------
def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: pred, gt (B, J, D) (D = 3, or 2 for pixels) -> (B,), in the inputs' units.

    No alignment: subtract the root first for root-relative MPJPE.
    """
    check_tensor(pred, "pred", ("B", "J", "D"))
    pred, gt = _same_shape(pred, gt, ("pred", "gt"))
    return (pred - gt).norm(dim=-1).mean(-1)


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned MPJPE: pred, gt (B, J, 3) -> (B,).

    pred is first mapped by the similarity (rotation with det +1, translation, scale) that best
    fits it to gt in least squares (Umeyama, :func:`tenfold.core.geometry.kabsch`), as in the
    HMR/SPIN evaluation code; then MPJPE.
    """
    check_tensor(pred, "pred", ("B", "J", 3))
    pred, gt = _same_shape(pred, gt, ("pred", "gt"))
    R, t, s = kabsch(pred, gt, allow_scale=True)
    aligned = s[:, None, None] * pred @ R.transpose(-1, -2) + t[:, None, :]
    return (aligned - gt).norm(dim=-1).mean(-1)


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor) -> torch.Tensor:
    """Per-vertex error: (B, V, 3), (B, V, 3) -> (B,); MPJPE over mesh vertices (KAMA's PVE)."""
    return mpjpe(pred_vertices, gt_vertices)


# --------------------------------------------------------------------------------------------
# Gaze
# --------------------------------------------------------------------------------------------
def angular_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between vectors in degrees: a, b (..., 3) (any non-zero length) -> (...,).

    atan2(|a x b|, a.b): accurate near 0 and 180 degrees, where arccos of a clipped cosine loses
    half the digits. For (pitch, yaw) predictions convert first with
    :func:`tenfold.core.geometry.pitch_yaw_to_vector`. A metric: its gradient at 0 is undefined.
    """
    check_tensor(a, "a", ("...", 3))
    check_tensor(b, "b", ("...", 3))
    a, b = _common_float(a, b)
    if (a.norm(dim=-1) == 0).any() or (b.norm(dim=-1) == 0).any():
        raise InputError("angular_error: zero-length vector; a direction needs a non-zero vector")
    cross = torch.linalg.cross(*torch.broadcast_tensors(a, b), dim=-1).norm(dim=-1)
    dot = (a * b).sum(-1)
    return torch.rad2deg(torch.atan2(cross, dot))


# --------------------------------------------------------------------------------------------
# Likelihood
# --------------------------------------------------------------------------------------------
def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Negative log-likelihood per example in nats -> bits per dimension: nll / (D ln 2).

    Works on floats and tensors of any shape. For continuous densities fitted to discrete data
    add :func:`dequantization_offset` (the density's units depend on how the data were scaled).
    """
    if num_dims < 1:
        raise InputError(f"num_dims must be >= 1, got {num_dims}")
    return nll_nats / (num_dims * math.log(2.0))


def dequantization_offset(num_levels: int, data_range: float = 1.0) -> float:
    """Bits per dim to add to a continuous density's bpd to bound the discrete data's bpd.

    Data with ``num_levels`` levels scaled to an interval of width ``data_range`` and uniformly
    dequantised have bins of width data_range / num_levels, so
    bpd_discrete <= bpd_density + log2(num_levels / data_range).
    Examples: 8-bit data in [0, 1]: +8; K-level data in [-1, 1]: log2(K / 2) (the LSGM spec).
    """
    if num_levels < 2 or data_range <= 0:
        raise InputError(f"need num_levels >= 2 and data_range > 0, got {num_levels}, {data_range}")
    return math.log2(num_levels / data_range)


# --------------------------------------------------------------------------------------------
# Frechet distance between Gaussians (FID-style, on any feature extractor)
# --------------------------------------------------------------------------------------------
def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of features (N, D) -> mu (D,), sigma (D, D), in float64.

    Unbiased covariance (divides by N - 1), as ``np.cov(rowvar=False)`` and pytorch-fid.
    """
    check_tensor(features, "features", ("N", "D"))
    if features.shape[0] < 2:
        raise InputError(f"gaussian_stats needs at least 2 samples, got {features.shape[0]}")
    f = features.to(torch.float64)
    mu = f.mean(0)
    fc = f - mu
    return mu, fc.T @ fc / (f.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu (D,), sigma (D, D) symmetric PSD. d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
    tr((S1 S2)^(1/2)) = sum sqrt(eig(A S2 A)) with A = S1^(1/2): symmetric eigenproblems in float64,
    so there is no complex square root to clean up (pytorch-fid's sqrtm). Tiny negative
    eigenvalues from round-off are clamped to 0. Report it as "FD-<net>", not FID, unless the
    features are Inception's.
    """
    check_tensor(mu1, "mu1", ("D",))
    check_tensor(mu2, "mu2", tuple(mu1.shape))
    D = mu1.shape[0]
    check_tensor(sigma1, "sigma1", (D, D))
    check_tensor(sigma2, "sigma2", (D, D))
    m1, m2 = mu1.to(torch.float64), mu2.to(torch.float64)
    s1 = _sym(sigma1.to(torch.float64))
    s2 = _sym(sigma2.to(torch.float64))
    ev1, U1 = torch.linalg.eigh(s1)
    A = (U1 * ev1.clamp_min(0).sqrt()) @ U1.T  # S1^(1/2)
    ev = torch.linalg.eigvalsh(_sym(A @ s2 @ A)).clamp_min(0)
    tr_covmean = ev.sqrt().sum()
    d2 = (m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return float(d2)


def _sym(S: torch.Tensor) -> torch.Tensor:
    return 0.5 * (S + S.T)
