"""core.models and core.evaluate: the CIFAR ResNets match the published weight files and parameter
counts, option-A shortcuts match a naive reference, the ViT matches timm, errors are one line,
and the pretrained ResNets reach their measured accuracy on the real JPEG CIFAR-10 test half."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tenfold.core.evaluate import evaluate_classifier, run_eval
from tenfold.core.io import CheckpointError, ConfigError, DataError, InputError
from tenfold.core.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MODELS,
    Attention,
    BasicBlock,
    BlockDims,
    DropPath,
    ShortcutA,
    VisionTransformer,
    build_model,
    cifar_resnet,
    default_weights,
    load_state_dict_file,
    vit_tiny_cifar,
)

DEPTHS = (20, 32, 44, 56)


def _weights(root, depth: int):
    hits = sorted((root / "weights").glob(f"cifar10-resnet{depth}-*.th"))
    assert hits, f"no cifar10-resnet{depth}-*.th under {root / 'weights'}"
    return hits[0]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# CIFAR ResNet
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", DEPTHS)
def test_state_dict_keys_match_weight_files(shared_data, depth):
    raw = torch.load(_weights(shared_data, depth), map_location="cpu", weights_only=True)["state_dict"]
    file_shapes = {k.removeprefix("module."): tuple(v.shape) for k, v in raw.items()}
    model = cifar_resnet(depth)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == file_shapes
    loaded = cifar_resnet(depth, weights=_weights(shared_data, depth))  # strict load
    for k, v in raw.items():
        torch.testing.assert_close(loaded.state_dict()[k.removeprefix("module.")], v, rtol=0, atol=0)


@pytest.mark.parametrize("depth,millions,exact", [(20, 0.27, 269_722), (32, 0.46, 464_154),
                                                   (44, 0.66, 658_586), (56, 0.85, 853_018)])
def test_parameter_counts_match_paper(depth, millions, exact):
    n = sum(p.numel() for p in cifar_resnet(depth).parameters())
    assert round(n / 1e6, 2) == millions, n  # He et al. 2016, Table 6
    assert n == exact  # counted in the published weight files (BN running stats excluded)


def _naive_shortcut_a(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Option A by explicit loops: out[b, pad + c, i, j] = x[b, c, 2i, 2j], zeros elsewhere."""
    B, C, H, W = x.shape
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    pad = (out_channels - C) // 2
    out = torch.zeros(B, out_channels, Ho, Wo, dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    out[b, pad + c, i, j] = x[b, c, 2 * i, 2 * j]
    return out


@pytest.mark.parametrize("size", [8, 7])
def test_option_a_shortcut_matches_naive_reference(size):
    x = torch.randn(2, 4, size, size, dtype=torch.float64)
    torch.testing.assert_close(ShortcutA(4, 2)(x), _naive_shortcut_a(x, 8), rtol=0, atol=0)


def test_downsampling_block_uses_option_a_shortcut():
    block = BasicBlock(16, 32, stride=2).double().eval()
    for bn in (block.bn1, block.bn2):  # non-trivial BN statistics
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        h = F.relu(F.batch_norm(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1.running_mean,
                                block.bn1.running_var, block.bn1.weight, block.bn1.bias, eps=block.bn1.eps))
        h = F.batch_norm(F.conv2d(h, block.conv2.weight, padding=1), block.bn2.running_mean,
                         block.bn2.running_var, block.bn2.weight, block.bn2.bias, eps=block.bn2.eps)
        want = F.relu(h + _naive_shortcut_a(x, 32))
        torch.testing.assert_close(block(x), want)
    assert not list(block.shortcut.parameters())


def test_normalize_is_inside_and_not_in_state_dict():
    model = cifar_resnet(20).eval()
    assert not any("normalize" in k or k.endswith(("mean", "std")) and "bn" not in k for k in model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = F.relu(model.bn1(model.conv1((x - mean) / std)))
        want = model.linear(model.layer3(model.layer2(model.layer1(feats))).mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), want)


def test_wrong_depth_weights_raise_checkpoint_error(tmp_path):
    path = tmp_path / "r32.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in cifar_resnet(32).state_dict().items()}}, path)
    with pytest.raises(CheckpointError, match="ResNet-32") as err:
        cifar_resnet(20, weights=path)
    assert str(path) in _one_line(err)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        build_model("cifar10-resnet32", weights=path, num_classes=100)


def test_wrong_depth_real_weights_raise_checkpoint_error(shared_data):
    with pytest.raises(CheckpointError, match="ResNet-56") as err:
        build_model("cifar10-resnet20", weights=_weights(shared_data, 56))
    _one_line(err)


def test_missing_or_bad_weights_file(tmp_path):
    missing = tmp_path / "nope.th"
    with pytest.raises(DataError, match="nope.th") as err:
        cifar_resnet(20, weights=missing)
    _one_line(err)
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.th is not a PyTorch weights file"):
        cifar_resnet(20, weights=bad)
    import os
    import pickle

    (tmp_path / "code.th").write_bytes(pickle.dumps({"x": os.system}))  # a pickle that would run code
    with pytest.raises(CheckpointError, match=r"code.th was refused: loading it would build Python objects, not only "
                                              r"tensors \(Unsupported operand") as err:
        cifar_resnet(20, weights=tmp_path / "code.th")
    assert "weights_only=False" not in str(err.value)  # session 22: torch's advice to load it unsafely was quoted
    torch.save({"x": os.system}, tmp_path / "code2.th")  # a torch.save archive naming a function: named back
    with pytest.raises(CheckpointError, match=r"code2.th was refused: .*\(it names the Python object "
                                              r"(posix|nt)\.system\)"):
        cifar_resnet(20, weights=tmp_path / "code2.th")
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        cifar_resnet(20, weights=tmp_path / "bad.safetensors")
    torch.save({"epoch": 3}, tmp_path / "nosd.th")
    with pytest.raises(CheckpointError, match="no state_dict"):
        cifar_resnet(20, weights=tmp_path / "nosd.th")


def test_state_dict_file_formats_and_prefixes(tmp_path):
    from safetensors.torch import save_file

    sd = cifar_resnet(20).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        got = load_state_dict_file(tmp_path / name)
        assert got.keys() == sd.keys()
        model = cifar_resnet(20, weights=tmp_path / name)
        torch.testing.assert_close(model.conv1.weight, sd["conv1.weight"])


def test_unknown_model_and_option_raise_config_error():
    with pytest.raises(ConfigError, match="cifar10-resnet56") as err:
        build_model("resnet18")
    assert all(n in _one_line(err) for n in MODELS)
    with pytest.raises(ConfigError, match="widht"):
        build_model("vit", widht=3)
    with pytest.raises(ConfigError, match="6n"):
        cifar_resnet(21)


@pytest.mark.parametrize("name,shape,dtype", [
    ("cifar10-resnet20", (2, 1, 32, 32), torch.float32),
    ("cifar10-resnet20", (3, 32, 32), torch.float32),
    ("cifar10-resnet20", (2, 3, 32, 32), torch.uint8),
    ("vit", (2, 3, 16, 16), torch.float32),
    ("vit", (2, 1, 32, 32), torch.float32),
])
def test_wrong_input_raises_input_error(name, shape, dtype):
    model = build_model(name)
    with pytest.raises(InputError, match="images") as err:
        model(torch.zeros(shape, dtype=dtype))
    _one_line(err)


def test_default_weights(shared_data):
    for d in DEPTHS:
        p = default_weights(f"cifar10-resnet{d}")
        assert p is not None and p.name.startswith(f"cifar10-resnet{d}-") and p.is_file()
    assert default_weights("vit") is None
    with pytest.raises(ConfigError):
        default_weights("cifar10-resnet18")


# --------------------------------------------------------------------------------------------
# Vision Transformer
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_vit_matches_timm_given_the_same_state_dict(qkv_bias):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    kw = {"img_size": 32, "patch_size": 8, "in_chans": 3, "num_classes": 7, "embed_dim": 48, "depth": 2,
          "num_heads": 3, "mlp_ratio": 2.0, "qkv_bias": qkv_bias}
    ours = VisionTransformer(**kw).eval()
    with torch.no_grad():  # make every parameter matter (zero biases would hide a mix-up)
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = TimmViT(**kw, global_pool="token", class_token=True).eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(4, 3, 32, 32)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref((x - mean) / std), rtol=0, atol=1e-5)
        # and the other way round: timm's own init loads into ours
        ref2 = TimmViT(**kw, global_pool="token", class_token=True).eval()
        ours.load_state_dict(ref2.state_dict(), strict=True)
        torch.testing.assert_close(ours(x), ref2((x - mean) / std), rtol=0, atol=1e-5)


def test_attention_with_unequal_qk_and_v_widths_matches_per_head_loop():
    dim, h, dq, dv = 20, 3, 4, 6
    attn = Attention(dim, h, qk_dim=dq, v_dim=dv).double().eval()
    assert attn.qkv.out_features == h * (2 * dq + dv) and attn.proj.in_features == h * dv
    x = torch.randn(2, 5, dim, dtype=torch.float64)
    qkv = attn.qkv(x)
    q_all, k_all, v_all = qkv[..., :h * dq], qkv[..., h * dq:2 * h * dq], qkv[..., 2 * h * dq:]
    heads = []
    for i in range(h):  # documented layout: [q | k | v], head-major inside each part
        q, k = q_all[..., i * dq:(i + 1) * dq], k_all[..., i * dq:(i + 1) * dq]
        v = v_all[..., i * dv:(i + 1) * dv]
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dq), dim=-1)
        heads.append(w @ v)
    want = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), want)


def test_vit_rebuilds_from_block_dims():
    dims = [BlockDims(2, 8, 4, 30), BlockDims(1, 5, 12, 7)]
    a = VisionTransformer(img_size=16, patch_size=4, embed_dim=24, num_classes=5, block_dims=dims).eval()
    assert a.block_dims() == dims
    b = VisionTransformer(img_size=16, patch_size=4, embed_dim=24, num_classes=5, block_dims=a.block_dims()).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        out = a(x)
        torch.testing.assert_close(b(x), out)
    assert out.shape == (3, 5) and torch.isfinite(out).all()


def test_drop_path_is_unbiased_per_sample_and_rises_linearly_with_depth() -> None:
    """Stochastic depth (timm / DeiT): a sample's branch is kept with probability 1 - p and then scaled by 1 / (1 - p),
    so its mean is unchanged; identity at eval time; block i gets rate i / (depth - 1) * drop_path_rate. Dropping the
    rescale or reversing the schedule kept every other test green."""
    dp = DropPath(0.25).train()
    torch.manual_seed(0)
    out = dp(torch.ones(4000, 3, 2, dtype=torch.float64))
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # one draw per sample
    assert set(per_sample[:, 0].unique().tolist()) == {0.0, 1 / 0.75}
    assert abs(per_sample[:, 0].mean().item() - 1.0) < 0.05  # unbiased (kept 75 % +- 0.7 % sd)
    x = torch.randn(3, 5)
    assert torch.equal(dp.eval()(x), x) and torch.equal(DropPath(0.0).train()(x), x)
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=24, depth=4, num_heads=3, drop_path_rate=0.3)
    assert [b.drop_path.p for b in vit.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_vit_tiny_cifar_preset_trains():
    model = vit_tiny_cifar(depth=2)
    assert model.input_size == (3, 32, 32) and model.num_classes == 10
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
class _StandIn:
    """A tiny dataset with ImageDataset's attributes: each image's pixel value encodes an id."""

    def __init__(self, n: int = 30, k: int = 6) -> None:
        self.labels = torch.arange(n) % k
        self.images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
        self.classes = [f"c{i}" for i in range(k)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / 255.0, int(self.labels[i])


def _planted_rank(ids: torch.Tensor, k: int) -> torch.Tensor:
    """Rank (0 = top-1) at which :class:`_Planted` puts the true label ``ids % k`` of image ``ids``."""
    return (ids // k + ids % k) % k


class _Planted(torch.nn.Module):
    """Reads each image's id and scores its true label at rank :func:`_planted_rank`."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = torch.round(x[:, 0, 0, 0] * 255).long()
        logits = torch.empty(len(ids), self.k)
        for b, i in enumerate(ids.tolist()):
            y, r = i % self.k, int(_planted_rank(torch.tensor(i), self.k))
            others = [c for c in range(self.k) if c != y]
            order = others[:r] + [y] + others[r:]
            logits[b, order] = torch.arange(self.k, 0, -1).float()
        return logits


def test_evaluate_classifier_counts_planted_ranks():
    n, k = 42, 6
    ds = _StandIn(n, k)
    model = _Planted(k).train()
    res = evaluate_classifier(model, ds, batch_size=8, progress=False)
    rank = _planted_rank(torch.arange(n), k)
    assert res["n"] == n
    assert res["top1"] == pytest.approx((rank == 0).float().mean().item())
    assert res["top5"] == pytest.approx((rank < 5).float().mean().item())
    assert torch.equal(res["correct"], rank == 0)  # per image, in dataset order
    assert 0 < res["top1"] < res["top5"] < 1
    per_class = {f"c{c}": (rank[ds.labels == c] == 0).float().mean().item() for c in range(k)}
    assert res["per_class"] == pytest.approx(per_class)
    assert len(set(per_class.values())) > 1
    assert model.training  # mode restored
    # the generic __getitem__ path gives the same numbers
    plain = torch.utils.data.Subset(ds, list(range(n)))
    res2 = evaluate_classifier(model, plain, batch_size=7, progress=False)
    assert (res2["top1"], res2["top5"], res2["n"]) == (res["top1"], res["top5"], res["n"])
    assert torch.equal(res2["correct"], res["correct"])


def test_evaluate_classifier_rejects_label_beyond_outputs():
    with pytest.raises(InputError, match="outputs"):
        evaluate_classifier(_Planted(3), _StandIn(12, 6), progress=False)


def test_run_eval_checks_image_size(tmp_path):
    path = tmp_path / "r20.th"
    torch.save({"state_dict": cifar_resnet(20).state_dict()}, path)
    with pytest.raises(InputError, match=r"\(1, 8, 8\)") as err:
        run_eval("cifar10-resnet20", path, "digits", limit=20, progress=False)
    _one_line(err)


def test_resnet20_accuracy_on_balanced_subset(shared_data):
    res = run_eval("cifar10-resnet20", None, "cifar10-test", batch_size=250, limit=500, progress=False)
    assert res["n"] == 500 and len(res["per_class"]) == 10
    assert res["top1"] >= 0.75, res["top1"]


@pytest.mark.slow
@pytest.mark.parametrize("depth,top1", [(20, 0.810), (32, None), (44, None), (56, 0.831)])
def test_full_accuracy_on_cifar10_test_even_half(shared_data, depth, top1):
    res = run_eval(f"cifar10-resnet{depth}", None, "cifar10-test", progress=False)
    assert res["n"] == 5000
    if top1 is not None:  # data/README.md's measured JPEG numbers
        assert abs(res["top1"] - top1) < 0.0015, res["top1"]
    else:
        assert res["top1"] > 0.80, res["top1"]


def test_a_weights_file_whose_content_no_longer_hashes_to_its_name_is_warned_of(tmp_path, shared_data):
    """The shared CIFAR ResNets are named NAME-<SHA-256 prefix>.th; 2,000 flipped bytes inside the tensor data
    loaded and scored 9 % top-1 without a word: now a warning (not an error: a hex suffix may be a git commit). An
    all-digit suffix (a date) is no hash and is not checked."""
    import shutil

    from tenfold.core.models import CifarResNet, default_weights, load_weights

    src = default_weights("cifar10-resnet20")
    good = tmp_path / src.name
    shutil.copy(src, good)
    load_weights(CifarResNet(20), good)  # intact: loads
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "damaged" / src.name
    bad.parent.mkdir()
    bad.write_bytes(bytes(data))
    from tenfold.core.io import TenfoldWarning

    with pytest.warns(TenfoldWarning, match=f"{src.name} fails its hash check: its name says SHA-256 "):
        load_weights(CifarResNet(20), bad)  # a byte inside the tensor data: the file still loads
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        for name in ("resnet20-20240101.th", "resnet20-3f2a9c1d.pt"):  # a date; a .pt is not checked
            shutil.copy(src, tmp_path / name)
            load_weights(CifarResNet(20), tmp_path / name)
