"""LSGM's networks, objective and training loop: shapes, the N(0, I) start, the joint/disjoint passes' gradients,
exact resume, bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tenfold.core.io import CheckpointError, ConfigError, InputError
from tenfold.lsgm import PRESETS, Config
from tenfold.lsgm.data import load_split
from tenfold.lsgm.nets import SpectralReg
from tenfold.lsgm.objective import LSGMNet, lsgm_loss
from tenfold.lsgm.train import build, load_model, nelbo, train_stages
from tenfold.lsgm.vae import VAE, gaussian_entropy

SMOKE = PRESETS["smoke"]


def test_vae_shapes_and_groups():
    vae = VAE(image_size=28, pad=2, ch=4, levels=2, latent_ch=3, groups=2)
    x = torch.rand(2, 1, 28, 28).bernoulli()
    z0, mu, ls = vae.encode(x)
    assert z0.shape == mu.shape == (2, 6, 8, 8) and vae.latent_shape == (6, 8, 8)
    assert vae.decode(z0).shape == (2, 1, 28, 28)
    assert mu.abs().max() < 5 and ls.abs().max() < 5  # soft clamp
    with pytest.raises(InputError):
        VAE(image_size=28, pad=0, levels=3)


def test_gaussian_entropy_matches_torch():
    ls = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    ref = torch.distributions.Normal(torch.zeros_like(ls), ls.exp()).entropy().flatten(1).sum(1)
    assert torch.allclose(gaussian_entropy(ls), ref)


def test_lsgm_starts_as_the_normal_vae():
    """Zero output conv and alpha ~ 0: the DSM CE of a fresh LSGM is the N(0, I) CE, so NELBO(DSM) ~ the VAE's."""
    vae, score, sde = build(SMOKE)
    x = torch.rand(4096, 1, 8, 8).bernoulli()
    torch.manual_seed(0)
    with torch.no_grad():
        score.mix_logit.fill_(-math.inf)
        out = lsgm_loss(LSGMNet(vae, score), x, sde, scheme="ll_iw", time_eps=1e-3, kl_coef=1.0, train_vae=False)
        z0, mu, ls = vae.encode(x)
        kl = (0.5 * (mu ** 2 + (2 * ls).exp() - 1) - ls).flatten(1).sum(1).mean()
    ce_minus_h = float(out["ce"]) - float(gaussian_entropy(ls).mean())  # the DSM estimate of KL(q || N(0, I))
    assert abs(ce_minus_h - float(kl)) < 0.3, (ce_minus_h, float(kl))


@pytest.mark.parametrize("scheme,train_vae", [("ll_iw", True), ("drop_all_iw", True), ("ll_iw", False)])
def test_gradients_reach_the_right_parts(scheme, train_vae):
    vae, score, sde = build(SMOKE)
    torch.nn.init.normal_(score.net.out.weight, std=0.1)
    for p in vae.parameters():
        p.requires_grad_(train_vae)
    m = LSGMNet(vae, score)
    out = m(torch.rand(8, 1, 8, 8).bernoulli(), sde=sde, scheme=scheme, time_eps=1e-3, kl_coef=1.0, train_vae=train_vae)
    out["loss"].backward()
    assert score.mix_logit.grad is not None and score.net.out.weight.grad.abs().sum() > 0
    enc_grad = vae.q_heads[0].weight.grad
    assert (enc_grad is not None and enc_grad.abs().sum() > 0) == train_vae


def test_disjoint_q_pass_does_not_train_the_score_net():
    """drop_all_iw: the score net's gradient equals that of the p-pass alone (the q-pass sees detached weights)."""
    vae, score, sde = build(SMOKE)
    torch.nn.init.normal_(score.net.out.weight, std=0.1)
    m = LSGMNet(vae, score)
    x = torch.rand(8, 1, 8, 8).bernoulli()
    torch.manual_seed(1)
    m(x, sde=sde, scheme="drop_all_iw", time_eps=1e-3, kl_coef=1.0, train_vae=True)["loss"].backward()
    g_joint = score.net.out.weight.grad.clone()
    m.zero_grad()
    for p in vae.parameters():
        p.requires_grad_(False)
    torch.manual_seed(1)
    m(x, sde=sde, scheme="drop_all_iw", time_eps=1e-3, kl_coef=1.0, train_vae=False)["loss"].backward()
    assert torch.allclose(score.net.out.weight.grad, g_joint, atol=1e-6)


def test_spectral_reg_power_iteration_converges():
    conv = torch.nn.Conv2d(3, 5, 3)
    sr = SpectralReg(torch.nn.Sequential(conv))
    for _ in range(60):
        val = sr()
    ref = torch.linalg.matrix_norm(conv.weight.reshape(5, -1), ord=2)
    assert float(val) == pytest.approx(float(ref), rel=1e-4)


def test_train_resume_is_exact_and_outputs_a_loadable_model(tmp_path):
    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=4, stage2_steps=4, ckpt_every=2, log_every=1)
    full = train_stages(cfg, tmp_path / "full", split)
    # a run whose newest stage-2 checkpoint is at step 2 (the later one removed, as if killed), resumed,
    # ends with the same weights
    train_stages(cfg, tmp_path / "cut", split)
    for f in [*(tmp_path / "cut" / "stage2" / "checkpoints").glob("*"), *(tmp_path / "cut").glob("model.*")]:
        if "00000002" not in f.name:
            f.unlink()
    resumed = train_stages(cfg, tmp_path / "cut", split, resume=True)
    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "cut")
    for (k, v), (_, w) in zip(a.score.state_dict().items(), b.score.state_dict().items()):
        assert torch.equal(v, w), k
    assert full["loss_end"] == pytest.approx(resumed["loss_end"])
    r = nelbo(a, split.heldout[:16], ode=True, tol=1e-3)
    assert r["dsm"].shape == r["ode"].shape == (16,) and torch.isfinite(r["ode"]).all() and r["nfe"] > 0


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError):
        Config(sde="ve")
    with pytest.raises(ConfigError):
        Config(sde="geometric", scheme="drop_all_iw")
    with pytest.raises(ConfigError):
        build(dataclasses.replace(SMOKE, time_eps=0.0))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nothing")
    (tmp_path / "model.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_model(tmp_path)
