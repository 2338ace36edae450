"""GradInversion's defences and leakage metrics against planted answers: noise of std sigma, fresh in every layer;
pruning per layer; the identifiability nearest neighbour within the class; PSNR after order matching; the audit
attacking the defended gradient and naming its worst row. Each test names the bug it catches."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tenfold.core.metrics import psnr
from tenfold.gradinversion import PRESETS, apply_defences
from tenfold.gradinversion.evaluation import iip, image_metrics

torch.set_num_threads(1)


def test_noise_has_std_sigma_and_is_fresh_in_every_layer() -> None:
    """sigma = 0.1 (not 1, where sigma and its square agree): the added noise has std 0.1; two equal-shaped layers
    get independent draws (a generator re-seeded per layer gave both the same noise); the seed fixes the draw."""
    g = [torch.zeros(100, 100), torch.zeros(100, 100), torch.zeros(5)]
    a = apply_defences(g, noise_sigma=0.1, seed=4)
    for n in a[:2]:
        assert 0.09 < float(n.std()) < 0.11
    r = torch.corrcoef(torch.stack([a[0].flatten(), a[1].flatten()]))[0, 1]
    assert abs(float(r)) < 0.05
    assert all(torch.equal(x, y) for x, y in zip(a, apply_defences(g, noise_sigma=0.1, seed=4)))
    assert not torch.equal(a[0], apply_defences(g, noise_sigma=0.1, seed=5)[0])


def test_pruning_is_per_layer() -> None:
    """Each layer loses its own smallest 90 %: a layer of large entries is pruned as much as a layer of small ones
    (one threshold for all layers kept every entry of the large layer)."""
    small = torch.arange(1.0, 101.0).view(10, 10)
    large = -torch.arange(1001.0, 1101.0).view(4, 25)  # negative: magnitude decides, not sign
    ps, pl = apply_defences([small, large], prune_ratio=0.9)
    assert int((ps != 0).sum()) == 10 and float(ps[ps != 0].min()) == 91.0
    assert int((pl != 0).sum()) == 10 and float(pl[pl != 0].max()) == -1091.0


def test_iip_takes_the_nearest_same_class_reference() -> None:
    """Constant 2x2 references: class 0 at 0.1 and 0.3, class 1 at 0.2 and 0.9. A reconstruction at 0.24 of the 0.3
    image is nearest to the class-1 image overall but to its own image within class 0 (hit); 0.12 of the 0.1 image
    (hit); 0.85 of the 0.2 image is nearest to 0.9 (miss): IIP 2/3. Taking the farthest neighbour, or ignoring the
    class, gives 1/3."""
    ref = torch.tensor([0.1, 0.3, 0.2, 0.9]).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    ref_labels = torch.tensor([0, 0, 1, 1])
    rec = torch.tensor([0.24, 0.12, 0.85]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    assert iip(rec, torch.tensor([1, 0, 2]), torch.tensor([0, 0, 1]), ref, ref_labels) == pytest.approx(2 / 3)


def test_image_metrics_score_after_matching_the_order() -> None:
    """A permuted batch with per-image noise 0.01, 0.02, 0.04: PSNR is the mean over the matched pairs (about 40,
    34 and 28 dB, not the ~10 dB of mismatched pairs) and psnr_max the best one's."""
    g = torch.Generator().manual_seed(0)
    true = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64) * 0.8 + 0.1
    noise = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    noisy = true + torch.tensor([0.01, 0.02, 0.04], dtype=torch.float64).view(3, 1, 1, 1) * noise
    perm = torch.tensor([2, 0, 1])
    m = image_metrics(noisy[perm], true)
    want = psnr(noisy.clamp(0, 1), true)
    assert m["psnr"] == pytest.approx(float(want.mean()), abs=1e-9)
    assert m["psnr_max"] == pytest.approx(float(want.max()), abs=1e-9) and m["psnr_max"] > 38
    assert torch.equal(noisy[perm][torch.tensor(m["order"])], noisy)


def test_audit_attacks_the_defended_gradient_and_names_the_worst_row(tmp_path: Path, monkeypatch) -> None:
    """With the attack stubbed out, each audit row must hand the attack its own defended gradient (noise rows
    noisy with std sigma, prune rows with 90 % zeros per layer, the undefended row untouched), and the summary's
    lowest PSNR is the row whose reconstruction is worst (here the noise row)."""
    from tenfold.gradinversion import verbs

    seen: dict[tuple[float, float], list[torch.Tensor]] = {}
    blur = {(0.0, 0.0): 0.01, (0.5, 0.0): 0.5, (0.0, 0.9): 0.1}  # how far each row's "reconstruction" is off

    def fake_attack(c, net, g, x, y, *a, **k):
        seen[(c.noise_sigma, c.prune_ratio)] = [t.detach().cpu() for t in g]
        a_ = blur[(c.noise_sigma, c.prune_ratio)]
        return SimpleNamespace(images=x * (1 - a_) + 0.5 * a_, labels=y)

    monkeypatch.setattr(verbs, "run_attack", fake_attack)
    cfg = dataclasses.replace(PRESETS["smoke"], group_size=1)
    out = verbs.audit(cfg, tmp_path, data="cifar10-mini", batch_sizes=(2,), noise_sigmas=(0.5,),
                      prune_ratios=(0.9,), iterations=1)
    clean, noisy, pruned = seen[(0.0, 0.0)], seen[(0.5, 0.0)], seen[(0.0, 0.9)]
    big = [i for i, t in enumerate(clean) if t.numel() >= 1000]
    assert big and any(bool(t.ne(0).any()) for t in clean)
    for i in big:
        assert 0.45 < float((noisy[i] - clean[i]).std()) < 0.55
        assert int((pruned[i] == 0).sum()) >= int(0.9 * pruned[i].numel())
        assert torch.equal(pruned[i] != 0, (pruned[i] == clean[i]) & (clean[i] != 0))
    rows = json.loads((tmp_path / "audit.json").read_text())["rows"]
    psnrs = {r["defence"]: r["psnr"] for r in rows}
    assert psnrs["none"] > psnrs["prune 0.9"] > psnrs["noise 0.5"]
    assert out["lowest_psnr_defence"] == "noise 0.5" and out["lowest_psnr"] == psnrs["noise 0.5"]
    assert out["psnr_undefended_b2"] == psnrs["none"] and math.isfinite(psnrs["none"])


def test_attack_scores_identifiability_on_the_matched_order(tmp_path: Path, monkeypatch) -> None:
    """A stub attack returns the client batch exactly, in reverse order: after order matching every reconstruction
    is its own nearest same-class image (IIP 1); scoring the unmatched order paired images with other classes."""
    from tenfold.gradinversion import verbs
    from tenfold.gradinversion.attack import AttackResult

    def fake_attack(c, net, g, x, y, *a, **k):
        rev = x.flip(0)
        return AttackResult(images=rev, best_seed=rev, seeds=rev[None], labels=y.sort().values, loss_start=1.0,
                            loss_end=0.5, history=[{"iteration": 0, "grad": 1.0, "tv": 0.0, "bn": 0.0, "group": 0.0}],
                            iterations=1, cpu_seconds=0.1)

    monkeypatch.setattr(verbs, "run_attack", fake_attack)
    out = verbs.attack(PRESETS["smoke"], tmp_path, data="cifar10-mini", batch_size=4, iterations=1)
    assert out["iip_pixel"] == 1.0 and out["label_accuracy"] == 1.0 and out["psnr"] == math.inf
