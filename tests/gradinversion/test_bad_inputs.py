"""GradInversion on bad input: each case one clear error (or a kept run), found by the session-16 CLI audit."""

from __future__ import annotations

import collections
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


@pytest.mark.parametrize("override,match", [("alpha_tv=-1", "alpha_tv must be a finite number >= 0"),
                                            ("lr=nan", "lr must be a finite number >= 0"),
                                            ("group_size=0", "need iterations, group_size, group_every >= 1"),
                                            ("noise_sigma=-1", "finite noise_sigma >= 0"),
                                            ("prune_ratio=1", "0 <= prune_ratio < 1")])
def test_a_bad_value_is_refused_when_the_config_is_made(override, match, capsys):
    """Session 26 walkthrough: `--set alpha_tv=-1` passed `--dry-run` and was refused only after the model was loaded
    and the client simulated; the config now runs the attack's own checks (and the defences')."""
    from tenfold import cli
    from tenfold.core.config import apply_overrides

    with pytest.raises(ConfigError, match=match):
        apply_overrides(PRESETS["smoke"], [override])
    assert cli.main(["gradinversion", "attack", "--dry-run", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and override.split("=")[0] in err[0]
    assert cli.main(["gradinversion", "attack", "--dry-run", "--json", "--set", "lr=0.2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["config"]["lr"] == 0.2  # --json: the whole object on the last line


def test_half_gradients_and_a_wrong_input_shape_are_one_line():
    """float16 gradients died mid-attack as "non-finite loss; lower lr"; an input_shape the model cannot take was
    torch's raw "mat1 and mat2 shapes cannot be multiplied" from the classifier probe."""
    from tenfold.gradinversion.attack import classifier_name

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([2])
    g = simulate_client(net, x, y)
    kw = dict(num_images=1, mean=[0.0] * 3, std=[1.0] * 3, input_shape=(3, 6, 6))
    with pytest.raises(InputError, match=r"is float16; pass float32 or float64"):
        build(PRESETS["smoke"]).run(net, [t.half() for t in g], **kw)
    with pytest.raises(InputError, match=r"forward on a probe of shape \(1, 3, 5, 5\) failed .*mat1 and mat2"):
        classifier_name(net, (3, 5, 5))
    assert classifier_name(net, (3, 6, 6)) == "3"
    res = build(dataclasses.replace(PRESETS["smoke"], iterations=2)).run(net, [t.double() for t in g], **kw)
    assert res.labels.tolist() == [2]  # float64 gradients of a float32 model are taken


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


class _Tensors:
    """A dataset stand-in: ``tensors()`` returns the images and labels it was made with."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


@pytest.mark.parametrize("data,x,y,match", [
    # 1-channel data on a 3-channel CIFAR model said "images must have shape (B, 3, *, *), got (2, 1, 28, 28)"
    ("grey", torch.rand(6, 1, 28, 28), torch.arange(6), "grey images have 1 channel.* the model cifar10-resnet20 "
     "expects 3"),
    # a folder of 11 classes for a 10-class model said "y must hold class labels in [0, 10) ..., got 10" (session 26)
    ("eleven", torch.rand(11, 3, 32, 32), torch.arange(11), "eleven holds labels up to 10 but the model "
     "cifar10-resnet20 has 10 classes"),
])
def test_data_the_model_cannot_take_names_the_data_and_the_model(tmp_path, monkeypatch, data, x, y, match):
    """Refused by leak and audit before any work, in one line that names both."""
    from tenfold.gradinversion import verbs

    monkeypatch.setattr(verbs, "load_dataset", lambda name: _Tensors(x, y))
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    for verb, kw in ((verbs.leak, dict(batch_size=2)), (verbs.audit, dict(batch_sizes=(1,)))):
        with pytest.raises(DataError, match=match):
            verb(PRESETS["smoke"], tmp_path, data=data, **kw)
    assert list(tmp_path.iterdir()) == []


def test_the_api_names_a_channel_mismatch():
    with pytest.raises(InputError, match=r"x has 1 channel\(s\) but the model expects 3"):
        simulate_client(_tiny_net(), torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))


def test_train_mode_bn_on_one_value_per_channel_is_one_line():
    """A torchvision ResNet at 32 px reduces one image to 1x1 before its last BN layers: a train-mode client of
    batch 1 was torch's raw ValueError (leak with bn_stats=user, audit with client_mode=train)."""
    from tenfold.gradinversion.attack import bn_batch_stats

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4, 5))
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([2])
    for call in (lambda: simulate_client(net, x, y, mode="train"), lambda: bn_batch_stats(net, x, mode="train")):
        with pytest.raises(InputError, match=r"train-mode client cannot run this model on a batch of 1 .* "
                                             r"client_mode=eval or a larger batch"):
            call()
    assert len(simulate_client(net, x, y, mode="eval")) == 6  # eval mode is defined, and batch 2 in train mode
    assert len(simulate_client(net, torch.rand(2, 3, 6, 6), torch.tensor([2, 3]), mode="train")) == 6


class _HeadFirst(nn.Module):
    """The classifier declared before the body (whose last layer is a Linear too), an unused trainable head after."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 5)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.ReLU())
        self.aux = nn.Linear(16, 3)  # never run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_the_classifier_is_the_linear_that_returns_the_logits_and_unused_weights_share_zeros():
    """Declaration order picked `aux` (or the body's Linear): labels came from a 3- or 16-row layer and the attack
    died with an IndexError; a parameter the forward never uses was a raw autograd RuntimeError in the client."""
    from tenfold.gradinversion.attack import fc_layer

    torch.manual_seed(0)
    net = _HeadFirst().eval()
    idx, fc = fc_layer(net, (3, 6, 6))
    assert fc is net.head and idx == 0
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([3])
    g = simulate_client(net, x, y)
    assert len(g) == 6 and not g[4].any() and not g[5].any() and g[0].any()  # aux: zeros, as a client shares
    labels = build(PRESETS["smoke"]).restore_labels(net, g, 1, input_shape=(3, 6, 6))
    assert labels.tolist() == [3]


class _Outputs(nn.Module):
    """A classifier `fc` whose logits come back as ``kind``; an auxiliary head of the same width runs after it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU())
        self.fc = nn.Linear(8, 5)
        self.aux = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        out, _ = self.fc(h), self.aux(h)
        if self.kind == "view":
            return out.view(-1, 5)
        if self.kind == "tuple":
            return out, h
        if self.kind == "tuple_logits_second":
            return h, out
        if self.kind == "named_tuple":
            return _Named(out, h)
        if self.kind == "one_tensor_tuple":
            return (out,)
        return {"logits": out, "features": h}


_Named = collections.namedtuple("_Named", ["logits", "aux"])


@pytest.mark.parametrize("kind", ["view", "dict", "named_tuple", "one_tensor_tuple"])
def test_the_classifier_is_found_through_a_view_a_dict_or_a_named_tuple(kind):
    """The review of session 21's own fix: a tuple or dict output was refused, and through .view() the auxiliary head
    of the same width (run after it) was taken. Session 22: the client and the attack read the same logits (a dict
    model's gradient was an AttributeError in simulate_client)."""
    from tenfold.gradinversion.attack import classifier_name

    net = _Outputs(kind).eval()
    assert classifier_name(net, (3, 6, 6)) == "fc"
    torch.manual_seed(0)
    g = simulate_client(net, torch.rand(1, 3, 6, 6), torch.tensor([3]))
    assert build(PRESETS["smoke"]).restore_labels(net, g, 1, input_shape=(3, 6, 6)).tolist() == [3]


@pytest.mark.parametrize("kind", ["tuple", "tuple_logits_second"])
def test_a_tuple_of_several_tensors_is_refused_in_one_line_whichever_holds_the_logits(kind):
    """Session 22: a tuple's first tensor was taken as the logits, so a (features, logits) model had its feature
    layer read as the classifier; which entry is the logits cannot be told, so it is one line asking for a wrapper."""
    from tenfold.gradinversion.attack import classifier_name

    net = _Outputs(kind).eval()
    with pytest.raises(ConfigError, match="returns a tuple of 2 entries, in which tenfold cannot tell the logits"):
        classifier_name(net, (3, 6, 6))
    with pytest.raises(ConfigError, match="cannot tell the logits"):
        simulate_client(net, torch.rand(1, 3, 6, 6), torch.tensor([3]))


class _SqueezeExcite(nn.Module):
    """A 1x1-conv head (no Linear classifier) behind a squeeze-excitation block whose bottleneck Linear has as many
    outputs as there are classes (10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 40, 3, 2, 1), nn.ReLU())
        self.se = nn.Sequential(nn.Linear(40, 10), nn.ReLU(), nn.Linear(10, 40), nn.Sigmoid())
        self.head = nn.Conv2d(40, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        h = h * self.se(h.mean((2, 3)))[:, :, None, None]
        return self.head(h).mean((2, 3))


class _Temperature(nn.Module):
    """logits = fc(h) / T: the classifier's output is not the logits tensor, but the last Linear to run has their
    shape."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x)) / 2.0


def test_a_bottleneck_with_as_many_outputs_as_classes_is_not_taken_for_the_classifier():
    """Session 22 review: with a 1x1-conv head, the SE block's Linear(40, 10) was read as the classifier (any Linear
    with as many outputs as classes), and labels came back wrong with no word. Only the last Linear to run may stand
    for logits it does not output itself, and only with their shape (a temperature still works)."""
    from tenfold.gradinversion.attack import classifier_name

    with pytest.raises(ConfigError,
                       match=r"cannot tell which nn.Linear layer gives the logits.*\(se.2\).*labels=oracle"):
        classifier_name(_SqueezeExcite().eval(), (3, 16, 16))
    net = _Temperature().eval()
    assert classifier_name(net, (3, 6, 6)) == "fc"
    g = simulate_client(net, torch.rand(1, 3, 6, 6), torch.tensor([2]))
    assert build(PRESETS["smoke"]).restore_labels(net, g, 1, input_shape=(3, 6, 6)).tolist() == [2]


def test_audit_refuses_a_global_defence_and_a_batch_the_data_cannot_fill_before_any_attack(tmp_path, monkeypatch):
    """--set noise_sigma=0.5 was ignored by every row but recorded as the run's defence; --batch-sizes 1 600 on 500
    images ran all of B = 1 and then failed (and a resume could not drop the size)."""
    from tenfold.gradinversion import verbs

    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    cfg = dataclasses.replace(PRESETS["smoke"], noise_sigma=0.5)
    with pytest.raises(ConfigError, match="audit sets the defences row by row .* noise_sigma=0.5"):
        verbs.audit(cfg, tmp_path / "a", batch_sizes=(1,), data="cifar10-mini", iterations=1)
    with pytest.raises(ConfigError, match="batch size must be between 1 and the dataset's 500 images, got 600"):
        verbs.audit(PRESETS["smoke"], tmp_path / "b", batch_sizes=(1, 600), data="cifar10-mini", iterations=1)


def test_an_attack_on_a_leak_records_the_leaks_client_settings(tmp_path):
    """`attack --target LEAK --set noise_sigma=0.1` attacked with the leak's 0.0 (and said so) but kept 0.1 in its
    config.json, which --resume reloads."""
    from tenfold.gradinversion import verbs

    (tmp_path / "config.json").write_text(json.dumps({"config": {"noise_sigma": 0.1, "update": "gradient"},
                                                      "options": {"data": "cifar10-test"}}))
    verbs._record_options(tmp_path, {"data": "cifar10-mini"}, dataclasses.replace(PRESETS["smoke"], noise_sigma=0.0))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"] == {"noise_sigma": 0.0, "update": "gradient"} and saved["options"]["data"] == "cifar10-mini"


def test_model_names_paths_and_counts_the_cli_takes(tmp_path, monkeypatch):
    """`torchvision-vit_b_16` or `torchvision-list_models` were tried (a traceback); `--calibrate-bn-images -5` was 0;
    a leak of `folder:rel` could not be attacked from another directory; an ImageNet ResNet's weights were called
    "a CIFAR ResNet-14"."""
    import torchvision

    from tenfold.core.models import _resnet_depth_of
    from tenfold.gradinversion import verbs

    for name in ("torchvision-vit_b_16", "torchvision-list_models"):
        with pytest.raises(ConfigError, match="unknown torchvision model .* choose one of: torchvision-resnet18"):
            verbs.load_model(name)
    with pytest.raises(ConfigError, match="calibrate-bn-images must be a whole number >= 0, got -5"):
        verbs.load_model("cifar10-resnet20", "none", calibrate_bn_images=-5)
    monkeypatch.chdir(tmp_path)
    assert verbs.absolute_spec("folder:rel/imgs") == f"folder:{tmp_path / 'rel' / 'imgs'}"
    assert verbs.absolute_spec("cifar10-mini") == "cifar10-mini"
    assert verbs._absolute_weights("w.pth") == str(tmp_path / "w.pth") and verbs._absolute_weights("none") == "none"
    assert _resnet_depth_of(torchvision.models.resnet18(num_classes=10).state_dict()) is None
    assert _resnet_depth_of(_cifar_state("cifar10-resnet20")) == 20


def _cifar_state(name: str) -> dict:
    from tenfold.core.models import build_model

    return build_model(name).state_dict()


def test_fedavg_and_defences_review_of_session21(tmp_path, monkeypatch):
    """A diverged FedAvg client (or local_lr <= 0, gradient ascent) reached the leak file and was blamed on the user's
    input later; pruning took int(0.29 * 100) = 28 entries and zeroed every entry tied with the threshold; a noise
    that overflows float32 went through; audit rows whose values print alike shared one name."""
    from tenfold.gradinversion import verbs
    from tenfold.gradinversion.attack import apply_defences

    net, x, y = _tiny_net(), torch.rand(2, 3, 6, 6), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="local_lr must be a finite number > 0"):
        simulate_client(net, x, y, update="fedavg", local_steps=2, local_lr=-1.0)
    with pytest.raises(InputError, match="local SGD steps at local_lr 1e\\+30 diverged"):
        simulate_client(net, x, y, update="fedavg", local_steps=3, local_lr=1e30)
    g = torch.arange(1.0, 101.0)
    assert int((apply_defences([g], prune_ratio=0.29)[0] == 0).sum()) == 29
    ties = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert int((apply_defences([ties], prune_ratio=0.2)[0] == 0).sum()) == 2
    with pytest.raises(ConfigError, match="overflows"):
        apply_defences([torch.ones(3)], noise_sigma=1e39)
    monkeypatch.setattr(verbs, "run_attack", _no_attack)
    with pytest.raises(ConfigError, match="print alike: noise 0.1"):
        verbs.audit(PRESETS["smoke"], tmp_path, batch_sizes=(1,), noise_sigmas=(0.1, 0.1000001), data="cifar10-mini",
                    iterations=1)


def test_an_attack_resume_refuses_weights_changed_since_the_run_started(tmp_path):
    """Session 22 review: --resume reloads --weights from its path; a file replaced in between was attacked with
    the first run's checkpointed images without a word. The check runs before the model loads."""
    from tenfold.core.io import InputError
    from tenfold.core.models import default_weights
    from tenfold.gradinversion import verbs

    w = tmp_path / "w.th"
    shutil.copy(default_weights("cifar10-resnet20"), w)
    kw = dict(weights=str(w), data="cifar10-mini", batch_size=1, iterations=1)
    verbs.attack(PRESETS["smoke"], tmp_path / "a", **kw)
    with open(w, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match=r"--weights .*w\.th has changed since the run started"):
        verbs.attack(PRESETS["smoke"], tmp_path / "a", **kw, resume=True)
