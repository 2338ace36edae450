"""LSGM's data splits, FD helpers and evaluate/generate bookkeeping against planted answers: real MNIST and
OMNIGLOT split sizes and partitions, K-level held-out images and their labels, the Frechet distance of known
features, the FD classifier's step count and binarised half-batches, nats -> bits/dim, batch splitting."""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tenfold.lsgm import PRESETS
from tenfold.lsgm import fd as fdm
from tenfold.lsgm.data import load_split

torch.set_num_threads(1)
SMOKE = PRESETS["smoke"]
T = importlib.import_module("tenfold.lsgm.train")  # the package re-exports train()


class _Flat(nn.Module):
    """Features = the pixels themselves, so the Frechet distance has a closed form."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_fd_of_shifted_features_is_the_squared_shift() -> None:
    """Same covariance, means apart by s: FD = |s|^2 (and 0 against itself); 600 images span two feature batches,
    so a set compared with itself or a batch that drops images would show."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(600, 1, 2, 2, generator=g, dtype=torch.float64)
    s = torch.tensor([0.3, -0.1, 0.2, 0.0], dtype=torch.float64)
    b = a + s.view(1, 1, 2, 2)
    assert fdm.fd(_Flat(), a, b) == pytest.approx(float(s.pow(2).sum()), abs=1e-9)
    assert fdm.fd(_Flat(), a, a) == pytest.approx(0.0, abs=1e-9)
    f = fdm.features(_Flat(), a, batch=7)
    assert f.shape == (600, 4) and torch.equal(f, a.flatten(1))


def test_fd_from_fewer_images_than_feature_dims_warns() -> None:
    """4-d features: 4 images give a rank-deficient covariance (warned, naming the counts), 5 do not."""
    import warnings

    from tenfold.core.io import TenfoldWarning

    a = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(TenfoldWarning, match="from 4 images in 4-d features: the covariance estimate is rank"):
        fdm.fd(_Flat(), a[:4], a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fdm.fd(_Flat(), a, a + 0.1)


def test_accuracy_counts_argmax_hits_across_batches() -> None:
    """Logits = one-hot of a label that is wrong for exactly 30 % of 1,200 rows (three accuracy batches): 0.7."""
    y = torch.arange(1200) % 10
    shown = y.clone()
    shown[::10] = (shown[::10] + 1) % 10
    shown[1::10] = (shown[1::10] + 2) % 10
    shown[2::10] = (shown[2::10] + 3) % 10
    x = torch.nn.functional.one_hot(shown, 10).float()
    assert fdm.accuracy(nn.Identity(), x, y) == pytest.approx(0.7)


def test_feature_cnn_takes_min_steps_and_binarises_half_of_each_batch(monkeypatch) -> None:
    """128 grey images are 2 batches an epoch, so min_steps=10 means 5 epochs (10 steps) even when 1 is asked for,
    and the first 32 images of each batch are Bernoulli draws (0/1) while the rest stay grey."""
    monkeypatch.setenv("TENFOLD_CACHE", "off")
    seen: list[torch.Tensor] = []

    class Recording(fdm.FeatureCNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.detach().clone())
            return super().forward(x)

    monkeypatch.setattr(fdm, "FeatureCNN", Recording)
    train = 0.1 + 0.8 * torch.rand(128, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fdm.feature_cnn(train, torch.arange(128) % 3, key="unit", epochs=1, min_steps=10)
    assert len(seen) == 10
    for x in seen:
        assert x.shape[0] == 64
        assert bool(((x[:32] == 0) | (x[:32] == 1)).all()) and x[:32].mean() > 0.3
        assert bool(((x[32:] > 0) & (x[32:] < 1)).all())


def test_feature_cnn_trains_on_a_set_smaller_than_one_batch(monkeypatch) -> None:
    """Session 22 review: under 64 training images the batch loop was empty, so a small folder's FD-CNN never
    trained (chance accuracy) and its FD was read from random features. 40 images, two classes told apart by
    brightness: each step now takes the whole set, and the trained net separates them."""
    monkeypatch.setenv("TENFOLD_CACHE", "off")
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 2
    train = (0.15 + 0.7 * labels.float()).view(40, 1, 1, 1) + 0.1 * torch.rand(40, 1, 8, 8, generator=gen)
    net = fdm.feature_cnn(train.clamp(0, 1), labels, key="small", epochs=1, min_steps=60)
    assert fdm.accuracy(net, train.clamp(0, 1), labels) == 1.0  # the untrained net reads 0.5 here


def test_the_fd_classifier_cache_is_keyed_by_the_labels(monkeypatch, tmp_path) -> None:
    """Session 26 walkthrough: the same images sorted into 3 classes instead of 2 hit the 2-class cache entry (a
    state_dict size mismatch after the NELBO was computed); with 2 other classes the stale classifier was taken
    silently. The labels are in the key now, and an entry that does not fit is trained again with a warning."""
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    train = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    two, other_two, three = torch.arange(64) % 2, (torch.arange(64) // 32) % 2, torch.arange(64) % 3
    a = fdm.feature_cnn(train, two, key="same", epochs=1, min_steps=2)
    b = fdm.feature_cnn(train, other_two, key="same", epochs=1, min_steps=2)
    c = fdm.feature_cnn(train, three, key="same", epochs=1, min_steps=2)
    assert len(list((tmp_path / "lsgm").glob("fdcnn-*.json"))) == 3
    assert c.head.out_features == 3 and not torch.equal(a.head.weight, b.head.weight)
    again = fdm.feature_cnn(train, two, key="same", epochs=1, min_steps=2)  # the cache, not a new training
    assert torch.equal(again.head.weight, a.head.weight)
    for f in (tmp_path / "lsgm").glob("fdcnn-*"):  # every entry now holds a 5-class head: none fits
        if f.suffix != ".json":
            continue
        fdm.save_checkpoint(f.with_suffix(""), {"model": fdm.FeatureCNN(1, 5).state_dict()}, method="lsgm-fdcnn")
    with pytest.warns(fdm.TenfoldWarning, match="cannot be used .*loading state_dict"):
        assert fdm.feature_cnn(train, three, key="same", epochs=1, min_steps=2).head.out_features == 3
    for f in (tmp_path / "lsgm").glob("fdcnn-*.safetensors"):  # damaged files: the same, not a crash after the NELBO
        f.write_bytes(f.read_bytes()[:40])
    with pytest.warns(fdm.TenfoldWarning, match="cannot be used"):
        assert fdm.feature_cnn(train, two, key="same", epochs=1, min_steps=2).head.out_features == 2


def _multiset(x: torch.Tensor) -> Counter:
    return Counter(r.tobytes() for r in (x.flatten(1) * 255).round().to(torch.uint8).numpy())


def test_mnist_split_sizes_and_partition(shared_data: Path) -> None:
    """mnist-test: 7,500 train + 500 val + 2,000 held out, together every test digit exactly once."""
    from tenfold.core.data import load_dataset

    s = load_split("mnist-test", 0)
    assert (len(s.train), len(s.val), len(s.heldout)) == (7500, 500, 2000)
    x, _ = load_dataset("mnist-test").tensors()
    assert _multiset(torch.cat([s.train, s.val, s.heldout_grey])) == _multiset(x)
    assert torch.equal(s.heldout, (s.heldout == 1).float())


def test_omniglot_split_by_drawer_and_inverted(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    """omniglot-small1: 136 characters x 20 drawers; drawers 1-15 train (2,040), 16 val (136), 17-20 held out (544);
    strokes are 1 on a 0 background (the PNGs are black strokes on white)."""
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    s = load_split("omniglot-small1", 0)
    assert (len(s.train), len(s.val), len(s.heldout)) == (2040, 136, 544)
    assert s.train.shape[1:] == (1, 28, 28) and float(s.train.mean()) < 0.3
    assert float(s.heldout_grey[:, :, 0, :].mean()) < 0.05  # the top row is background


def _class_coded_folder(root: Path, n_per_class: int = 10) -> None:
    """3 classes of 8x8 grey images whose class is written in their brightness: 60, 120 or 180 plus +-10 noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(3):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(n_per_class):
            a = (60 * (k + 1) + rng.integers(-10, 11, (8, 8))).astype(np.uint8)
            Image.fromarray(a).save(root / f"c{k}" / f"{i}.png")


def test_k_level_heldout_and_labels_follow_their_images(tmp_path: Path) -> None:
    """binarize=False: the held-out images are rounded to num_levels levels (4 -> multiples of 1/3), and every
    split's labels are those of its own images (the class is readable from the brightness)."""
    _class_coded_folder(tmp_path / "imgs")
    s = load_split(f"folder:{tmp_path / 'imgs'}", 0, image_size=8, binarize=False, num_levels=4)
    assert torch.allclose(s.heldout, torch.round(s.heldout_grey * 3) / 3)
    assert set(torch.round(s.heldout * 3).unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    for imgs, labels in ((s.train, s.train_labels), (s.heldout_grey, s.heldout_labels)):
        coded = (imgs.mean((1, 2, 3)) * 255 / 60).round().long() - 1
        assert torch.equal(coded, labels)


def test_evaluate_reports_nats_standard_error_and_bits_per_dim(tmp_path: Path, monkeypatch) -> None:
    """Planted per-image NELBOs on 3-channel 8x8 data: the mean in nats, its standard error std/sqrt(n), and
    bits/dim = nats / (3 * 8 * 8 * ln 2) (every channel counts)."""
    _class_coded_folder(tmp_path / "imgs")
    from PIL import Image

    for f in (tmp_path / "imgs").rglob("*.png"):  # grey -> tinted RGB (R = G = B reads grey since session 22)
        a = np.asarray(Image.open(f).convert("RGB")).copy()
        a[..., 1] //= 2
        Image.fromarray(a).save(f)
    cfg = dataclasses.replace(SMOKE, data=f"folder:{tmp_path / 'imgs'}", binarize=False, image_size=8)
    model = T.Trained(cfg, *T.build(cfg, 3))
    monkeypatch.setattr(T, "_load_on_device", lambda checkpoint, device: model)
    planted: list[torch.Tensor] = []

    def fake_nelbo(m, x, **kw):
        planted.append(100.0 + torch.arange(len(x), dtype=torch.float64) ** 2)
        return {"vae": planted[-1], "nfe": 0}

    monkeypatch.setattr(T, "nelbo", fake_nelbo)
    out = T.evaluate(cfg, tmp_path / "run", checkpoint="unused", fd_samples=0, ode=False)
    v = planted[0]
    assert out["n"] == len(v) == 6  # 30 images, a fifth held out
    assert out["nelbo_vae_nats"] == pytest.approx(float(v.mean()))
    assert out["nelbo_vae_se"] == pytest.approx(float(v.std()) / math.sqrt(6))
    assert out["nelbo_vae_bpd"] == pytest.approx(float(v.mean()) / (3 * 8 * 8 * math.log(2)))


def test_generate_splits_into_batches_and_averages_the_nfe(monkeypatch) -> None:
    """n=5 in batches of 2 is batches of 2, 2, 1: five images (not six), and the NFE is the per-batch mean."""
    cfg = SMOKE
    model = T.Trained(cfg, *T.build(cfg, 1))
    sizes: list[int] = []

    def fake_ode(eps_fn, sde, z1, **kw):
        sizes.append(len(z1))
        return z1, 7 + len(z1)

    monkeypatch.setattr(T, "ode_sample", fake_ode)
    out = T.generate(model, 5, tol=1e-3, batch=2)
    assert sizes == [2, 2, 1] and out["mean"].shape[0] == 5 and out["draw"].shape[0] == 5
    assert out["nfe"] == pytest.approx((9 + 9 + 8) / 3)


def test_evaluate_scores_fd_of_decoder_means_against_grey_heldout_images(tmp_path: Path, monkeypatch) -> None:
    """evaluate's FD-CNN compares ``fd_samples`` decoder means (not the Bernoulli draws) with the grey held-out
    images (not their binarised copies), on a classifier trained on the grey training split."""
    _class_coded_folder(tmp_path / "imgs")
    cfg = dataclasses.replace(SMOKE, data=f"folder:{tmp_path / 'imgs'}", image_size=8)
    model = T.Trained(cfg, *T.build(cfg, 1))
    monkeypatch.setattr(T, "_load_on_device", lambda checkpoint, device: model)
    monkeypatch.setattr(T, "nelbo", lambda m, x, **kw: {"vae": torch.ones(len(x)), "nfe": 0})
    calls: dict[str, tuple] = {}

    def fake_generate(m, n, **kw):
        calls["generate"] = (n,)
        return {"mean": torch.full((n, 1, 8, 8), 0.25), "draw": torch.ones(n, 1, 8, 8), "nfe": 3.0}

    monkeypatch.setattr(T, "generate", fake_generate)
    monkeypatch.setattr(fdm, "feature_cnn", lambda train, labels, key: calls.setdefault("cnn", (train, labels, key)))
    monkeypatch.setattr(fdm, "fd", lambda net, a, b: (calls.setdefault("fd", (net, a, b)), 1.5)[1])
    out = T.evaluate(cfg, tmp_path / "run", checkpoint="unused", fd_samples=7, ode=False)
    split = load_split(cfg.data, cfg.split_seed, image_size=8)
    assert out["FD-CNN_mean"] == 1.5 and out["sample_nfe"] == 3.0 and calls["generate"] == (7,)
    train, labels, key = calls["cnn"]
    assert torch.equal(train, split.train) and torch.equal(labels, split.train_labels) and key == cfg.data
    _, a, b = calls["fd"]
    assert torch.equal(a, torch.full((7, 1, 8, 8), 0.25)) and torch.equal(b, split.heldout_grey)


def test_heldout_is_binarised_once_with_a_fixed_seed(tmp_path: Path) -> None:
    """The held-out set is one fixed Bernoulli draw of its grey images: the same on every load (evaluations of two
    models score the same binary images), and a draw, not a threshold (its mean follows the grey mean)."""
    _class_coded_folder(tmp_path / "imgs", n_per_class=30)
    a, b = (load_split(f"folder:{tmp_path / 'imgs'}", 0, image_size=8) for _ in range(2))
    assert torch.equal(a.heldout, b.heldout) and torch.equal(a.heldout, (a.heldout == 1).float())
    assert float(a.heldout.mean()) == pytest.approx(float(a.heldout_grey.mean()), abs=0.03)
