"""GradInversion on bad input: each case one clear error (or a kept run), found by the session-16 CLI audit."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch import nn

from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    TenfoldWarning,
    load_checkpoint,
    save_checkpoint,
)
from tenfold.gradinversion import PRESETS, Config, build, simulate_client

torch.set_num_threads(1)


def _tiny_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5))
    net.input_size = (3, 6, 6)
    return net.eval()


def _no_attack(*a, **k):
    raise AssertionError("the attack ran on input that should have been refused")


@pytest.fixture(scope="module")
def leak_dir(tmp_path_factory):
    """A real `leak` run (ResNet-20, real weights, 2 bundled CIFAR-10 images): the base of the edited leaks."""
    from tenfold.gradinversion import verbs

    d = tmp_path_factory.mktemp("leak")
    verbs.leak(PRESETS["smoke"], d, data="cifar10-mini", batch_size=2)
    return d


def _edited_leak(leak_dir, tmp_path, edit) -> str:
    """A copy of the leak run whose saved state ``edit`` changed."""
    d = tmp_path / "leak"
    shutil.copytree(leak_dir, d)
    state, header = load_checkpoint(d / "leak", method="gradinversion")
    edit(state)
    save_checkpoint(d / "leak", state, method="gradinversion", config=header.get("config"), extra=header["extra"])
    return str(d)


def test_attack_on_a_leak_refuses_contradicting_options_and_records_the_leaks(leak_dir, tmp_path, monkeypatch):
    """`attack --target LEAK --model cifar10-resnet56 --data mnist-test --batch-size 4` attacked the leak's ResNet-20
    batch of 2 and recorded resnet56 / mnist-test / 4 in its config.json. Now such options are refused in one line,
    and the options the run took from the leak (here the default batch size 8 it did not use) are recorded."""
    from tenfold.gradinversion import verbs

    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    with pytest.raises(ConfigError, match=r"contradict it: --model cifar10-resnet56 \(the leak's: cifar10-resnet20\), "
                                          r"--data mnist-test \(the leak's: cifar10-mini\), --batch-size 4"):
        verbs.attack(PRESETS["smoke"], tmp_path / "a", target=str(leak_dir), model="cifar10-resnet56",
                     data="mnist-test", batch_size=4)
    (tmp_path / "b").mkdir()  # what the CLI writes before the verb runs: every option, defaults included
    (tmp_path / "b" / "config.json").write_text(json.dumps({"options": {"model": "cifar10-resnet20", "batch_size": 8,
                                                                        "data": "cifar10-test", "iterations": 0}}))
    with pytest.raises(AssertionError, match="the attack ran"):  # options equal to the leak's are no contradiction
        verbs.attack(PRESETS["smoke"], tmp_path / "b", target=str(leak_dir), batch_size=2)
    opts = json.loads((tmp_path / "b" / "config.json").read_text())["options"]
    assert opts == {"model": "cifar10-resnet20", "batch_size": 2, "data": "cifar10-mini", "iterations": 0}


def test_simulate_client_refuses_images_outside_0_1():
    """The docs say images in [0, 1]; 0..255 images were taken as they were (a wrong gradient, no word)."""
    net, x, y = _tiny_net(), torch.rand(2, 3, 6, 6), torch.tensor([1, 4])
    with pytest.raises(InputError, match=r"pixel values in \[0, 1\].*divide 0-255 images by 255"):
        simulate_client(net, x * 255, y)
    with pytest.raises(InputError, match=r"pixel values in \[0, 1\]"):
        simulate_client(net, x - 0.5, y)
    simulate_client(net, x.clamp(0, 1) + 1e-6, y)  # a rounding hair over 1 is fine


def test_all_zero_gradients_are_refused_by_the_api_and_on_a_leak(leak_dir, tmp_path, monkeypatch):
    """All-zero gradients were "inverted" (label accuracy 0, rc 0): there is nothing to invert."""
    from tenfold.gradinversion import verbs

    net = _tiny_net()
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=2, warmup=0, label_rule="rowsum")
    zeros = [torch.zeros_like(p) for p in net.parameters()]
    with pytest.raises(InputError, match=r"the shared gradient is all zeros \(nothing to invert\)"):
        build(cfg).run(net, zeros, num_images=2, mean=[0.5] * 3, std=[0.25] * 3)
    target = _edited_leak(leak_dir, tmp_path, lambda s: s.update(gradients=[torch.zeros_like(t)
                                                                             for t in s["gradients"]]))
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    with pytest.raises(DataError, match=r"leak.safetensors: the shared gradient is all zeros"):
        verbs.attack(PRESETS["smoke"], tmp_path / "a", target=target)


def test_audit_resume_drops_a_cut_off_last_row_and_refuses_a_corrupt_one(tmp_path, monkeypatch):
    """A kill mid-write leaves a cut-off last line in audit_rows.jsonl; `--resume` failed on it with a
    JSONDecodeError (the run's rows lost). Now it is dropped with a warning and removed from the file, as
    MetricsLogger does; a corrupt line before the last stays a one-line error."""
    from tenfold.gradinversion import verbs

    row = {"batch_size": 1, "defence": "none", "noise_sigma": 0.0, "prune_ratio": 0.0, "unique_labels": True,
           "psnr": 10.0, "ssim": 0.1, "label_accuracy": 1.0, "psnr_dataset_mean_colour": 8.0,
           "psnr_own_mean_colour": 9.0}
    kw = dict(data="cifar10-mini", batch_sizes=(1,), noise_sigmas=(), prune_ratios=(), iterations=1, resume=True)
    monkeypatch.setattr(verbs, "run_attack", _no_attack)  # the one row is done: nothing may run again
    rows = tmp_path / "run" / "audit_rows.jsonl"
    rows.parent.mkdir()
    rows.write_text(json.dumps(row) + "\n" + 'garbage{"batch_size": 1, "def')
    with pytest.warns(TenfoldWarning, match="last line was cut short"):
        out = verbs.audit(PRESETS["smoke"], tmp_path / "run", **kw)
    assert out["rows"] == 1 and rows.read_text() == json.dumps(row) + "\n"  # the next row gets a line of its own
    rows.write_text("garbage{\n" + json.dumps(row) + "\n")
    with pytest.raises(CheckpointError, match=r"audit_rows.jsonl: line 1 is corrupt"):
        verbs.audit(PRESETS["smoke"], tmp_path / "run", **kw)


def test_negative_checkpoint_interval_is_refused():
    """`--set ckpt_every=-1` was taken silently and turned the attack's checkpoints off."""
    from tenfold.core.config import apply_overrides

    with pytest.raises(ConfigError, match="ckpt_every must be >= 0"):
        apply_overrides(PRESETS["smoke"], ["ckpt_every=-1"])
    with pytest.raises(ConfigError, match="ckpt_every must be >= 0"):
        Config(ckpt_every=-5)
    assert apply_overrides(PRESETS["smoke"], ["ckpt_every=0"]).ckpt_every == 0


def test_a_leak_with_labels_past_the_models_classes_is_refused_on_loading(leak_dir, tmp_path, monkeypatch):
    """Labels [99, 3] in a leak of a 10-class model were an IndexError."""
    from tenfold.gradinversion import verbs

    target = _edited_leak(leak_dir, tmp_path, lambda s: s.update(labels=torch.tensor([99, 3])))
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    with pytest.raises(DataError, match=r"leak.safetensors: labels must hold class labels in \[0, 10\).*got 99"):
        verbs.attack(PRESETS["smoke"], tmp_path / "a", target=target)


def test_audit_refuses_repeated_values_before_any_attack(tmp_path, monkeypatch):
    """`--batch-sizes 1 1` ran every attack and then failed in matplotlib (and so did --resume)."""
    from tenfold.gradinversion import verbs

    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    kw = dict(data="cifar10-mini", iterations=1)
    with pytest.raises(ConfigError, match="--batch-sizes lists 1 more than once"):
        verbs.audit(PRESETS["smoke"], tmp_path, batch_sizes=(1, 1), **kw)
    with pytest.raises(ConfigError, match="--noise-sigmas lists 0.01 more than once"):
        verbs.audit(PRESETS["smoke"], tmp_path, batch_sizes=(1,), noise_sigmas=(0.01, 1e-2), **kw)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_leak_images_are_refused_on_loading_naming_the_file(leak_dir, tmp_path, monkeypatch):
    """A NaN in the leak's images surfaced as "true holds 1 NaN/Inf value(s)" only after the whole attack."""
    from tenfold.gradinversion import verbs

    def nan_image(s):
        s["images"][0, 0, 0, 0] = float("nan")

    target = _edited_leak(leak_dir, tmp_path, nan_image)
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    with pytest.raises(DataError, match=r"the leak .*leak.safetensors: images holds 1 NaN/Inf"):
        verbs.attack(PRESETS["smoke"], tmp_path / "a", target=target)

    def nan_gradient(s):
        s["gradients"][3][0] = float("inf")

    target = _edited_leak(leak_dir, tmp_path / "g", nan_gradient)
    with pytest.raises(DataError, match=r"leak.safetensors: gradient for .* NaN/Inf"):
        verbs.attack(PRESETS["smoke"], tmp_path / "b", target=target)


def test_channel_mismatch_names_the_data_and_the_model(tmp_path, monkeypatch):
    """1-channel data on a 3-channel CIFAR model said "images must have shape (B, 3, *, *), got (2, 1, 28, 28)"."""
    from tenfold.gradinversion import verbs

    class Grey:
        def tensors(self):
            return torch.rand(6, 1, 28, 28), torch.arange(6)

    monkeypatch.setattr(verbs, "load_dataset", lambda name: Grey())
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    for verb, kw in ((verbs.leak, dict(batch_size=2)), (verbs.audit, dict(batch_sizes=(1,)))):
        with pytest.raises(DataError, match="grey images have 1 channel.* the model cifar10-resnet20 expects 3"):
            verb(PRESETS["smoke"], tmp_path, data="grey", **kw)
    with pytest.raises(InputError, match=r"x has 1 channel\(s\) but the model expects 3"):
        simulate_client(_tiny_net(), torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))
    assert list(tmp_path.iterdir()) == []
