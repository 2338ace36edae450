"""NViT's bad-input checks: every one is a single tenfold error line, never a traceback or a silent wrong answer
(LUT values, a missing or mismatched teacher, export's LUT checks, NaN weights, config values, macs_params)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tenfold.core.io import CheckpointError, ConfigError, DataError, InputError, write_json
from tenfold.core.latency import LatencyTable
from tenfold.core.models import VisionTransformer
from tenfold.nvit import PRESETS, api
from tenfold.nvit.model import GatedViT, macs_params, save_dense, spec_of
from tenfold.nvit.prune import LatencyModel, synthetic_lut

torch.set_num_threads(1)

# the tiny model below: E 12, 2 heads, qk = v = 6, MLP 24, 5 tokens
AXES = {"embed": [4, 12], "heads": [1, 2], "qk": [2, 6], "v": [2, 6], "mlp": [4, 24]}


def _vit(num_classes: int = 10, embed: int = 12, img: int = 8) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=img, patch_size=4, embed_dim=embed, depth=1, num_heads=2, mlp_ratio=2.0,
                             num_classes=num_classes)


def _cfg(**kw) -> object:
    return dataclasses.replace(PRESETS["smoke"], img_size=8, **kw)


class _Stop(Exception):
    """Raised by a monkeypatched step past the checks under test: the input was accepted."""


def _stop(*a, **k):
    raise _Stop


def test_lut_with_nan_zero_or_negative_latencies_is_refused(tmp_path):
    """A NaN block latency pruned to 6.6 % and exited 0; a negative one "reached" the target and pruned nothing."""
    good = LatencyModel(synthetic_lut(AXES, 5), LatencyTable({"embed": AXES["embed"]}, np.array([1e-3, 2e-3])))
    write_json(tmp_path / "good.json", good.to_dict())
    assert api.load_lut(str(tmp_path / "good.json")).stem is not None
    for name, table, value in (("nan", "block", float("nan")), ("neg", "block", -1.0), ("zero", "block", 0.0),
                               ("stem", "stem", -1e-3)):
        d = good.to_dict()
        vals = np.array(d[table]["values"], dtype=np.float64)
        vals.flat[1] = value
        d[table]["values"] = vals.tolist()
        write_json(tmp_path / f"{name}.json", d)
        with pytest.raises(DataError, match=rf"{name}\.json: 1 of the {table} table"):
            api.load_lut(str(tmp_path / f"{name}.json"))


def test_finetune_refuses_a_missing_teacher(tmp_path):
    """A given --teacher that does not exist turned distillation off without a word."""
    save_dense(_vit(), tmp_path / "prune" / "pruned")
    with pytest.raises(CheckpointError, match="^teacher: NViT model file not found: .*nope.json"):
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "prune"), teacher=str(tmp_path / "nope.json"))


def test_finetune_resume_with_no_checkpoint_says_so(tmp_path):
    """finetune --resume on a run with no checkpoint started over from step 0 without a word."""
    save_dense(_vit(), tmp_path / "prune" / "pruned")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "prune"), resume=True)


def test_finetune_checkpoints_before_its_end(tmp_path, monkeypatch):
    """A fine-tuning run of 1,000 steps or fewer checkpointed only at its end (ckpt_every = min(1000, steps)), so an
    interrupted one could not resume; now every ``finetune_ckpt_every`` steps, as the prune loop does."""
    saved: list[int] = []
    real_save = api.Checkpointer.save

    def save(self, state, step, *a, **k):
        saved.append(step)
        return real_save(self, state, step, *a, **k)

    monkeypatch.setattr(api.Checkpointer, "save", save)
    save_dense(_vit(), tmp_path / "prune" / "pruned")
    cfg = _cfg(eval_limit=16, train_limit=32, batch_size=8)
    assert cfg.finetune_ckpt_every == 8 and cfg.finetune_steps == 16
    api.finetune(cfg, tmp_path / "ft", model=str(tmp_path / "prune"))
    assert 8 in saved and 16 in saved


def test_finetune_refuses_a_teacher_of_another_model(tmp_path):
    """A teacher with another class count trained with a huge loss; one of another image size failed mid-run."""
    save_dense(_vit(), tmp_path / "prune" / "pruned")
    save_dense(_vit(num_classes=5), tmp_path / "t5")
    with pytest.raises(ConfigError, match="has 5 classes, the student 10"):
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "prune"), teacher=str(tmp_path / "t5.json"))
    save_dense(_vit(img=12), tmp_path / "t12")
    with pytest.raises(ConfigError, match=r"takes \(3, 12, 12\) images"):
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "prune"), teacher=str(tmp_path / "t12.json"))


def test_export_makes_the_lut_checks_prune_makes(tmp_path, monkeypatch):
    """export reported a wrong lut_latency_ratio from a LUT measured at another size or whose grid stopped below the
    unpruned model's dims (or started above the pruned one's)."""
    monkeypatch.setattr(api, "cost_report", _stop)  # past the checks: the LUT was accepted
    run = tmp_path / "ft"
    save_dense(_vit(embed=8), run / "model")  # pruned: E 8
    save_dense(_vit(embed=12), run / "teacher")  # unpruned: E 12
    cases = (("fits", AXES, 5, None), ("tokens", AXES, 17, "measured at 17 tokens"),
             ("short", {**AXES, "embed": [4, 8]}, 5, "embed 12 > 8"),
             ("high", {**AXES, "embed": [10, 12]}, 5, "embed 10 > minimum 8"))
    for name, axes, tokens, match in cases:
        write_json(tmp_path / f"{name}.json", LatencyModel(synthetic_lut(axes, tokens)).to_dict())
        if match is None:
            with pytest.raises(_Stop):
                api.export(_cfg(), tmp_path / name, model=str(run / "model.json"), lut=str(tmp_path / f"{name}.json"))
        else:
            with pytest.raises(ConfigError, match=match):
                api.export(_cfg(), tmp_path / name, model=str(run / "model.json"), lut=str(tmp_path / f"{name}.json"))


def test_models_with_nan_weights_are_refused_on_load(tmp_path):
    """export wrote ONNX from NaN weights and exited 0; prune stopped on 'non-finite loss ... lower prune_lr'."""
    vit = _vit()
    with torch.no_grad():
        vit.blocks[0].attn.proj.bias[0] = float("nan")
    save_dense(vit, tmp_path / "nan" / "pruned")
    with pytest.raises(CheckpointError, match="NaN/Inf weights .* 'blocks.0.attn.proj.bias'"):
        api.export(_cfg(), tmp_path / "ex", model=str(tmp_path / "nan"), onnx=False)
    with pytest.raises(CheckpointError, match="NaN/Inf weights"):
        api.prune(_cfg(), tmp_path / "pr", model=str(tmp_path / "nan"))
    from safetensors.torch import save_file

    cfg = _cfg(embed_dim=12, depth=1, num_heads=2)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="NaN/Inf weights"):
        api.load_model(cfg, "vit", str(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("key, value, match", [
    ("prune_ckpt_every", -1, "prune_ckpt_every must be >= 0"),
    ("batch_size", 0, "batch_size must be >= 1"),
    ("prune_lr", float("nan"), "prune_lr must be a finite number > 0"),
    ("prune_lr", 0.0, "prune_lr must be a finite number > 0"),
    ("finetune_lr", -1e-3, "finetune_lr must be a finite number > 0"),
    ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
    ("label_smoothing", -0.1, r"label_smoothing must be in \[0, 1\)"),
    ("train_limit", -1, "train_limit must be >= 0"),
    ("depth", 0, "depth must be >= 1"),
    ("patch_size", 0, "patch_size must be >= 1"),
    ("patch_size", 5, "patch_size 5 does not divide img_size 16"),
    ("amp", "fp8", "amp must be one of"),
    ("pruning_momentum", 1.0, r"pruning_momentum must be in \[0, 1\)"),
    ("kd_temperature", 0.0, "kd_temperature must be a finite number > 0"),
    ("num_heads", 0, "num_heads must be >= 1"),  # a ZeroDivisionError in the lut verb
    ("num_heads", 5, "num_heads 5 does not divide embed_dim 32"),
    ("embed_dim", -8, "embed_dim must be >= 1"),
    ("lut_batch", 0, "lut_batch must be >= 1"),
    ("mlp_ratio", 0.0, "mlp_ratio must be a finite number > 0"),  # a ViT without MLPs, pruned without a word
    ("weight_decay", float("nan"), "weight_decay must be a finite number >= 0"),
    ("eta", float("nan"), "eta must be a finite number >= 0"),  # NaN scores: an arbitrary pruning order
    ("kd_coef", float("nan"), "kd_coef must be a finite number >= 0"),  # NaN > 0 is false: KD silently off
    ("ce_coef", -1.0, "ce_coef must be a finite number >= 0"),
    ("scale_emb", 0.0, "scale_emb must be a finite number > 0"),  # zeroed EMB's importance: pruned first
    ("scale_qk", float("nan"), "scale_qk must be a finite number > 0"),
])
def test_config_refuses_values_that_would_run_silently_wrong(key, value, match):
    """Checked when the config is made, so every verb (and a saved config) gets them; kd_temperature 0 and
    batch_size 0 surfaced as 'non-finite loss ... lower prune_lr'."""
    from tenfold.core.config import apply_overrides

    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(PRESETS["smoke"], **{key: value})
    with pytest.raises(ConfigError, match=match):  # the --set path
        apply_overrides(PRESETS["smoke"], [f"{key}={value}"])


def test_presets_pass_the_config_checks():
    for cfg in PRESETS.values():
        assert dataclasses.replace(cfg) == cfg


def test_macs_params_takes_a_module_or_says_what_it_takes():
    vit = _vit()
    assert macs_params(vit) == macs_params(spec_of(vit)) == macs_params(GatedViT(vit))
    with pytest.raises(InputError, match="takes a ViTSpec"):
        macs_params(torch.nn.Linear(2, 2))


def test_timm_weights_that_do_not_fit_are_one_line(tmp_path):
    """A weights file that does not fit a timm model was a raw RuntimeError from load_state_dict."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _vit().state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="missing key"):
        api.load_model(_cfg(), "timm:vit_tiny_patch16_224", str(tmp_path / "w.safetensors"))


def test_data_with_more_classes_than_the_model_is_one_line(monkeypatch):
    """A dataset whose labels the classifier has no output for was an IndexError mid-training (prune, finetune)."""
    from tenfold.core.data import synthetic_classification

    monkeypatch.setattr(api, "load_dataset", lambda spec, limit=None: synthetic_classification(16, 10, 8, seed=0))
    cfg = _cfg()
    assert api.load_data("folder:x", 0, cfg, num_classes=10).num_classes == 10
    with pytest.raises(DataError, match="has 10 classes but the model predicts 5"):
        api.load_data("folder:x", 0, cfg, num_classes=5)


def test_prune_and_finetune_resumes_refuse_inputs_changed_since_the_run_started(tmp_path, monkeypatch):
    """Session 22 review: prune --resume reloads its teacher from --weights and finetune --resume from teacher.json;
    a file replaced in between was mixed with the checkpointed student without a word (every pruned tensor
    differed). The checks run before any loading, so the loops are stopped right after them here."""
    from safetensors.torch import save_file

    w = tmp_path / "w.safetensors"
    net = api.load_model(_cfg(), "vit", "")  # the config's ViT
    save_file(net.state_dict(), str(w))
    run = tmp_path / "prune"
    monkeypatch.setattr(api, "prune_model", _stop)
    with pytest.raises(_Stop):  # a fresh run records its inputs, then prunes
        api.prune(_cfg(), run, model="vit", weights=str(w))
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-00000004.json").write_text("{}")
    (run / "checkpoints" / "step-00000004.safetensors").write_bytes(b"")
    with pytest.raises(_Stop):  # the same file: the resume goes on
        api.prune(_cfg(), run, model="vit", weights=str(w), resume=True)
    with torch.no_grad():
        net.head.weight.add_(1.0)
    save_file(net.state_dict(), str(w))
    with pytest.raises(InputError, match=r"--weights .*w\.safetensors has changed since the run started"):
        api.prune(_cfg(), run, model="vit", weights=str(w), resume=True)
    save_dense(_vit(), tmp_path / "p2" / "pruned")
    save_dense(_vit(), tmp_path / "p2" / "teacher")
    monkeypatch.setattr(api, "finetune_model", _stop)
    with pytest.raises(_Stop):  # the model file itself, so the teacher beside it is an input of its own
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "p2" / "pruned.json"))
    (tmp_path / "ft" / "checkpoints").mkdir(parents=True)
    (tmp_path / "ft" / "checkpoints" / "step-00000010.json").write_text("{}")
    (tmp_path / "ft" / "checkpoints" / "step-00000010.safetensors").write_bytes(b"")
    other = _vit()
    with torch.no_grad():
        other.head.weight.add_(1.0)
    save_dense(other, tmp_path / "p2" / "teacher")
    with pytest.raises(InputError, match=r"^teacher \(tensors\) .*teacher\.safetensors has changed since the run"):
        api.finetune(_cfg(), tmp_path / "ft", model=str(tmp_path / "p2" / "pruned.json"), resume=True)


def test_a_prune_batch_larger_than_the_data_is_refused(tmp_path):
    """Session 22 review: batch_size=100000 on 256 images pruned with the whole set per step while the learning rate
    scaled with the asked batch (prune_lr x 100000 / 512), and exited 0 with the loss climbing; finetune and lsgm
    train refuse it."""
    with pytest.raises(ConfigError, match=r"the dataset has \d+ samples, fewer than batch_size=100000"):
        api.prune(_cfg(batch_size=100000), tmp_path / "p", model="vit")


def test_session27_walkthrough_weights_timm_variants_round_to_grad_clip_and_no_teacher(tmp_path, monkeypatch):
    """--weights with an NViT model was ignored without a word; a parallel-block timm ViT was an AttributeError and
    a hybrid one was blamed on its normalisation; round_to was taken and ignored; the divergence hint named a
    grad_clip nvit did not have; fine-tuning a model copied away from its teacher dropped distillation silently."""
    import timm

    from tenfold.core.config import apply_overrides
    from tenfold.core.io import TenfoldWarning
    from tenfold.nvit.model import from_timm

    save_dense(_vit(), tmp_path / "prune" / "pruned")
    with pytest.raises(ConfigError, match="--weights applies to --model vit or timm:NAME, not to .*prune"):
        api.load_model(_cfg(), str(tmp_path / "prune"), str(tmp_path / "w.safetensors"))
    assert spec_of(api.load_model(_cfg(), str(tmp_path / "prune"))) == spec_of(_vit())
    with pytest.raises(ConfigError, match="blocks of type ParallelThingsBlock"):
        from_timm(timm.create_model("vit_small_patch16_18x2_224", pretrained=False))
    with pytest.raises(ConfigError, match="is a hybrid ViT"):
        from_timm(timm.create_model("vit_tiny_r_s16_p8_224", pretrained=False))
    with pytest.raises(ConfigError, match="round_to=8: rounding the pruned dims is not implemented yet"):
        apply_overrides(PRESETS["smoke"], ["round_to=8"])
    for bad in ("nan", "-1"):
        with pytest.raises(ConfigError, match="grad_clip must be a finite number >= 0"):
            apply_overrides(PRESETS["smoke"], [f"grad_clip={bad}"])
    seen = {}

    def fake_fit(*a, **k):
        seen.update(grad_clip=k["grad_clip"])
        raise _Stop

    monkeypatch.setattr(api, "fit", fake_fit)
    for clip, passed in ((0.0, None), (2.5, 2.5)):
        with pytest.warns(TenfoldWarning, match="no teacher: .*teacher.json is not there, so fine-tuning runs "
                                                "without distillation"), pytest.raises(_Stop):
            api.finetune(_cfg(grad_clip=clip, train_limit=16, eval_limit=16), tmp_path / f"ft{clip}",
                         model=str(tmp_path / "prune"))
        assert seen["grad_clip"] == passed


def test_data_that_does_not_fit_the_models_images_is_refused_before_training(monkeypatch):
    """A 224-px timm model under a 16-px preset, or grey images for a colour model, failed once training had
    started ("images must have shape (B, 3, 224, 224)", no hint of img_size)."""
    import tenfold.core.data as cd

    spec = spec_of(_vit(img=8))
    with pytest.raises(ConfigError, match=r"the model takes 8x8 images but img_size is 16; --set img_size=8"):
        api.load_data("synthetic", 8, PRESETS["smoke"], model=spec)
    assert api.load_data("synthetic", 8, _cfg(), model=spec).images.shape[1:] == (3, 8, 8)
    grey = cd.synthetic_classification(8, num_classes=10, size=8, seed=0)
    grey.images = grey.images[:, :1]
    monkeypatch.setattr(api, "load_dataset", lambda *a, **k: grey)
    with pytest.raises(DataError, match="g has 1-channel images but the model takes 3"):
        api.load_data("g", 0, _cfg(), model=spec)
