"""LSGM's networks, objective and training loop: shapes, the N(0, I) start, the joint/disjoint passes' gradients,
exact resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from tenfold.core.io import CheckpointError, ConfigError, DataError, InputError
from tenfold.lsgm import PRESETS, Config
from tenfold.lsgm.data import image_keys, load_split
from tenfold.lsgm.nets import SpectralReg
from tenfold.lsgm.objective import LSGMNet, lsgm_loss
from tenfold.lsgm.train import build, generate, load_model, nelbo, stage2_optimizer, train_stages
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
    """With alpha = 0 the mixed score is the Normal score whatever the network says, and the DSM CE estimate is the
    N(0, I) CE: CE - H matches the VAE's analytic KL (this checks the estimator; the fresh model's zero output conv
    is not what makes it hold)."""
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


@pytest.mark.parametrize("scheme,train_vae", [("ll_iw", True), ("drop_all_iw", True), ("drop_sigma2t_iw", True),
                                              ("ll_iw", False)])
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
    assert float(val.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)


def test_spectral_reg_survives_a_zero_initialised_layer():
    """The score net's output conv starts at zero (LSGM starts as the N(0, I) VAE). Its power-iteration vectors used
    to normalise to 0 at the first call and stay 0, so the layer never counted; they now keep their last value
    until the weight is nonzero, and the estimate converges to sigma_max once it is."""
    conv = torch.nn.Conv2d(3, 5, 3)
    torch.nn.init.zeros_(conv.weight)
    sr = SpectralReg(torch.nn.Sequential(conv))
    assert float(sr().detach()) == 0.0 and float(sr.u0.norm()) == pytest.approx(1.0)
    with torch.no_grad():
        conv.weight.normal_()
    for _ in range(60):
        val = sr()
    ref = torch.linalg.matrix_norm(conv.weight.reshape(5, -1), ord=2)
    assert float(val.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)


def test_spectral_reg_counts_convs_and_norm_layers_only():
    """The spec's (and the official sr_utils') SR: sigma_max of every conv + max |gamma| of every norm layer; the
    score net's time MLP (Linear layers) used to be counted too. ``convs=False`` (the CIFAR-10 FID recipe's score
    net) keeps the norm layers alone."""
    torch.manual_seed(0)
    conv, lin, gn = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(6, 7), torch.nn.GroupNorm(2, 4)
    with torch.no_grad():
        gn.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.1]))
    model = torch.nn.ModuleList([conv, lin, gn])
    sr = SpectralReg(model)
    for _ in range(60):
        val = sr()
    ref = torch.linalg.matrix_norm(conv.weight.reshape(4, -1), ord=2) + 2.0
    assert float(val.detach()) == pytest.approx(float(ref.detach()), rel=1e-4)
    assert float(SpectralReg(model, convs=False)().detach()) == pytest.approx(2.0)
    from tenfold.lsgm.config import PRESETS

    assert not PRESETS["cifar10"].sr_score_convs and not PRESETS["paper-cifar10"].sr_score_convs
    assert PRESETS["omniglot"].sr_score_convs


def test_cifar_validation_and_held_out_images_are_disjoint():
    """CIFAR splits used the same images as validation and as held out (perm[:n_val] twice), so anything chosen on
    validation was then scored on the images it was chosen on."""
    split = load_split("cifar10-mini", 0, image_size=32, binarize=False)
    assert (len(split.train), len(split.val), len(split.heldout_grey)) == (400, 50, 50)
    va, ho, tr = split.val.flatten(1), split.heldout_grey.flatten(1), split.train.flatten(1)
    assert not bool((torch.cdist(va, ho) == 0).any()) and not bool((torch.cdist(tr, ho) == 0).any())
    assert not bool((torch.cdist(tr, va) == 0).any())


def test_the_nll_recipe_trains_with_time_eps_zero(tmp_path):
    """The paper-cifar10-nll preset's objective (geometric VPSDE, ll_uniform, time_eps 0: sigma2(0) = sigma2_min > 0)
    at smoke size: both stages train to finite losses."""
    nll = PRESETS["paper-cifar10-nll"]
    assert (nll.sde, nll.scheme, nll.time_eps, nll.groups, nll.latent_ch) == ("geometric", "ll_uniform", 0.0, 4, 45)
    cfg = dataclasses.replace(SMOKE, sde=nll.sde, scheme=nll.scheme, time_eps=nll.time_eps, stage1_steps=6,
                              stage2_steps=6, ckpt_every=100)
    out = train_stages(cfg, tmp_path / "run", load_split("digits", 0, image_size=8))
    assert all(math.isfinite(v) for v in out.values() if isinstance(v, float)), out


def test_without_the_mix_every_trainable_parameter_gets_a_gradient():
    """DDP (no find_unused_parameters) waits for a gradient of every trainable parameter; with ``mixed=False`` the
    mixing logit takes no part in the loss, and torchrun training failed at its second step. It is frozen now."""
    cfg = dataclasses.replace(SMOKE, mixed=False)
    vae, score, sde = build(cfg, 1)
    m = LSGMNet(vae, score)
    x = (torch.rand(4, 1, 8, 8) > 0.5).float()
    m(x, sde=sde, scheme="ll_iw", time_eps=1e-2, kl_coef=1.0, train_vae=True)["loss"].backward()
    unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [] and not score.mix_logit.requires_grad
    assert build(SMOKE, 1)[1].mix_logit.requires_grad  # the mixed score still learns its logits


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
    r = nelbo(a, split.heldout[:4], ode=True, tol=1e-2)
    assert r["dsm"].shape == r["ode"].shape == (4,) and torch.isfinite(r["ode"]).all() and r["nfe"] > 0
    with pytest.raises(ConfigError, match="n=0"):  # was a bare range() ValueError
        generate(a, 0, tol=1e-3)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError):
        Config(sde="ve")
    with pytest.raises(ConfigError):
        Config(sde="geometric", scheme="drop_all_iw")
    with pytest.raises(ConfigError, match="time_scale"):
        Config(time_scale=0.0)
    with pytest.raises(ConfigError, match="sr_score"):  # used only in stage 2: caught before stage 1 runs
        Config(sr_score=float("nan"))
    with pytest.raises(ConfigError, match="lr_score"):
        Config(lr_score=-1e-3)
    with pytest.raises(ConfigError, match="ode_tol"):
        Config(ode_tol=0.0)
    with pytest.raises(ConfigError, match="ode_tol must be < 1"):
        Config(ode_tol=1.0)
    # the floor of each VAE cosine schedule: above its lr it failed in the engine, mid-run; lr 0 divided by zero
    with pytest.raises(ConfigError, match="lr_vae1 must be > 0 and lr_vae1_min at most lr_vae1"):
        Config(lr_vae1_min=0.02)
    with pytest.raises(ConfigError, match="lr_vae2 must be > 0 and lr_vae2_min at most lr_vae2"):
        Config(lr_vae2=0.0)
    for kw, msg in (({"groups": 0}, "groups must be >= 1"), ({"latent_ch": 0}, "latent_ch"),  # were torch errors
                    ({"sde_steps": 0}, "sde_steps"), ({"num_levels": 1}, "num_levels must be >= 2"),
                    ({"score_mult": ()}, "score_mult")):
        with pytest.raises(ConfigError, match=msg):
            Config(**kw)
    with pytest.raises(ConfigError):
        build(dataclasses.replace(SMOKE, time_eps=0.0))
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nothing")
    (tmp_path / "model.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_model(tmp_path)


def test_stage2_optimizer_groups_hold_every_parameter_once():
    """Score net, mixing logits (own lr) and, end to end only, the VAE: every trainable parameter exactly once."""
    vae, score, _ = build(SMOKE)
    for vae_part in (None, vae):
        opt = stage2_optimizer(score, vae_part, lr_score=1e-3, lr_mix=5e-2, lr_vae=1e-4, weight_decay=0.0)
        seen = [id(p) for g in opt.param_groups for p in g["params"]]
        want = [*score.parameters(), *(vae.parameters() if vae_part is not None else [])]
        assert sorted(seen) == sorted(id(p) for p in want)
        mix_group = [g for g in opt.param_groups if any(p is score.mix_logit for p in g["params"])]
        assert len(mix_group) == 1 and mix_group[0]["lr"] == 5e-2 and len(mix_group[0]["params"]) == 1
        # Adam's first step moves the logit by ~lr (|g| >> eps): the mixing coefficient can leave its init
        opt.zero_grad()
        before = score.mix_logit.detach().clone()
        score.mix_logit.grad = torch.ones_like(score.mix_logit)
        opt.step()
        assert torch.allclose(before - score.mix_logit.detach(), torch.full_like(before, 5e-2), rtol=1e-3)


def test_normal_prior_baseline_and_device_option(tmp_path):
    """prior=normal: stage 2 trains the VAE alone (no score net saved) and changes its weights; evaluating on a
    device that is not there is a clear ConfigError."""
    from tenfold.lsgm.train import evaluate

    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=3, stage2_steps=3, prior="normal", ckpt_every=3)
    train_stages(dataclasses.replace(cfg, stage2_steps=0), tmp_path / "s1", split)
    train_stages(cfg, tmp_path / "s2", split)
    a, b = load_model(tmp_path / "s1"), load_model(tmp_path / "s2")
    assert b.score is None and (tmp_path / "s2" / "stage2" / "metrics.jsonl").is_file()
    assert any(not torch.equal(v, w) for v, w in zip(a.vae.state_dict().values(), b.vae.state_dict().values()))
    with pytest.raises(ConfigError):
        Config(prior="flow")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            evaluate(cfg, tmp_path, checkpoint=str(tmp_path / "s2"), limit=8, fd_samples=0, device="cuda")
    out = evaluate(cfg, tmp_path, checkpoint=str(tmp_path / "s2"), limit=8, fd_samples=0, device="cpu")
    assert math.isfinite(out["nelbo_vae_nats"])
    for kw in ({"limit": -3}, {"fd_samples": -1}):  # a negative limit used to drop held-out images silently
        with pytest.raises(ConfigError, match="must be >= 0"):
            evaluate(cfg, tmp_path, checkpoint=str(tmp_path / "s2"), device="cpu", **{"limit": 8, **kw})
    with pytest.raises(ConfigError, match="bad device 'gpu'"):
        evaluate(cfg, tmp_path, checkpoint=str(tmp_path / "s2"), limit=8, fd_samples=0, device="gpu")
    with pytest.raises(ConfigError, match="sampler must be ode or sde, got 'euler'"):  # used to run the SDE sampler
        generate(b, 2, tol=1e-3, sampler="euler")
    from tenfold.core.io import DataError

    with pytest.raises(DataError, match="--data cifar10-mini does not fit this model") as e:  # colour vs grey
        evaluate(cfg, tmp_path, checkpoint=str(tmp_path / "s2"), limit=8, fd_samples=0, data="cifar10-mini")
    assert "--set" not in str(e.value)  # training advice does not apply to a trained model


def _digit_folder(root, n: int, *, classes: bool, scale: int = 2, rgb: bool = False):
    """The first n real scikit-learn digits saved as PNGs, upscaled ``scale`` times (a user's image folder); ``rgb``:
    tinted colour images."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(n):
        a = np.kron(np.rint(d.images[i] * 255 / 16).astype(np.uint8), np.ones((scale, scale), np.uint8))
        sub = root / (str(d.target[i]) if classes else "")
        sub.mkdir(parents=True, exist_ok=True)
        # rgb: tinted, so the colour is real (R = G = B images count as grey since session 22)
        Image.fromarray(np.stack([a, a // 2, a // 3], -1) if rgb else a).save(sub / f"{i}.png")
    return d


def _noise_folder(root, n: int) -> None:
    """n seeded uniform-noise 8x8 grey PNGs in two class folders (images no model here trained on)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / str(i % 2)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(sub / f"{i}.png")


def test_own_image_folder_split_is_seeded_disjoint_and_resized(tmp_path):
    """folder:PATH gets the generic split: 75 / 5 / 20 %, a partition of the images, the same for the same seed;
    16 px images are area-averaged to image_size 8, which here gives back the original 8 x 8 digits."""
    d = _digit_folder(tmp_path / "imgs", 100, classes=True)
    a = load_split(f"folder:{tmp_path / 'imgs'}", 0, image_size=8)
    assert (len(a.train), len(a.val), len(a.heldout)) == (75, 5, 20)
    assert "resized 16 -> 8 px" in a.description
    real = torch.from_numpy((d.images[:100] * 255 / 16).round() / 255).float()
    # every split image is one of the 100 digits, each used once (train + val + held out partition them)
    ref = real.flatten(1)
    got = torch.cat([a.train, a.val, a.heldout_grey]).flatten(1)
    match = torch.cdist(got, ref).argmin(1)
    assert torch.allclose(got, ref[match], atol=1e-6) and len(set(match.tolist())) == 100
    assert torch.equal(a.heldout, (a.heldout == 1).float())  # binarised once
    b, c = load_split(f"folder:{tmp_path / 'imgs'}", 0, image_size=8), load_split(f"folder:{tmp_path / 'imgs'}", 1,
                                                                                image_size=8)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)


def test_evaluate_on_another_dataset_holds_out_all_of_it(tmp_path):
    """evaluate --data OTHER scores every image of OTHER (the model never saw it; it used to score only OTHER's own
    held-out fifth, 500 of cifar10-test's 5,000); --data naming the training data keeps its held-out split."""
    from tenfold.lsgm.train import evaluate

    _digit_folder(tmp_path / "other", 30, classes=True, scale=1)
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=0, ckpt_every=2)
    train_stages(cfg, tmp_path / "run", load_split("digits", 0, image_size=8))
    kw = dict(checkpoint=str(tmp_path / "run"), fd_samples=0, ode=False)
    # the folder holds sklearn's first 30 digits: 18 of them are the model's training images (session 21: they
    # were scored as held out); the others, and every image of a folder of noise, are held out
    other = evaluate(cfg, tmp_path / "e1", data=f"folder:{tmp_path / 'other'}", **kw)
    train_keys = image_keys(load_split("digits", 0, image_size=8).train)
    n_train = sum(k in train_keys for k in image_keys(load_split(f"folder:{tmp_path / 'other'}", 0, image_size=8,
                                                                 all_heldout=True).heldout_grey))
    assert n_train == 18 and other["n"] == 12 and "the other 18 are the model's training images" in other["split"]
    _noise_folder(tmp_path / "noise", 30)
    noise = evaluate(cfg, tmp_path / "e5", data=f"folder:{tmp_path / 'noise'}", **kw)
    assert noise["n"] == 30 and "all 30 images held out" in noise["split"]
    assert evaluate(cfg, tmp_path / "e2", data="digits", **kw)["n"] == 360 == evaluate(cfg, tmp_path / "e3", **kw)["n"]
    assert len(load_split("digits", 0, image_size=8, all_heldout=True).heldout) == 1797
    # the training data spelled another way is still the training data (" Digits" scored all 1,797 images,
    # training ones included, as held out)
    assert evaluate(cfg, tmp_path / "e4", data=" Digits", **kw)["n"] == 360


def test_a_relative_folder_is_recorded_absolute_and_its_training_images_are_never_held_out(tmp_path, monkeypatch):
    """`train --set data=folder:myd` stored "myd": evaluate from another directory failed, or read another myd; and
    `--data folder:/abs/myd` (or a copy of it) counted as another dataset, all of whose images, the 30 training
    ones included, were scored as held out."""
    import shutil

    from tenfold.lsgm.train import evaluate, train

    _digit_folder(tmp_path / "w" / "myd", 40, classes=True, scale=1)
    shutil.copytree(tmp_path / "w" / "myd", tmp_path / "copy")
    (tmp_path / "w" / "run").mkdir()
    (tmp_path / "w" / "run" / "config.json").write_text(json.dumps({"config": {"data": "folder:myd"}}))
    monkeypatch.chdir(tmp_path / "w")
    cfg = dataclasses.replace(SMOKE, data="folder:myd", stage1_steps=2, stage2_steps=2, ckpt_every=2, ode_tol=0.05,
                              batch_size=8)
    train(cfg, tmp_path / "w" / "run")
    want = f"folder:{tmp_path / 'w' / 'myd'}"
    assert json.loads((tmp_path / "w" / "run" / "config.json").read_text())["config"]["data"] == want
    monkeypatch.chdir(tmp_path)
    kw = dict(checkpoint=str(tmp_path / "w" / "run"), fd_samples=0, ode=False)
    assert evaluate(cfg, tmp_path / "e1", **kw)["n"] == 8  # its own held-out fifth, found from here
    assert evaluate(cfg, tmp_path / "e2", data=want, **kw)["n"] == 8  # the same folder, named absolute
    out = evaluate(cfg, tmp_path / "e3", data=f"folder:{tmp_path / 'copy'}", **kw)  # a copy: val + held out
    assert out["n"] == 10 and "the other 30 are the model's training images" in out["split"]
    # session 22: grey images on a colour model were a conv traceback (the other way round was one line already)
    _digit_folder(tmp_path / "rgb", 40, classes=True, scale=1, rgb=True)
    colour = dataclasses.replace(cfg, data=f"folder:{tmp_path / 'rgb'}", binarize=False)
    train(colour, tmp_path / "crun")
    with pytest.raises(DataError, match="has 1-channel images but the model was trained on 3-channel ones"):
        evaluate(colour, tmp_path / "e6", **{**kw, "checkpoint": str(tmp_path / "crun")}, data="digits")
    # session 22 review: images added to the training folder after training re-split it, and evaluate scored
    # training images as held out without a word; the train run recorded the folder's digest
    shutil.copy(tmp_path / "w" / "myd" / "0" / "0.png", tmp_path / "w" / "myd" / "0" / "extra.png")
    with pytest.raises(InputError, match="^data .*myd has changed since the model was trained.*evaluate needs it"):
        evaluate(cfg, tmp_path / "e7", **kw)
    from tenfold.core.io import TenfoldWarning

    with pytest.warns(TenfoldWarning, match="training images left out of --data .* are read from it as it is now"):
        evaluate(cfg, tmp_path / "e8", data=f"folder:{tmp_path / 'copy'}", **kw)  # another dataset: a warning
    with pytest.raises(InputError, match="has changed since the run started"):
        train(dataclasses.replace(cfg, data=want), tmp_path / "w" / "run", resume=True)  # the saved config


def test_sample_and_evaluate_run_with_the_checkpoints_config(tmp_path, capsys):
    """sample and evaluate use the config saved with the model: --set and --preset are refused (they were silently
    ignored while config.json recorded them), and the run's config.json holds the checkpoint's config."""
    from tenfold import cli

    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=2, ckpt_every=2, ode_tol=0.05)
    train_stages(cfg, tmp_path / "run", load_split("digits", 0, image_size=8))
    base = ["lsgm", "sample", "--checkpoint", str(tmp_path / "run"), "--num-samples", "2", "--out"]
    assert cli.main([*base, str(tmp_path / "s1"), "--set", "ode_tol=0.1"]) == 2
    assert "--preset and --set would not apply" in capsys.readouterr().err
    assert cli.main(["lsgm", "evaluate", "--preset", "mnist", "--checkpoint", str(tmp_path / "run"), "--out",
                     str(tmp_path / "e1")]) == 2
    assert not (tmp_path / "s1").exists() and not (tmp_path / "e1").exists()
    assert cli.main([*base, str(tmp_path / "s2"), "--json"]) == 0
    saved = json.loads((tmp_path / "s2" / "config.json").read_text())
    assert saved["config"]["ode_tol"] == 0.05 and saved["config_from"] == str(tmp_path / "run")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tol"] == 0.05


def test_encoder_outputs_stay_float32_under_bf16_autocast():
    """bf16 is for inside the networks: the posterior parameters, z0 and hence the analytic entropy stay fp32."""
    vae = build(SMOKE, 1)[0]
    x = (torch.rand(3, 1, 8, 8) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z0, mu, ls = vae.encode(x)
    assert z0.dtype == mu.dtype == ls.dtype == torch.float32
    assert gaussian_entropy(ls).dtype == torch.float32


def test_own_image_folder_bad_inputs(tmp_path):
    from tenfold.core.io import DataError

    _digit_folder(tmp_path / "few", 10, classes=False)
    with pytest.raises(DataError, match="10 images are too few"):
        load_split(f"folder:{tmp_path / 'few'}", 0, image_size=8)
    _digit_folder(tmp_path / "rgb", 30, classes=False, rgb=True)
    with pytest.raises(DataError, match=r"colour images \(e\.g\. 0\.png\) but binarize=True"):  # names one
        load_split(f"folder:{tmp_path / 'rgb'}", 0, image_size=8)
    # session 22 review: a grey palette PNG among grey ones (or grey photos saved as RGB) made the folder colour,
    # and the advice was a 3-channel model for grey digits; grey content now reads as grey for binarize=True
    from PIL import Image

    _digit_folder(tmp_path / "pal", 30, classes=False)
    Image.open(tmp_path / "pal" / "3.png").convert("P").save(tmp_path / "pal" / "3.png")
    pal = load_split(f"folder:{tmp_path / 'pal'}", 0, image_size=8)
    assert pal.train.shape[1:] == (1, 8, 8) and "colour files with grey content read as grey" in pal.description
    with pytest.raises(DataError, match="2-channel images; lsgm takes grey \\(1\\) or colour \\(3\\)"):
        from tenfold.lsgm import split_tensors

        split_tensors(torch.rand(40, 2, 8, 8), image_size=8)
    assert load_split(f"folder:{tmp_path / 'rgb'}", 0, image_size=8, binarize=False).train.shape[1:] == (3, 8, 8)
    import numpy as np
    from PIL import Image

    (tmp_path / "wide").mkdir()
    for i in range(25):
        Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "wide" / f"{i}.png")
    with pytest.raises(DataError, match="12x8; lsgm needs square images"):
        load_split(f"folder:{tmp_path / 'wide'}", 0, image_size=8)


def test_train_and_evaluate_on_a_one_class_folder(tmp_path):
    """End to end on a user's flat folder: training runs, the NELBO is finite, and FD-CNN (which needs class labels
    to train its feature net) says it was skipped instead of reporting a distance in untrained features."""
    from tenfold.lsgm.train import evaluate

    _digit_folder(tmp_path / "mine", 60, classes=False, scale=1)
    cfg = dataclasses.replace(SMOKE, data=f"folder:{tmp_path / 'mine'}", stage1_steps=3, stage2_steps=3,
                              ckpt_every=3)
    split = load_split(cfg.data, 0, image_size=8)
    train_stages(cfg, tmp_path / "run", split)
    out = evaluate(cfg, tmp_path / "ev", checkpoint=str(tmp_path / "run"), limit=4, fd_samples=8, ode=False)
    assert math.isfinite(out["nelbo_dsm_nats"]) and out["FD-CNN_mean"].startswith("skipped: the data has one class")
    assert (tmp_path / "ev" / "samples.png").is_file()


def test_torchrun_two_processes_share_one_run_dir(tmp_path):
    """`torchrun --nproc-per-node 2 -m tenfold lsgm train`: every rank writes into the one run directory rank 0 made
    (each picked its own `out-k` before, and the launch hung), one JSON result, a loadable model and sample grid."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "earlier.txt").write_text("a run dir in use: the new run goes to run-1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "tenfold", "lsgm", "train", "--preset", "smoke", "--set",
         "stage1_steps=4", "--set", "stage2_steps=4", "--set", "ckpt_every=4", "--out", str(tmp_path / "run"),
         "--json"], env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["run_dir"] == str(tmp_path / "run-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run-1"]
    assert load_model(tmp_path / "run-1").score is not None and (tmp_path / "run-1" / "samples.png").is_file()
    assert len((tmp_path / "run-1" / "stage2" / "metrics.jsonl").read_text().splitlines()) >= 1
    # a one-process verb under torchrun: rank 0 samples alone (every rank sampling into one file raced before)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "tenfold", "lsgm", "sample", "--checkpoint", str(tmp_path / "run-1"),
         "--num-samples", "6", "--out", str(tmp_path / "smp"), "--json"],  # torchrun's parser refused "--n 6"
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["run_dir"] == str(tmp_path / "smp") and results[0]["nfe"] > 0
    assert results[0]["num_samples"] == 6
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "smp" / "samples.safetensors"))["mean"].shape[0] == 6
    assert "rank 0 runs it" in proc.stderr and (tmp_path / "smp" / "samples.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run-1", "smp"]


def test_accum_keeps_the_schedules_in_optimizer_steps(tmp_path, monkeypatch):
    """With accum = k every micro-step of an optimizer step sees that step's KL weight (the schedule counts
    optimizer steps, not micro-steps), in both stages; accum = 0 and a batch it does not divide are refused."""
    from tenfold.lsgm import objective

    seen: list[tuple[str, float]] = []
    vae_fwd, lsgm_fwd = objective.VAEStage.forward, objective.LSGMNet.forward

    def rec_vae(self, x, kl_coef, **kw):
        seen.append(("vae", kl_coef))
        return vae_fwd(self, x, kl_coef, **kw)

    def rec_lsgm(self, x, **kw):
        seen.append(("lsgm", kw["kl_coef"]))
        return lsgm_fwd(self, x, **kw)

    monkeypatch.setattr(objective.VAEStage, "forward", rec_vae)
    monkeypatch.setattr(objective.LSGMNet, "forward", rec_lsgm)
    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=4, stage2_steps=4, batch_size=8, kl_anneal=1.0, kl_start2=0.2,
                              kl_anneal2=1.0, ckpt_every=0, log_every=1)
    train_stages(cfg, tmp_path / "a1", split)
    one, seen[:] = list(seen), []
    train_stages(dataclasses.replace(cfg, accum=2), tmp_path / "a2", split)
    assert len(one) == 8 and len(set(k for _, k in one)) > 2  # the KL weights move within each stage
    assert seen == [row for row in one for _ in range(2)]
    with pytest.raises(ConfigError, match="accum"):
        dataclasses.replace(cfg, accum=0)
    with pytest.raises(ConfigError, match="divisible"):
        train_stages(dataclasses.replace(cfg, batch_size=6, accum=4), tmp_path / "a3", split)


def test_sampling_and_nelbo_create_no_tensor_on_the_default_device(tmp_path, on_meta_default):
    """Sampling (ODE and ancestral SDE, binarised draws) and the NELBO (DSM and ODE with its Hutchinson probe)
    create every tensor on the model's device or, for seeded draws, on the CPU on purpose. Under
    ``torch.set_default_device("meta")`` a factory call without ``device=`` makes a meta tensor and fails; CI has no
    GPU. Results are unchanged."""
    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=2, ckpt_every=0)
    train_stages(cfg, tmp_path / "run", split)
    model = load_model(tmp_path / "run")

    def run() -> list[torch.Tensor]:
        ode = generate(model, 3, tol=1e-3, seed=1)
        sde = generate(model, 3, tol=1e-3, seed=1, sampler="sde")
        r = nelbo(model, split.heldout[:3], ode=True, tol=1e-2)
        return [ode["mean"], ode["draw"], sde["draw"], r["dsm"], r["ode"]]

    ref, got = run(), on_meta_default(run)
    assert all(a.device.type == "cpu" and torch.equal(a, b) for a, b in zip(got, ref))


def test_inactive_channels_are_chosen_on_inputs_like_the_training_ones(tmp_path, monkeypatch):
    """The per-channel KL that pins "inactive" latent channels is measured on binarised images for a Bernoulli
    model (on quantised ones for 8-bit data), as the encoder sees them in training; it used the grey images."""
    import importlib

    train_mod = importlib.import_module("tenfold.lsgm.train")  # the module (the package exports a train verb)
    seen = []
    real = train_mod.channel_kl

    def spy(vae, x, batch=500):
        seen.append(x)
        return real(vae, x, batch)

    monkeypatch.setattr(train_mod, "channel_kl", spy)
    split = load_split("digits", 0, image_size=8)
    assert not bool(((split.train == 0) | (split.train == 1)).all())  # grey training images
    train_stages(dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=1), tmp_path / "run", split)
    assert len(seen) == 1 and seen[0].shape == split.train[:2000].shape
    assert bool(((seen[0] == 0) | (seen[0] == 1)).all())


@pytest.mark.parametrize("kw, msg", [
    ({"inactive_kl": -0.1}, "inactive_kl must be >= 0"),  # a negative threshold kept every channel "active"
    ({"score_mult": (1, 0)}, "score_mult"),  # a zero-width scale
    ({"dropout": 1.0}, "dropout and ema must be < 1"),  # drops every activation
    ({"ema": 1.0}, "dropout and ema must be < 1"),  # the EMA never leaves the zero-output init
    ({"ode_eps": 0.0}, "ode_eps must be a finite number > 0"),  # integrates to t = 0, where the variance is 0
    ({"ode_eps": -1e-5}, "ode_eps"),
    ({"grad_clip": -1.0}, "grad_clip must be a finite number >= 0"),  # the NaN-loss advice names it (session 21)
    # session 26 walkthrough: these passed --dry-run and were refused only when training reached them
    ({"stage1_steps": -3}, "stage1_steps and ckpt_every must be >= 0"),
    ({"ckpt_every": -1}, "stage1_steps and ckpt_every must be >= 0"),
    ({"batch_size": 0}, "batch_size and log_every must be >= 1"),
    ({"log_every": 0}, "batch_size and log_every must be >= 1"),
    ({"time_eps": 1.0}, r"time_eps must lie in \[0, 1\)"),
    ({"time_eps": -0.5}, r"time_eps must lie in \[0, 1\)"),
    ({"time_eps": 0.0}, r"sigma2\(time_eps=0.0\) = 0 for this SDE"),  # the VPSDE's variance at 0, sigma2_0 = 0
    ({"kl_anneal": -0.1}, "kl_anneal and kl_anneal2 must be >= 0"),
    ({"kl_anneal2": -0.5}, "kl_anneal and kl_anneal2 must be >= 0"),
])
def test_config_refuses_each_value_its_checks_name(kw: dict, msg: str) -> None:
    """Each boundary of Config.__post_init__ holds at its own edge (these edges had no test: moving one let the bad
    value through without a word); the value next to it is accepted."""
    with pytest.raises(ConfigError, match=msg):
        Config(**kw)
    ok = {"inactive_kl": 0.0, "score_mult": (1, 1), "dropout": 0.99, "ema": 0.99, "ode_eps": 1e-9, "grad_clip": 0.0,
          "stage1_steps": 0, "ckpt_every": 0, "batch_size": 1, "log_every": 1, "time_eps": 1e-9, "kl_anneal": 0.0,
          "kl_anneal2": 0.0}
    if kw == {"time_eps": 1.0}:
        ok["time_eps"] = 0.999
    key = next(iter(kw))
    assert getattr(Config(**{key: ok[key]}), key) == ok[key]


def test_grad_clip_reaches_the_engine_and_fd_samples_1_is_refused_before_the_nelbo(tmp_path, monkeypatch):
    """The engine's NaN-loss error says "set grad_clip", which lsgm had no key for; evaluate --fd-samples 1 failed in
    the Frechet distance after the whole NELBO."""
    import importlib

    tr = importlib.import_module("tenfold.lsgm.train")  # the module (the package exports a function `train`)
    seen: list = []
    real_fit = tr.fit
    monkeypatch.setattr(tr, "fit", lambda *a, **k: (seen.append(k["grad_clip"]), real_fit(*a, **k))[1])
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=0, ckpt_every=2, grad_clip=1.5)
    train_stages(cfg, tmp_path / "run", load_split("digits", 0, image_size=8))
    assert seen == [1.5]
    monkeypatch.setattr(tr, "nelbo", lambda *a, **k: pytest.fail("the NELBO ran before the check"))
    with pytest.raises(ConfigError, match="fd_samples must be 0 .* or >= 2"):
        tr.evaluate(cfg, tmp_path / "e", checkpoint=str(tmp_path / "run"), fd_samples=1)


def test_session26_walkthrough_sample_tol_dropped_channels_and_channels_last(tmp_path):
    """A model with no score prior sampled with --tol -1 and echoed it (the ODE's check never ran); inactive_kl
    above every channel's KL dropped them all without a word (the score prior then models nothing); channels-last
    images read as "images are 1x8; lsgm needs square images"."""
    from tenfold.core.io import DataError, TenfoldWarning
    from tenfold.lsgm import split_tensors
    from tenfold.lsgm.train import sample

    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=2, ckpt_every=2, inactive_kl=1e6)
    with pytest.warns(TenfoldWarning, match="every latent channel's KL is below inactive_kl=1e"):
        out = train_stages(cfg, tmp_path / "run", split)
    assert out["active_channels"] == 0
    for tol in (-1.0, float("nan"), float("inf"), 1.0, 5.0):  # 5 took one solver step and called it a sample
        with pytest.raises(ConfigError, match="tol must be a finite number >= 0 and < 1"):
            sample(cfg, tmp_path / "s", checkpoint=str(tmp_path / "run"), num_samples=2, tol=tol)
    assert sample(cfg, tmp_path / "s", checkpoint=str(tmp_path / "run"), num_samples=2, tol=0.0)["num_samples"] == 2
    vae_only = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=0, ckpt_every=2)  # no score prior: no solver
    train_stages(vae_only, tmp_path / "vae", split)
    assert load_model(tmp_path / "vae").score is None
    with pytest.raises(ConfigError, match="tol must be a finite number >= 0"):
        sample(vae_only, tmp_path / "s2", checkpoint=str(tmp_path / "vae"), num_samples=2, tol=-1.0)
    # a saved config this version refuses names the checkpoint (was the bare ConfigError, naming no file)
    from tenfold.core.io import load_checkpoint, save_checkpoint

    state, header = load_checkpoint(tmp_path / "vae" / "model")
    save_checkpoint(tmp_path / "old" / "model", state, method=header["method"],
                    config={**header["config"], "kl_anneal": -1.0})
    with pytest.raises(CheckpointError, match=r"old/model: its saved config is refused .*kl_anneal"):
        load_model(tmp_path / "old")
    assert generate(load_model(tmp_path / "vae"), __import__("numpy").int64(2), tol=1e-3)["mean"].shape[0] == 2
    with pytest.raises(DataError, match=r"1x8; lsgm needs square images; these look channels-last"):
        split_tensors(torch.rand(4, 8, 8, 1), image_size=8)
    model = load_model(tmp_path / "run")  # the API's own edges: each one line, not a raw torch / Python error
    x = split.heldout[:3]
    torch.testing.assert_close(nelbo(model, x.double(), ode=False)["dsm"], nelbo(model, x, ode=False)["dsm"])
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="batch must be a whole number >= 1"):
            nelbo(model, x, ode=False, batch=bad)
    with pytest.raises(ConfigError, match="whole numbers >= 1, got n=4.5"):
        generate(model, 4.5, tol=1e-3)
    # tol 0 / None take the config's ode_tol, as nelbo does (0 reached the solver, which refused it)
    own = generate(model, 2, tol=model.cfg.ode_tol)
    for tol in (0.0, None):
        same = generate(model, 2, tol=tol)
        assert same["nfe"] == own["nfe"]
        torch.testing.assert_close(same["mean"], own["mean"])
    with pytest.raises(ConfigError, match="tol must be a finite number >= 0 and < 1"):
        generate(model, 2, tol=2.0)
    with pytest.raises(ConfigError, match="tol must be a finite number >= 0 and < 1"):
        nelbo(model, x, tol=1.0)
    with pytest.raises(DataError, match="labels must be whole class indices"):
        split_tensors(torch.rand(8, 1, 8, 8), torch.rand(8), image_size=8)
    for f in (tmp_path / "run").glob("model.*"):  # as a run stopped mid-training leaves it: checkpoints, no model
        f.unlink()
    with pytest.raises(CheckpointError, match="has no trained model yet.*train --resume --out"):
        load_model(tmp_path / "run")


def test_session15_bad_inputs_are_one_line_errors(tmp_path):
    """Found by the session-15 CLI audit: a NaN inactive_kl pinned every latent channel and the run went on (any
    non-finite float is refused now), pad=-1 failed deep in the loss; a model with NaN weights was sampled (a
    Bernoulli error) and evaluated (null NELBOs, exit 0); a training checkpoint passed as the model gave KeyError
    'channels'; train --resume on a run with no checkpoint started over without a word."""
    from tenfold.core.io import save_checkpoint
    from tenfold.lsgm.train import train

    for kw, msg in (({"inactive_kl": float("nan")}, "inactive_kl"), ({"mix_logit_init": float("inf")}, "mix_logit"),
                    ({"pad": -1}, "pad")):
        with pytest.raises(ConfigError, match=msg):
            Config(**kw)
    split = load_split("digits", 0, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=2, ckpt_every=2, log_every=1)
    train_stages(cfg, tmp_path / "run", split)
    with pytest.raises(CheckpointError, match="training checkpoint, not a trained model"):
        load_model(tmp_path / "run" / "stage2" / "checkpoints" / "last")
    state, header = __import__("tenfold.core.io", fromlist=["x"]).load_checkpoint(tmp_path / "run" / "model")
    state["vae"][next(iter(state["vae"]))].fill_(float("nan"))
    save_checkpoint(tmp_path / "bad" / "model", state, method=header["method"], config=header.get("config"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(tmp_path / "bad")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True)


def test_in_memory_images_train_score_and_refuse_what_the_model_cannot_read(tmp_path):
    """Session 22 review: images already in memory had no documented route (a hand-built Split), and neither
    train_stages nor nelbo checked them: 0-255 values were a torch error, colour or non-square images trained
    silently, grey images were scored under the Bernoulli decoder, and nelbo reseeded the caller's global RNG.
    split_tensors gives them the folder split and its checks; nelbo checks against the model."""
    from tenfold.core.io import DataError
    from tenfold.lsgm import split_tensors

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen)
    sp = split_tensors(x, split_seed=3, image_size=8)
    assert (len(sp.train), len(sp.val), len(sp.heldout)) == (30, 2, 8)
    assert torch.equal(sp.heldout, (sp.heldout == 1).float())  # binarised once
    twice = split_tensors(x, split_seed=3, image_size=8)
    assert torch.equal(sp.train, twice.train) and torch.equal(sp.heldout, twice.heldout)
    for bad, msg in ((x * 255, r"values in \[0, 1\], got \[.*\]; divide 0-255 images by 255"),
                     ((x * 255).to(torch.uint8), "float images in \\[0, 1\\], got torch.uint8"),
                     (x[:, :, :, :6], "6x8; lsgm needs square images"),
                     (x.masked_fill(x > 0.99, float("nan")), "NaN or Inf"), (x[0], r"\(N, C, H, W\)")):
        with pytest.raises(DataError, match=msg):
            split_tensors(bad, image_size=8)
    cfg = dataclasses.replace(SMOKE, stage1_steps=2, stage2_steps=2, ckpt_every=2, image_size=8, batch_size=8)
    colour = split_tensors(torch.rand(40, 3, 8, 8, generator=gen), image_size=8, binarize=False)
    with pytest.raises(DataError, match="the split's training images has 3-channel images but the model takes 1"):
        train_stages(cfg, tmp_path / "c", colour)  # binarize=True: the Bernoulli decoder's grey data
    with pytest.raises(DataError, match="images are 16 px but the model / config has image_size=8"):
        train_stages(cfg, tmp_path / "s", split_tensors(torch.rand(40, 1, 16, 16, generator=gen), image_size=16))
    train_stages(cfg, tmp_path / "run", sp)
    model = load_model(tmp_path / "run")
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = nelbo(model, sp.heldout, ode=False)["dsm"]
    assert torch.equal(torch.rand(3), want)  # the caller's random stream goes on where it was
    assert torch.equal(nelbo(model, sp.heldout, ode=False)["dsm"], a)  # and the score is seeded
    with pytest.raises(DataError, match="must be binary \\(0 / 1\\) for the Bernoulli decoder"):
        nelbo(model, sp.heldout_grey, ode=False)
    with pytest.raises(DataError, match="has 3-channel images but the model takes 1"):
        nelbo(model, torch.ones(2, 3, 8, 8), ode=False)
    # session 26 walkthrough: the record said the preset's data, so `evaluate` re-split that dataset and scored
    # images the model had trained on as held out, without a word
    from tenfold.core.io import ConfigError, TenfoldWarning
    from tenfold.lsgm.train import evaluate

    assert model.cfg.data == "tensors:tensors" and SMOKE.data != model.cfg.data
    with pytest.raises(ConfigError, match="trained on in-memory images .*pass --data"):
        evaluate(SMOKE, tmp_path / "ev", checkpoint=str(tmp_path / "run"), fd_samples=0, ode=False)
    with pytest.warns(TenfoldWarning, match=r"in-memory images \(tensors\).* --data digits is not checked for them"):
        out = evaluate(SMOKE, tmp_path / "ev2", checkpoint=str(tmp_path / "run"), fd_samples=0, ode=False,
                       data="digits")
    assert out["split"].startswith("digits: all ")


def test_config_refuses_negative_stage2_steps_a_falling_kl_anneal_and_a_negative_variance_floor():
    """Session 22 review: stage2_steps=-1 read as 0, kl_min above kl_max and sigma2_min=-1 went through silently."""
    for kw, msg in ((dict(stage2_steps=-1), "stage2_steps and warmup must be >= 0"),
                    (dict(warmup=-3), "stage2_steps and warmup must be >= 0"),
                    (dict(kl_min=1.0, kl_max=0.7), r"kl_min \(1.0\) must not exceed kl_max \(0.7\)"),
                    (dict(sigma2_min=-1.0), "sigma2_min must be > 0")):
        with pytest.raises(ConfigError, match=msg):
            dataclasses.replace(SMOKE, **kw)
