"""NViT's losses against closed forms: the KD term is KL(teacher || student) at temperature T with PyTorch's
element-mean reduction (its direction, its temperature and its gradient), and the total is kd * KL + ce * CE_ls.
No other test reached them: reversing the KL or dropping T on the student changed no result of the suite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tenfold.nvit.losses import kd_kl, nvit_loss

D64 = torch.float64


def _approx(x: float):
    """pytest.approx at a tight tolerance (closed forms in float64)."""
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_kd_kl_is_teacher_to_student_at_temperature_on_a_two_class_case() -> None:
    """Teacher uniform, student logits (ln 3, 0): at T = 1 p_s = (3/4, 1/4) and KL(p_t || p_s) = 0.5 ln(4/3), the
    element mean over B * K = 2 halves it; at T = 2 p_s = (sqrt 3, 1) / (sqrt 3 + 1). Kills the reversed KL
    (KL(p_s || p_t) = 0.75 ln 1.5 + 0.25 ln 0.5) and a student left at T = 1."""
    torch.set_num_threads(1)
    s = torch.tensor([[math.log(3.0), 0.0]], dtype=D64)
    t = torch.zeros(1, 2, dtype=D64)
    assert float(kd_kl(s, t, 1.0)) == _approx(0.25 * math.log(4.0 / 3.0))
    r3 = math.sqrt(3.0)
    p1, p2 = r3 / (r3 + 1.0), 1.0 / (r3 + 1.0)
    want = 0.5 * (0.5 * math.log(0.5 / p1) + 0.5 * math.log(0.5 / p2))
    assert float(kd_kl(s, t, 2.0)) == _approx(want)
    # the teacher's logits are divided by T too: a uniform student against teacher (ln 3, 0) at T = 2
    q1, q2 = p1, p2
    want_t = 0.5 * (q1 * math.log(q1 / 0.5) + q2 * math.log(q2 / 0.5))
    assert float(kd_kl(t, s, 2.0)) == _approx(want_t)


def test_kd_kl_matches_torch_kl_div_and_its_gradient_is_the_softmax_difference() -> None:
    """Random logits: equal to F.kl_div(log q_s, log p_t) summed over the B * K elements and divided by B * K (the
    reference's element mean, whence its 1e5 coefficient), > 0, 0 for equal logits; d KL / d s = (p_s - p_t) / (T B K)
    in closed form."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    B, K, T = 4, 7, 3.0
    s = torch.randn(B, K, generator=g, dtype=D64).requires_grad_(True)
    t = 2.0 * torch.randn(B, K, generator=g, dtype=D64)
    kl = kd_kl(s, t, T)
    ref = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="sum", log_target=True) / (B * K)
    torch.testing.assert_close(kl, ref, atol=1e-15, rtol=1e-12)
    assert float(kl.detach()) > 0 and float(kd_kl(t, t, T)) == _approx(0.0)
    (grad,) = torch.autograd.grad(kl, s)
    want = (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1)) / (T * B * K)
    torch.testing.assert_close(grad, want, atol=1e-15, rtol=1e-10)


def test_nvit_loss_is_kd_coef_times_kl_plus_ce_coef_times_smoothed_ce() -> None:
    """The total is kd_coef * KL_T + ce_coef * CE(label smoothing); without a teacher (before the first prune step)
    or with kd_coef 0 it is the CE term alone, and the parts report both terms."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(5, 4, generator=g, dtype=D64), torch.randn(5, 4, generator=g, dtype=D64)
    y = torch.randint(0, 4, (5,), generator=g)
    ce = F.cross_entropy(s, y, label_smoothing=0.2)
    loss, parts = nvit_loss(s, y, t, kd_coef=7.0, temperature=2.5, ce_coef=0.5, label_smoothing=0.2)
    torch.testing.assert_close(loss, 7.0 * kd_kl(s, t, 2.5) + 0.5 * ce, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["kd"], kd_kl(s, t, 2.5))
    for teacher, coef in ((None, 7.0), (t, 0.0)):
        alone, p = nvit_loss(s, y, teacher, kd_coef=coef, temperature=2.5, ce_coef=0.5, label_smoothing=0.2)
        torch.testing.assert_close(alone, 0.5 * ce)
        assert "kd" not in p
