"""Metrics against independent references: scikit-image, SciPy Procrustes, naive loops and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes, sqrtm
from scipy.spatial import procrustes
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tenfold.core import geometry as G
from tenfold.core import metrics as M
from tenfold.core.io import InputError

D64 = torch.float64


# ---------------------------------------------------------------- images
def _noisy_pair(B=2, C=3, H=32, W=29, scale=1.0):
    x = torch.rand(B, C, H, W, dtype=D64) * scale
    y = (x + 0.1 * scale * torch.randn_like(x)).clamp(0, scale)
    return x, y


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_against_skimage(data_range):
    x, y = _noisy_pair(scale=data_range)
    got = M.psnr(x, y, data_range)
    for b in range(2):
        ref = peak_signal_noise_ratio(x[b].numpy(), y[b].numpy(), data_range=data_range)
        assert got[b].item() == pytest.approx(ref, rel=1e-12)
    assert math.isinf(M.psnr(x, x, data_range)[0].item())


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_ssim_against_skimage(data_range):
    x, y = _noisy_pair(scale=data_range)
    got = M.ssim(x, y, data_range=data_range)
    for b in range(2):
        ref = structural_similarity(x[b].numpy(), y[b].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=data_range)
        assert got[b].item() == pytest.approx(ref, abs=1e-10)
    torch.testing.assert_close(M.ssim(x, x, data_range=data_range), torch.ones(2, dtype=D64))


def test_images_that_span_more_than_data_range_are_refused():
    """uint8-valued or [-1, 1] images scored with the default data_range 1 read 48 dB low or 6 dB high in PSNR, and
    SSIM moved silently; within 1 % of the range they pass."""
    x, y = _noisy_pair()
    for f in (M.psnr, M.ssim):
        for a, b, rng in ((x * 255, y * 255, 1.0), (2 * x - 1, 2 * y - 1, 1.0)):
            with pytest.raises(InputError, match="the images span .* but data_range is 1"):
                f(a, b, data_range=rng)
        assert torch.isfinite(f(2 * x - 1, 2 * y - 1, data_range=2.0)).all()
        assert torch.isfinite(f(x * 1.005, y, data_range=1.0)).all()
        assert torch.isfinite(f(x + 0.1 * torch.randn_like(x), x, data_range=1.0)).all()  # one may overshoot


def test_ssim_filters_without_tf32_and_leaves_the_other_cudnn_flags(monkeypatch):
    """On CUDA, float32 convolutions may run in TF32 (on by default here), which moves SSIM; the filter
    turns it off for itself only (cudnn.flags() also reset the caller's deterministic setting)."""
    import torch.nn.functional as F

    seen = []
    real = F.conv2d
    monkeypatch.setattr(M.F, "conv2d", lambda *a, **k: (seen.append(torch.backends.cudnn.allow_tf32), real(*a, **k))[1])
    c = torch.backends.cudnn
    monkeypatch.setattr(c, "allow_tf32", True)
    monkeypatch.setattr(c, "deterministic", True)
    x, y = _noisy_pair()
    M.ssim(x, y)
    assert seen and not any(seen) and c.allow_tf32 and c.deterministic


def test_ssim_grayscale_float32_and_grad():
    x, y = _noisy_pair(B=1, C=1, H=20, W=20)
    ref = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert M.ssim(x.float(), y.float()).item() == pytest.approx(ref, abs=1e-5)
    yg = y.clone().requires_grad_()
    M.ssim(x, yg).sum().backward()
    assert torch.isfinite(yg.grad).all()


def test_image_metric_errors():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(InputError, match="win_size"):
        M.ssim(x, x)
    with pytest.raises(InputError, match="shape"):
        M.psnr(x, x[:1])
    with pytest.raises(InputError, match="NaN"):
        M.psnr(x, torch.full_like(x, float("nan")))
    with pytest.raises(InputError, match="shape"):
        M.ssim(x[0], x[0])


# ---------------------------------------------------------------- keypoints
def _naive_pck(pred, gt, alpha, thr, vis):
    fracs = []
    for b in range(pred.shape[0]):
        hits, n = 0, 0
        for k in range(pred.shape[1]):
            if not vis[b, k]:
                continue
            n += 1
            d = math.hypot(pred[b, k, 0] - gt[b, k, 0], pred[b, k, 1] - gt[b, k, 1])
            hits += d <= alpha * thr[b]
        if n:
            fracs.append(hits / n)
    return sum(fracs) / len(fracs)


def test_pck_against_naive_loop_all_conventions():
    B, K = 7, 10
    gt = torch.rand(B, K, 2, dtype=D64) * 200
    pred = gt + torch.randn(B, K, 2, dtype=D64) * 15
    vis = torch.rand(B, K) > 0.3
    vis[3] = False  # a pair without visible keypoints is skipped
    gt_pad = torch.where(vis[..., None], gt, torch.full_like(gt, -1.0))  # PF-WILLOW-style padding
    hw = torch.tensor([[240, 320]] * B)
    box = torch.cat([gt.amin(1) - 5, gt.amax(1) + 7], -1)
    for alpha in (0.05, 0.1, 0.15):
        got = M.pck(pred, gt, alpha, img_size=hw, visible=vis)
        assert got.item() == pytest.approx(_naive_pck(pred, gt, alpha, [320.0] * B, vis))
        assert M.pck(pred, gt, alpha, img_size=(240, 320), visible=vis).item() == pytest.approx(got.item())
        got = M.pck(pred, gt, alpha, bbox=box, visible=vis)
        thr = [max(box[b, 2] - box[b, 0], box[b, 3] - box[b, 1]).item() for b in range(B)]
        assert got.item() == pytest.approx(_naive_pck(pred, gt, alpha, thr, vis))
        got = M.pck(pred, gt_pad, alpha, bbox="keypoints", visible=vis)
        thr = []
        for b in range(B):
            pts = gt[b][vis[b]].numpy()
            thr.append(float((pts.max(0) - pts.min(0)).max()) if len(pts) else 0.0)
        assert got.item() == pytest.approx(_naive_pck(pred, gt, alpha, thr, vis))
    per = M.pck(pred, gt, 0.1, img_size=(240, 320), visible=vis, reduction="none")
    assert per.shape == (B,) and torch.isnan(per[3]) and not torch.isnan(per[:3]).any()


def test_pck_boundary_is_inclusive_and_errors():
    gt = torch.zeros(1, 2, 2, dtype=D64)
    pred = torch.tensor([[[10.0, 0.0], [10.0 + 1e-9, 0.0]]], dtype=D64)
    assert M.pck(pred, gt, 0.1, img_size=(50, 100)).item() == 0.5  # d == alpha*thr counts
    with pytest.raises(InputError, match="exactly one"):
        M.pck(pred, gt, 0.1)
    with pytest.raises(InputError, match="exactly one"):
        M.pck(pred, gt, 0.1, bbox="keypoints", img_size=(1, 1))
    with pytest.raises(InputError, match="visible"):
        M.pck(pred, gt, 0.1, img_size=(1, 1), visible=torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="shape"):
        M.pck(pred[..., :1], gt, 0.1, img_size=(1, 1))


def test_pck_auc_closed_form():
    e = torch.linspace(0, 1, 100001, dtype=D64)  # uniform errors on [0, 1]: PCK(t) = t, AUC = 1/2
    assert M.pck_auc(e, 0.0, 1.0, steps=101).item() == pytest.approx(0.5, abs=1e-4)
    assert M.pck_auc(torch.zeros(5), 0.0, 5.0).item() == pytest.approx(1.0)
    assert M.pck_auc(torch.full((5,), 9.0), 0.0, 5.0).item() == 0.0


# ---------------------------------------------------------------- 3D pose
def test_mpjpe_and_pve_naive():
    p, g = torch.randn(3, 17, 3, dtype=D64), torch.randn(3, 17, 3, dtype=D64)
    ref = [np.mean([np.linalg.norm(p[b, j] - g[b, j]) for j in range(17)]) for b in range(3)]
    np.testing.assert_allclose(M.mpjpe(p, g).numpy(), ref, rtol=1e-12)
    torch.testing.assert_close(M.pve(p, g), M.mpjpe(p, g))


def test_pa_mpjpe_planted_similarity_is_zero():
    gt = torch.randn(4, 24, 3, dtype=D64)
    R = G.random_rotation(4, dtype=D64)
    pred = 2.5 * gt @ R + torch.randn(4, 1, 3, dtype=D64)
    torch.testing.assert_close(M.pa_mpjpe(pred, gt), torch.zeros(4, dtype=D64), atol=1e-10, rtol=0)
    assert (M.mpjpe(pred, gt) > 0.1).all()


def test_pa_mpjpe_against_scipy_procrustes():
    gt = torch.randn(5, 21, 3, dtype=D64)
    R = G.random_rotation(5, dtype=D64)
    pred = 0.7 * (gt + 0.1 * torch.randn_like(gt)) @ R + 3.0  # noisy: the best orthogonal map is a rotation
    got = M.pa_mpjpe(pred, gt)
    R2, t2, s2 = G.kabsch(pred, gt, allow_scale=True)
    aligned = s2[:, None, None] * pred @ R2.transpose(-1, -2) + t2[:, None]
    for b in range(5):
        g, p = gt[b].numpy(), pred[b].numpy()
        # scipy.spatial.procrustes: disparity = SSE after aligning both standardised shapes
        _, _, disparity = procrustes(g, p)
        gc = g - g.mean(0)
        sse = float(((aligned[b].numpy() - g) ** 2).sum())
        assert sse == pytest.approx(disparity * (gc**2).sum(), rel=1e-9)
        # direct reference: orthogonal_procrustes + closed-form scale
        pc = p - p.mean(0)
        Rop, sv = orthogonal_procrustes(pc, gc)
        assert np.linalg.det(Rop) > 0
        ref = pc @ Rop * (sv / (pc**2).sum()) + g.mean(0)
        assert got[b].item() == pytest.approx(np.linalg.norm(ref - g, axis=1).mean(), rel=1e-9)


# ---------------------------------------------------------------- gaze
def test_angular_error_known_angles_and_extremes():
    a = torch.tensor([[1.0, 0, 0]] * 5, dtype=D64)
    b = torch.tensor([[0, 2.0, 0], [1, 1, 0], [-1, 0, 0], [1, 1e-9, 0], [-1, 1e-9, 0]], dtype=D64)
    want = torch.tensor([90.0, 45.0, 180.0, math.degrees(1e-9), 180.0 - math.degrees(1e-9)], dtype=D64)
    torch.testing.assert_close(M.angular_error(a, b), want, atol=1e-12, rtol=0)
    # arccos would give exactly 0 for the 1e-9 rad case in float64; atan2 keeps it
    assert M.angular_error(a, b)[3] > 0
    # random directions: against arccos in a well-conditioned range, symmetric
    u, v = torch.randn(100, 3, dtype=D64), torch.randn(100, 3, dtype=D64)
    cos = (u * v).sum(-1) / u.norm(dim=-1) / v.norm(dim=-1)
    torch.testing.assert_close(M.angular_error(u, v), torch.rad2deg(torch.arccos(cos)), atol=1e-9, rtol=0)
    torch.testing.assert_close(M.angular_error(u, v), M.angular_error(v, u))
    # from gaze angles: yaw difference at pitch 0 is the angle
    z = torch.zeros(3, dtype=D64)
    yaw = torch.tensor([0.1, 0.5, 1.0], dtype=D64)
    got = M.angular_error(G.pitch_yaw_to_vector(z, z), G.pitch_yaw_to_vector(z, yaw))
    torch.testing.assert_close(got, torch.rad2deg(yaw))
    with pytest.raises(InputError, match="zero-length"):
        M.angular_error(a, torch.zeros_like(a))


# ---------------------------------------------------------------- likelihood
def test_bits_per_dim_and_offset():
    assert M.bits_per_dim(3072 * math.log(2) * 3.5, 3072) == pytest.approx(3.5)
    t = M.bits_per_dim(torch.tensor([784 * math.log(2)]), 784)
    torch.testing.assert_close(t, torch.tensor([1.0]))
    assert M.dequantization_offset(256, 1.0) == pytest.approx(8.0)
    assert M.dequantization_offset(256, 2.0) == pytest.approx(7.0)  # log2(K/2) for [-1, 1]
    # uniform density on [0, 1) of 8-bit data: 0 bpd continuous, + offset = 8 bits = uniform over 256 levels
    assert M.bits_per_dim(0.0, 10) + M.dequantization_offset(256) == pytest.approx(8.0)
    with pytest.raises(InputError):
        M.bits_per_dim(1.0, 0)


# ---------------------------------------------------------------- Frechet distance
def test_frechet_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for variances s^2
    fd = M.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
    assert fd == pytest.approx(9.0 + 1.0)
    # diagonal covariances: sum of the per-dim 1-D forms
    d1, d2 = torch.rand(6, dtype=D64) + 0.1, torch.rand(6, dtype=D64) + 0.1
    m1, m2 = torch.randn(6, dtype=D64), torch.randn(6, dtype=D64)
    ref = ((m1 - m2) ** 2).sum() + ((d1.sqrt() - d2.sqrt()) ** 2).sum()
    assert M.frechet_distance(m1, torch.diag(d1), m2, torch.diag(d2)) == pytest.approx(ref.item(), rel=1e-10)
    # commuting (shared eigenbasis) covariances
    Q = G.random_rotation(dtype=D64)
    S1, S2 = Q @ torch.diag(d1[:3]) @ Q.T, Q @ torch.diag(d2[:3]) @ Q.T
    ref = ((d1[:3].sqrt() - d2[:3].sqrt()) ** 2).sum()
    assert M.frechet_distance(m1[:3], S1, m1[:3], S2) == pytest.approx(ref.item(), rel=1e-9)


def test_frechet_general_symmetric_and_against_sqrtm():
    f1 = torch.randn(300, 8, dtype=D64)
    f2 = torch.randn(200, 8, dtype=D64) @ torch.randn(8, 8, dtype=D64) * 0.5 + 0.3
    mu1, s1 = M.gaussian_stats(f1)
    mu2, s2 = M.gaussian_stats(f2)
    np.testing.assert_allclose(s1.numpy(), np.cov(f1.numpy(), rowvar=False), rtol=1e-12)
    fd = M.frechet_distance(mu1, s1, mu2, s2)
    covmean = sqrtm(s1.numpy() @ s2.numpy()).real
    ref = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert fd == pytest.approx(ref, rel=1e-8)
    assert fd == pytest.approx(M.frechet_distance(mu2, s2, mu1, s1), rel=1e-10)
    assert M.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # rank-deficient covariances (N < D) stay finite
    mu3, s3 = M.gaussian_stats(torch.randn(4, 8, dtype=D64))
    assert math.isfinite(M.frechet_distance(mu1, s1, mu3, s3))
    with pytest.raises(InputError, match="at least 2"):
        M.gaussian_stats(torch.randn(1, 8))
    with pytest.raises(InputError, match="shape"):
        M.frechet_distance(mu1, s1, mu2[:3], s2)


# --------------------------------------------------------------------------------------------
# LPIPS from a local backbone checkpoint
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A torchvision AlexNet checkpoint with seeded random weights (the real ImageNet file is not offline)."""
    import torchvision

    pytest.importorskip("lpips")
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("lpips") / "alexnet.pth"
    torch.save(net.state_dict(), path)
    return path, net.features


def test_lpips_reads_the_local_backbone_and_scores_images(alexnet_file):
    from tenfold.core.metrics import lpips_distance, lpips_model

    path, features = alexnet_file
    model = lpips_model(path)
    # the file's backbone, not a fresh random one: lpips keeps each layer's index inside its slices
    torch.testing.assert_close(getattr(model.net.slice2, "3").weight, features[3].weight)
    torch.testing.assert_close(getattr(model.net.slice5, "10").bias, features[10].bias)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    assert torch.equal(lpips_distance(model, x, x), torch.zeros(3))
    d = lpips_distance(model, x, y)
    assert d.shape == (3,) and bool((d > 0).all())
    near = lpips_distance(model, x, (x + 0.02 * (y - x)))
    assert bool((near < d).all())  # closer images score lower
    with pytest.raises(InputError):
        lpips_distance(model, x, y[:2])


def test_lpips_refuses_what_is_not_an_alexnet_or_vgg(tmp_path):
    from tenfold.core.io import CheckpointError, DataError
    from tenfold.core.metrics import lpips_model

    pytest.importorskip("lpips")
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a torchvision AlexNet or VGG-16"):
        lpips_model(tmp_path / "x.pth")
    with pytest.raises(DataError):
        lpips_model(tmp_path / "missing.pth")


def test_empty_inputs_raise_and_mixed_precision_is_promoted():
    """mpjpe over 0 joints and psnr over 0 pixels returned NaN; float32 against float64 was a raw RuntimeError."""
    with pytest.raises(InputError, match="empty"):
        M.mpjpe(torch.zeros(2, 0, 3), torch.zeros(2, 0, 3))
    with pytest.raises(InputError, match="empty"):
        M.psnr(torch.zeros(2, 0), torch.zeros(2, 0))
    x = torch.rand(2, 3, 16, 16, dtype=D64)
    y = (x + 0.05).clamp(0, 1)
    torch.testing.assert_close(M.ssim(x.float(), y), M.ssim(x, y), atol=1e-5, rtol=0)
    p, q = torch.randn(2, 5, 3, dtype=D64), torch.randn(2, 5, 3, dtype=D64)
    torch.testing.assert_close(M.pa_mpjpe(p.float(), q), M.pa_mpjpe(p, q), atol=1e-5, rtol=0)
    torch.testing.assert_close(M.angular_error(p.float(), q), M.angular_error(p, q), atol=1e-3, rtol=0)


def test_half_precision_metrics_are_computed_in_float32_and_data_range_must_be_finite():
    """In float16 a PSNR above 48 dB overflowed to inf and the angle between 300-long vectors read 0; a NaN
    data_range returned NaN dB."""
    x = torch.full((1, 1, 4, 4), 0.5)
    y = x + 0.002
    assert float(M.psnr(x.half(), y.half())) == pytest.approx(float(M.psnr(x.half().float(), y.half().float())))
    assert math.isfinite(float(M.psnr(x.half(), y.half())))
    a, b = torch.tensor([300.0, 0.0, 0.0]), torch.tensor([300.0, 1.0, 0.0])
    assert float(M.angular_error(a.half(), b.half())) == pytest.approx(math.degrees(math.atan2(1, 300)), rel=1e-3)
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(InputError, match="data_range must be a finite number > 0"):
            M.psnr(x, y, data_range=bad)
        with pytest.raises(InputError, match="data_range and sigma must be finite numbers > 0"):
            M.ssim(torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.6), data_range=bad)
