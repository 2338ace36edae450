"""Shared networks: the CIFAR ResNet-20/32/44/56 of He et al. (2016) and a small Vision Transformer.

Every tenfold classifier takes images in [0, 1], shape ``(B, C, H, W)``, and normalises them
itself: a :class:`Normalize` first step holds mean/std as non-persistent buffers, so the
state_dict keys are exactly those of the original networks and weight files load unchanged.
Each model also carries ``input_size = (C, H, W)`` and ``num_classes`` so callers can check data.

- :func:`cifar_resnet` builds ResNet-(6n+2) with option-A shortcuts (identity, stride-2
  subsampling, zero-padded channels), parameter names as in akamaster/pytorch_resnet_cifar10, so
  the pretrained ``cifar10-resnetNN-*.th`` files (ImageNet mean/std inputs) load with strict=True.
- :class:`VisionTransformer` uses timm's parameter names, so its state_dict loads into
  ``timm.models.vision_transformer.VisionTransformer`` (global_pool='token', class_token=True)
  and gives the same outputs. Its :class:`Attention` keeps ``num_heads``, ``qk_dim`` and ``v_dim``
  (per head) apart so that NViT can prune heads, q/k width, v width and MLP width per block.
- :func:`build_model` looks models up by name (:data:`MODELS`); :func:`default_weights` finds the
  pretrained file for a name under ``<data_root>/weights`` (ResNet-20 also ships in the package).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    TenfoldWarning,
    check_tensor,
    input_digest,
    load_torch_file,
    require_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean/std are non-persistent buffers (not in the state_dict)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ConfigError(f"Normalize needs mean and std of equal length and std > 0, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images ``(B, C, H, W)`` in [0, 1]."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def _check_images(x: torch.Tensor, channels: int, size: tuple[int, int] | None) -> None:
    """Raise InputError unless ``x`` is a float ``(B, channels, H, W)`` batch (``size`` = (H, W) if fixed)."""
    h, w = (None, None) if size is None else size
    check_tensor(x, "images", ("B", channels, h, w), dtype=_FLOAT_DTYPES, finite=False)


# --------------------------------------------------------------------------------------------
# CIFAR ResNet (He et al. 2016, Sec. 4.2): 3 stages of n basic blocks, 16/32/64 channels
# --------------------------------------------------------------------------------------------
class ShortcutA(nn.Module):
    """Option-A shortcut: identity subsampled by ``stride`` with ``extra`` zero channels split
    evenly before and after (parameter-free; He et al. 2016, Sec. 3.3 option (A))."""

    def __init__(self, extra: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = extra, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C + extra, ceil(H / s), ceil(W / s))``."""
        x = x[:, :, :: self.stride, :: self.stride]
        lo = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, lo, self.extra - lo))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(planes - in_planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_planes, H, W) -> (B, planes, H / stride, W / stride)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 CIFAR images in [0, 1]; ``forward`` returns logits ``(B, num_classes)``."""

    def __init__(self, depth: int = 20, num_classes: int = 10, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.num_classes = depth, num_classes
        self.input_size = (3, 32, 32)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)
        self.layer2 = self._stage(16, 32, n, stride=2)
        self.layer3 = self._stage(32, 64, n, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # He init for convs and the classifier, as in the reference code
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        """``n`` basic blocks; the first changes width and resolution."""
        blocks = [BasicBlock(in_planes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, 64)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        _check_images(x, 3, None)
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))  # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, H/4, W/4)
        return out.mean(dim=(2, 3))  # global average pool -> (B, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, 3, H, W)`` in [0, 1]."""
        return self.linear(self.forward_features(x))


def cifar_resnet(depth: int, num_classes: int = 10, weights: str | os.PathLike | None = None) -> CifarResNet:
    """CIFAR ResNet-``depth`` (20, 32, 44, 56, ...), optionally loading a ``.th``/``.pth``/safetensors file."""
    model = CifarResNet(depth, num_classes)
    if weights is not None:
        load_weights(model, weights, name=f"ResNet-{depth}")
    return model


# --------------------------------------------------------------------------------------------
# Vision Transformer (Dosovitskiy et al. 2021), pre-norm blocks, timm parameter names
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockDims:
    """Widths of one transformer block: heads, per-head q/k and v widths, MLP hidden width."""

    num_heads: int
    qk_dim: int
    v_dim: int
    mlp_hidden: int


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> tokens: ``(B, C, H, W) -> (B, N, D)``, N = HW / p^2."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ConfigError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, N, D)``."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention whose heads have q/k width ``qk_dim`` and v width ``v_dim``.

    ``qkv`` is one Linear (as in timm, so names and weights match) with output rows laid out as
    ``[q (num_heads * qk_dim) | k (num_heads * qk_dim) | v (num_heads * v_dim)]``, head-major inside
    each part. With ``qk_dim == v_dim == dim // num_heads`` this is exactly timm's layout. To prune,
    keep the same rows of q and k for each kept (head, qk channel), the v rows and the matching
    ``proj`` input columns for each kept (head, v channel), and rebuild with the new widths.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_dim: int | None = None,
                 v_dim: int | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if qk_dim is None:
            if num_heads <= 0 or dim % num_heads:
                raise ConfigError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
            qk_dim = dim // num_heads
        v_dim = qk_dim if v_dim is None else v_dim
        self.num_heads, self.qk_dim, self.v_dim = num_heads, qk_dim, v_dim
        self.scale = qk_dim ** -0.5
        self.qkv = nn.Linear(dim, num_heads * (2 * qk_dim + v_dim), bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(num_heads * v_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)``: softmax(q k^T / sqrt(d_qk)) v per head, then ``proj``."""
        B, N, _ = x.shape
        h, dq, dv = self.num_heads, self.qk_dim, self.v_dim
        q, k, v = self.qkv(x).split([h * dq, h * dq, h * dv], dim=-1)  # (B, N, h*d) each
        q = q.reshape(B, N, h, dq).transpose(1, 2)  # (B, heads, N, dq)
        k = k.reshape(B, N, h, dq).transpose(1, 2)  # (B, heads, N, dq)
        v = v.reshape(B, N, h, dv).transpose(1, 2)  # (B, heads, N, dv)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = attn @ v  # (B, heads, N, dv)
        out = out.transpose(1, 2).reshape(B, N, h * dv)  # (B, N, heads*dv)
        return self.proj_drop(self.proj(out))  # (B, N, D)


class Mlp(nn.Module):
    """``fc2(drop(gelu(fc1 x)))``: ``(B, N, D) -> (B, N, D)`` through ``hidden`` features."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)``."""
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity at eval time; ``x * Bernoulli(1 - p) / (1 - p)`` per sample while training."""
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1 x)``, then ``x + mlp(norm2 x)``."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool = True,
                 qk_dim: int | None = None, v_dim: int | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_dim, v_dim, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden, drop)

    def dims(self) -> BlockDims:
        """The block's current widths (after any pruning)."""
        a = self.attn
        return BlockDims(a.num_heads, a.qk_dim, a.v_dim, self.mlp.fc1.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D) -> (B, N, D)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT with a class token and learned position embedding; images in [0, 1] -> logits.

    Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
    ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``,
    ``head``). ``block_dims`` (one :class:`BlockDims` per block) overrides the uniform widths,
    e.g. to rebuild a pruned model; ``depth`` is then ``len(block_dims)``.
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 192, depth: int = 6, num_heads: int = 3, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, block_dims: Sequence[BlockDims] | None = None) -> None:
        super().__init__()
        if len(mean) != in_chans:
            raise ConfigError(f"mean/std need {in_chans} entries (in_chans), got {len(mean)}")
        if block_dims is None:
            if num_heads <= 0 or embed_dim % num_heads:
                raise ConfigError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
            hd = embed_dim // num_heads
            block_dims = [BlockDims(num_heads, hd, hd, int(embed_dim * mlp_ratio))] * depth
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.input_size = (in_chans, img_size, img_size)
        self.normalize = Normalize(mean, std)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, len(block_dims)).tolist() if block_dims else []
        self.blocks = nn.Sequential(*[
            Block(embed_dim, d.num_heads, d.mlp_hidden, qkv_bias, d.qk_dim, d.v_dim, drop_rate, attn_drop_rate, r)
            for d, r in zip(block_dims, rates)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm-style init: truncated normal (std 0.02) for embeddings and Linear weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def block_dims(self) -> list[BlockDims]:
        """Widths of every block, enough to rebuild this (possibly pruned) architecture."""
        return [b.dims() for b in self.blocks]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-norm tokens ``(B, 1 + N, D)`` (class token first) of images ``(B, C, H, W)`` in [0, 1]."""
        C, H, W = self.input_size
        _check_images(x, C, (H, W))
        x = self.patch_embed(self.normalize(x))  # (B, N, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)  # (B, 1+N, D)
        return self.norm(self.blocks(x))  # (B, 1+N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from the class token."""
        return self.head(self.forward_features(x)[:, 0])


def vit_tiny_cifar(**kw: object) -> VisionTransformer:
    """ViT for 32x32 CIFAR: patch 4 (64 tokens + class), dim 192, depth 6, 3 heads of 64, MLP 384.

    DeiT-Tiny's width and head size (so NViT's head/qk/v pruning acts on the paper's head shape)
    at half its depth and half its MLP ratio: 1.81 M parameters, about 0.13 GMAC per image. On one
    CPU core it trains at about 55 images/s (batch 64, AdamW) and evaluates at about 145 images/s,
    so an epoch over a 10k-image CIFAR subset takes about 3 minutes. Any keyword overrides a setting.
    """
    cfg: dict[str, object] = {"img_size": 32, "patch_size": 4, "in_chans": 3, "num_classes": 10,
                              "embed_dim": 192, "depth": 6, "num_heads": 3, "mlp_ratio": 2.0, "qkv_bias": True}
    cfg.update(kw)
    return VisionTransformer(**cfg)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP and torch.compile wrappers


def _check_name_hash(p: Path) -> None:
    """torchvision's naming habit, ``NAME-<first 8 hex digits of the file's SHA-256>.th/.pth`` (the shared CIFAR
    ResNets follow it): a file whose content no longer hashes to its name is damaged or renamed, so it is warned of
    (a flipped byte inside the tensor data loaded without a word); a warning, not an error, since a hex suffix may
    be something else (a git commit) and some published files never matched their names."""
    import re
    import warnings

    m = re.search(r"-([0-9a-f]{8,64})$", p.stem)
    if m is None or m.group(1).isdigit():  # all digits: a date or a step count (weights-20240101.pth), not a hash
        return
    digest = input_digest(p).removeprefix("sha256:")
    if not digest.startswith(m.group(1)):
        warnings.warn(f"weights file {p} fails its hash check: its name says SHA-256 {m.group(1)}..., its content "
                      f"hashes to {digest[:len(m.group(1))]}...; if the name is such a hash the file is damaged: "
                      "fetch it again", TenfoldWarning, stacklevel=3)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors``, a tenfold checkpoint (``.json``) or a ``.th``/``.pth`` file.

    A ``.th``/``.pth`` may hold the state_dict itself or a dict with it under ``state_dict`` or
    ``model``; ``module.``/``_orig_mod.`` prefixes are stripped. Missing file -> DataError; a
    file that holds no state_dict -> CheckpointError.
    """
    p = Path(path).expanduser()
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        require_file(p, "weights file")
        try:
            obj: object = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"corrupt weights file {p}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    elif p.suffix == ".json":
        from tenfold.core.io import load_checkpoint

        obj, _ = load_checkpoint(p)
    else:
        obj = load_torch_file(p, "weights file")
        if p.suffix in (".th", ".pth"):
            _check_name_hash(p)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} holds no state_dict (expected a dict of tensors, maybe under 'state_dict')")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for pre in _PREFIXES:
            while k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def _resnet_depth_of(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Depth of the CIFAR ResNet a state_dict belongs to, or None if it is not one (an ImageNet ResNet has a fourth
    stage and a 7x7 stem: its file was named "a CIFAR ResNet-14")."""
    if any(k.startswith("layer4.") for k in sd) or tuple(getattr(sd.get("conv1.weight"), "shape", ()))[-1:] != (3,):
        return None
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"layer1\.(\d+)\.conv1\.weight$", k))}
    return 6 * len(blocks) + 2 if blocks else None


def load_weights(model: nn.Module, weights: str | os.PathLike, name: str = "model") -> nn.Module:
    """Load a weights file into ``model`` with strict key and shape checks.

    A file that does not fit raises a one-line :class:`CheckpointError`."""
    sd = load_state_dict_file(weights)
    want = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    got = {k: v.shape for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. '{unexpected[0]}'")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. '{k}' {tuple(got[k])} vs {tuple(want[k])}")
        depth = _resnet_depth_of(sd)
        hint = (f"; the file holds a CIFAR ResNet-{depth} (use cifar10-resnet{depth})"
                if depth and f"cifar10-resnet{depth}" in MODELS else "")
        raise CheckpointError(f"weights {Path(weights)} do not fit {name}: {', '.join(parts)}{hint}")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights {Path(weights)} do not fit {name}: {str(e).splitlines()[0]}") from None
    return model


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def _resnet(depth: int) -> Callable[..., nn.Module]:
    """Builder for one registered depth (``num_classes`` may be overridden)."""

    def build(num_classes: int = 10) -> nn.Module:
        return CifarResNet(depth, num_classes)

    build.__doc__ = f"CIFAR ResNet-{depth} (option A)."
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cifar10-resnet20": _resnet(20),
    "cifar10-resnet32": _resnet(32),
    "cifar10-resnet44": _resnet(44),
    "cifar10-resnet56": _resnet(56),
    "vit": vit_tiny_cifar,
}


def build_model(name: str, weights: str | os.PathLike | None = None, **kw: object) -> nn.Module:
    """Build registered model ``name`` (see :data:`MODELS`) with overrides ``kw``; load ``weights`` if given."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    fn = MODELS[name]
    target = VisionTransformer if fn is vit_tiny_cifar else fn
    allowed = [p for p in inspect.signature(target).parameters if p not in ("self", "kw")]
    bad = sorted(set(kw) - set(allowed))
    if bad:
        raise ConfigError(f"model '{name}' has no option {', '.join(bad)}; valid: {', '.join(allowed)}")
    model = fn(**kw)
    if weights is not None:
        load_weights(model, weights, name=name)
    return model


def default_weights(name: str) -> Path | None:
    """The pretrained file for ``name`` (``cifar10-resnetNN-*.th`` under ``<data_root>/weights``, else
    the bundled copy), or None when there is none."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    from tenfold.core.data import DataError, weights_file

    try:  # one place knows the file names: tenfold.core.data.weights_file
        return weights_file(name.removeprefix("cifar10-"))
    except DataError:
        return None
