"""The image-pyramid parameterisation (``pyramid``, ``pyramid_decay``): x̂ = P_0 + Σ_k up(P_k), each level signed
and stepped on its own at lr·decay^k. Known answers, the adjoint, the box, exact equivalence with the pixel attack
when the coarse levels cannot move, and exact resume."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.engine import Checkpointer
from tenfold.core.io import CheckpointError, ConfigError
from tenfold.gradinversion import PRESETS, build, simulate_client
from tenfold.gradinversion.attack import pyramid_compose, pyramid_levels

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    net.input_size = (3, 8, 8)
    return net.eval()


def _problem() -> tuple[nn.Module, list[torch.Tensor], torch.Tensor, dict]:
    net = _net()
    x, y = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 2])
    return net, simulate_client(net, x, y), y, dict(num_images=2, mean=[0.5] * 3, std=[0.25] * 3, labels=y)


def test_compose_known_answers_and_start() -> None:
    """The start is the pixels themselves; a constant coarse level adds its constant everywhere (bilinear
    upsampling keeps constants); a 2 x 2 level upsamples to its 4 quadrants' values at the quadrants' centres."""
    X = torch.randn(2, 1, 3, 8, 8)
    P = pyramid_levels(X, 3)
    assert [tuple(q.shape[-2:]) for q in P] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert torch.equal(pyramid_compose(P), X)
    P[3].fill_(0.7)
    assert torch.allclose(pyramid_compose(P), X + 0.7)
    P[3].zero_()
    P[2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(2, 1, 3, 2, 2).clone()
    out = pyramid_compose(P) - X
    # the 8 x 8 grid's pixel (1.5, 1.5) is the centre of the top-left 4 x 4 quadrant: corners of the four pixels
    # around it read the quadrant values exactly where bilinear weights are 1 (pixels 0-1 border the edge, clamped)
    assert torch.allclose(out[..., 0, 0], torch.tensor(1.0)) and torch.allclose(out[..., 7, 7], torch.tensor(4.0))
    assert torch.allclose(out[..., 0, 7], torch.tensor(2.0)) and torch.allclose(out[..., 7, 0], torch.tensor(3.0))
    with pytest.raises(ConfigError, match="at least 2\\^4 = 16 px"):
        pyramid_levels(X, 4)


def test_compose_gradient_is_its_adjoint_gradcheck() -> None:
    """The attack maps the pixels' gradient to every level by backpropagating through pyramid_compose: that map is
    the exact adjoint (gradcheck in float64)."""
    P = [t.double().requires_grad_(True) for t in pyramid_levels(torch.randn(1, 2, 2, 8, 8), 2)]
    with torch.no_grad():
        for q in P[1:]:
            q.normal_()
    assert torch.autograd.gradcheck(lambda *ps: pyramid_compose(list(ps)), tuple(P))


def test_zero_decay_is_the_pixel_attack_exactly() -> None:
    """With pyramid_decay 0 the coarse levels never move (their learning rate is 0): the attack must be the pixel
    attack bit for bit, the group term, the box projection and the signed step included."""
    net, g, _, kw = _problem()
    base = dataclasses.replace(PRESETS["smoke"], iterations=8, warmup=2, labels="oracle", group_size=2)
    pix = build(base).run(net, g, **kw)
    pyr = build(dataclasses.replace(base, pyramid=3, pyramid_decay=0.0)).run(net, g, **kw)
    assert torch.equal(pyr.seeds, pix.seeds) and torch.equal(pyr.images, pix.images)
    moved = build(dataclasses.replace(base, pyramid=3)).run(net, g, **kw)
    assert not torch.equal(moved.seeds, pix.seeds)


def test_first_signed_step_moves_each_level_by_its_own_rate() -> None:
    """Known answer for one step. With only the l2 prior (alpha_grad = alpha_tv = 0) the pixels' gradient is
    2 α_l2 x / N, so level k's gradient is the adjoint of its upsampling applied to x. Adam's first step on a signed
    gradient is lr_k · sign, so x_1 = clamp(x_0 - Σ_k lr·decay^k · up(sign(adj_k(x_0)))), lr_k from warm-up 0."""
    net, g, y, kw = _problem()
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=1, warmup=0, labels="oracle", group_size=1, alpha_grad=0.0,
                              alpha_tv=0.0, alpha_l2=1.0, pyramid=2, pyramid_decay=0.5, lr=0.3)
    out = build(cfg).run(net, g, **kw).seeds[0]  # in [0, 1]
    x0 = torch.randn((1, 2, 3, 8, 8), generator=torch.Generator().manual_seed(cfg.seed))[0]
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    x0 = x0.clamp(lo, hi)
    step = -cfg.lr * torch.sign(x0)
    for k in (1, 2):
        q = torch.zeros(2, 3, 8 >> k, 8 >> k, requires_grad=True)
        (F.interpolate(q, size=(8, 8), mode="bilinear", align_corners=False) * x0).sum().backward()
        step = step - cfg.lr * cfg.pyramid_decay ** k * F.interpolate(torch.sign(q.grad), size=(8, 8),
                                                                      mode="bilinear", align_corners=False)
    want = ((x0 + step).clamp(lo, hi) * 0.25 + 0.5).clamp(0, 1)
    assert torch.allclose(out, want, atol=1e-6)


def test_every_level_takes_a_signed_step_whatever_the_loss_scale() -> None:
    """Each level is signed before Adam, so the run does not depend on the loss's scale: the l2 prior alone at
    weight 1 and at 1e-12 (gradients far below Adam's eps of 1e-8, where an unsigned level would barely move) give
    the same iterates over several steps."""
    net, g, _, kw = _problem()
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=5, warmup=0, labels="oracle", group_size=1, alpha_grad=0.0,
                              alpha_tv=0.0, alpha_l2=1.0, pyramid=2, pyramid_decay=0.5)
    big = build(cfg).run(net, g, **kw).seeds
    small = build(dataclasses.replace(cfg, alpha_l2=1e-12)).run(net, g, **kw).seeds
    assert torch.allclose(big, small, atol=1e-6)
    assert not torch.allclose(big, build(dataclasses.replace(cfg, pyramid=0)).run(net, g, **kw).seeds, atol=1e-3)


def test_box_holds_and_the_levels_stay_in_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every iterate lies in the valid pixel box and the levels compose to it (P_0 absorbs the clamp): a large
    learning rate drives many pixels into the box's walls, and each gradient pass composes levels inside the box."""
    attack_mod = importlib.import_module("tenfold.gradinversion.attack")  # the package re-exports attack()
    composites: list[torch.Tensor] = []
    real = attack_mod.pyramid_compose

    def spy(P):  # noqa: ANN001, ANN202
        out = real(P)
        if bool(P[0].any()):  # the gradient pass (the projection composes the coarse levels alone, P_0 = 0)
            composites.append(out.detach().clone())
        return out

    monkeypatch.setattr(attack_mod, "pyramid_compose", spy)
    net, g, _, kw = _problem()
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=6, warmup=0, labels="oracle", group_size=1, pyramid=2,
                              pyramid_decay=1.0, lr=2.0)
    res = build(cfg).run(net, g, **kw)
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert len(composites) == 6
    for c in composites[1:]:  # after the first step every pass starts from a projected iterate
        assert float(c.min()) >= lo - 1e-5 and float(c.max()) <= hi + 1e-5
    last = composites[-1][0] * 0.25 + 0.5  # the iterate the last gradient pass saw, in [0, 1]
    walls = float(((last <= 1e-5) | (last >= 1 - 1e-5)).float().mean())
    assert walls > 0.01  # the walls were hit, so the projection was exercised
    assert res.seeds.shape == (1, 2, 3, 8, 8)


def test_resume_with_pyramid_is_exact_and_refuses_another_setting(tmp_path) -> None:
    net, g, _, kw = _problem()
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=9, warmup=2, labels="oracle", group_size=2, pyramid=2)
    full = build(cfg).run(net, g, **kw)

    class Killed(Exception):
        pass

    def kill(it, row):  # noqa: ANN001, ANN202
        if it == 6:
            raise Killed

    ckpt = Checkpointer(tmp_path, method="gradinversion-attack")
    with pytest.raises(Killed):
        build(cfg).run(net, g, **kw, log=kill, log_every=1, checkpointer=ckpt, ckpt_every=4)
    again = build(cfg).run(net, g, **kw, checkpointer=ckpt, ckpt_every=4, resume=True)
    assert torch.equal(again.seeds, full.seeds) and torch.equal(again.images, full.images)
    with pytest.raises(CheckpointError, match="image pyramid of 2 coarser levels, this attack 0"):
        build(dataclasses.replace(cfg, pyramid=0)).run(net, g, **kw, checkpointer=ckpt, resume=True)


@pytest.mark.parametrize("bad", [dict(pyramid=-1), dict(pyramid_decay=float("nan")), dict(pyramid_decay=-0.5)])
def test_bad_pyramid_settings_are_one_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        build(dataclasses.replace(PRESETS["smoke"], **bad))
