"""NViT's gated (prunable) ViT, its conversion to a dense ViT with per-block dims, and cost formulas.

:class:`GatedViT` wraps a tenfold :class:`~tenfold.core.models.VisionTransformer` (timm parameter
names) and adds, for the five structures of spec §2,

* a 0/1 **mask** (buffer) that removes units: EMB ``(E,)``; per block head ``(H,)``, QK ``(q,)``,
  V ``(v,)``, MLP ``(M,)``; and
* a unit **gate** (parameter fixed at 1, never trained) placed where scaling it scales exactly the
  reference saliency set of its unit, so ``dL/dgate_i = sum_{w in set(i)} w * dL/dw`` (spec §2,
  the per-batch ``c_i,b``) comes out of one backward pass:

  ====== =====================================================================================
  EMB    patch-embed out, every attn-proj out and fc2 out; the inputs of Q/K/V and fc1
  head   Q, K and V out of head h
  QK     Q out j of every head (the mask also removes K out j)
  V      V out j of every head
  MLP    fc1 out m (+bias), before the GELU
  ====== =====================================================================================

LayerNorm is computed over the active EMB channels only (the spec's recommendation; the reference
normalises over all E), so the masked model equals the sliced one up to float rounding and, with
every mask at 1, equals the dense model bit for bit (the plain ``F.layer_norm`` path is used then).
The attention scale stays at the original ``d0 ** -0.5`` after q shrinks (as in the reference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.io import CheckpointError, ConfigError, DependencyError, InputError, paired_paths, write_json
from tenfold.core.models import BlockDims, VisionTransformer

STRUCTURES = ("emb", "head", "qk", "v", "mlp")
FORMAT = "tenfold-nvit-dense"


# --------------------------------------------------------------------------------------------
# Architecture spec of a (pruned) ViT
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViTSpec:
    """Everything needed to rebuild a dense NViT model: global E, per-block dims, the fixed scale."""

    embed_dim: int
    blocks: tuple[BlockDims, ...]
    attn_scale: tuple[float, ...]
    img_size: int = 32
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 10
    qkv_bias: bool = True
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def tokens(self) -> int:
        """Sequence length inside the blocks: patches + class token."""
        return (self.img_size // self.patch_size) ** 2 + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``.json`` half of an exported model)."""
        d = {k: getattr(self, k) for k in ("embed_dim", "img_size", "patch_size", "in_chans", "num_classes",
                                           "qkv_bias")}
        d.update(blocks=[[b.num_heads, b.qk_dim, b.v_dim, b.mlp_hidden] for b in self.blocks],
                 attn_scale=list(self.attn_scale), mean=list(self.mean), std=list(self.std))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTSpec:
        """Inverse of :meth:`to_dict`; raises CheckpointError on a malformed dict."""
        try:
            blocks = tuple(BlockDims(*[int(v) for v in b]) for b in d["blocks"])
            return cls(int(d["embed_dim"]), blocks, tuple(float(s) for s in d["attn_scale"]),
                       int(d["img_size"]), int(d["patch_size"]), int(d["in_chans"]), int(d["num_classes"]),
                       bool(d["qkv_bias"]), tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"malformed NViT model config: {type(e).__name__}: {e}") from None


def spec_of(vit: VisionTransformer) -> ViTSpec:
    """The :class:`ViTSpec` of a tenfold ViT (its current dims and per-block attention scales)."""
    C, H, _ = vit.input_size
    p = vit.patch_embed.proj.kernel_size[0]
    return ViTSpec(vit.embed_dim, tuple(vit.block_dims()), tuple(float(b.attn.scale) for b in vit.blocks),
                   H, p, C, vit.num_classes, vit.blocks[0].attn.qkv.bias is not None if len(vit.blocks) else True,
                   tuple(vit.normalize.mean.flatten().tolist()), tuple(vit.normalize.std.flatten().tolist()))


def build_dense(spec: ViTSpec) -> VisionTransformer:
    """A dense tenfold ViT with ``spec``'s per-block dims; each block keeps its original attention scale."""
    vit = VisionTransformer(img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans,
                            num_classes=spec.num_classes, embed_dim=spec.embed_dim, qkv_bias=spec.qkv_bias,
                            mean=spec.mean, std=spec.std, block_dims=list(spec.blocks))
    for blk, s in zip(vit.blocks, spec.attn_scale):
        blk.attn.scale = s  # d0 ** -0.5 of the unpruned model (spec §2)
    return vit


# --------------------------------------------------------------------------------------------
# MACs and parameters (closed form)
# --------------------------------------------------------------------------------------------
def macs_params(spec: ViTSpec | VisionTransformer | GatedViT) -> tuple[int, int]:
    """Multiply-accumulates per image and parameter count of the dense model ``spec``.

    ``spec``: a :class:`ViTSpec`, a tenfold ViT (its :func:`spec_of`) or a :class:`GatedViT` (the dense
    model its masks leave). MACs count the Linear/conv products and the two attention matmuls
    (``N^2 H (q + v)``); norms, softmax and GELU are not counted (the DeiT/NViT papers' "FLOPs" convention).
    """
    if isinstance(spec, VisionTransformer):
        spec = spec_of(spec)
    elif isinstance(spec, GatedViT):
        spec = spec.spec()
    elif not isinstance(spec, ViTSpec):
        raise InputError(f"macs_params takes a ViTSpec, a tenfold VisionTransformer or a GatedViT, got "
                         f"{type(spec).__name__} (convert timm models with tenfold.nvit.model.from_timm)")
    E, N = spec.embed_dim, spec.tokens
    P = N - 1
    pe = spec.in_chans * spec.patch_size ** 2
    bias = 1 if spec.qkv_bias else 0
    macs = P * pe * E + E * spec.num_classes
    params = pe * E + E + E + N * E + 2 * E + E * spec.num_classes + spec.num_classes  # + cls, pos, norm
    for b in spec.blocks:
        h, q, v, m = b.num_heads, b.qk_dim, b.v_dim, b.mlp_hidden
        qkv_out = h * (2 * q + v)
        macs += N * E * qkv_out + h * N * N * (q + v) + N * h * v * E + 2 * N * E * m
        params += 4 * E  # two LayerNorms
        params += E * qkv_out + bias * qkv_out + h * v * E + E  # qkv, proj
        params += E * m + m + m * E + E  # fc1, fc2
    return int(macs), int(params)


# --------------------------------------------------------------------------------------------
# Gated model
# --------------------------------------------------------------------------------------------
def masked_layer_norm(x: torch.Tensor, ln: nn.LayerNorm, m: torch.Tensor, full: bool) -> torch.Tensor:
    """LayerNorm over the active channels ``m`` (0/1, ``(E,)``) of ``x (..., E)``; inactive outputs are 0.

    ``full`` (all channels active) takes the plain ``F.layer_norm`` path, bit-identical to the dense model."""
    if full:
        return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    n = m.sum()
    mu = (x * m).sum(-1, keepdim=True) / n  # (..., 1)
    d = (x - mu) * m
    var = (d * d).sum(-1, keepdim=True) / n
    return (d * torch.rsqrt(var + ln.eps) * ln.weight + ln.bias) * m


class GatedViT(nn.Module):
    """A tenfold ViT with NViT's masks (buffers) and saliency gates (parameters at 1, not trained).

    ``forward(images) -> logits``; ``vit`` holds the weights (shared, not copied). ``gates()`` lists
    the gate parameters, ``weights()`` the trainable ones; ``dims()`` the active widths.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise InputError(f"GatedViT wraps a tenfold VisionTransformer, got {type(vit).__name__} "
                             "(convert timm models with tenfold.nvit.model.from_timm)")
        self.vit = vit
        E = vit.embed_dim
        self.register_buffer("mask_emb", torch.ones(E))
        self.gate_emb = nn.Parameter(torch.ones(E))
        self.depth = len(vit.blocks)
        self.gate_head, self.gate_qk, self.gate_v, self.gate_mlp = (nn.ParameterList() for _ in range(4))
        for i, d in enumerate(vit.block_dims()):
            for s, gates, n in (("head", self.gate_head, d.num_heads), ("qk", self.gate_qk, d.qk_dim),
                                ("v", self.gate_v, d.v_dim), ("mlp", self.gate_mlp, d.mlp_hidden)):
                self.register_buffer(f"mask_{s}_{i}", torch.ones(n))
                gates.append(nn.Parameter(torch.ones(n)))

    # ---- bookkeeping ------------------------------------------------------------------------
    def masks(self, structure: str) -> list[torch.Tensor]:
        """The masks of ``structure`` (one for EMB, one per block otherwise)."""
        if structure == "emb":
            return [self.mask_emb]
        return [getattr(self, f"mask_{structure}_{i}") for i in range(self.depth)]

    def gate_list(self, structure: str) -> list[nn.Parameter]:
        """The gates of ``structure``, aligned with :meth:`masks`."""
        if structure == "emb":
            return [self.gate_emb]
        return list({"head": self.gate_head, "qk": self.gate_qk, "v": self.gate_v, "mlp": self.gate_mlp}[structure])

    def gates(self) -> list[nn.Parameter]:
        """Every gate parameter (exclude them from the optimizer)."""
        return [g for s in STRUCTURES for g in self.gate_list(s)]

    def weights(self) -> list[nn.Parameter]:
        """The ViT's trainable parameters (what the optimizer updates)."""
        return [p for p in self.vit.parameters() if p.requires_grad]

    def dims(self) -> tuple[int, list[BlockDims]]:
        """Active widths: ``(E, [BlockDims per block])``."""
        E = int(self.mask_emb.sum())
        blocks = [BlockDims(int(h.sum()), int(q.sum()), int(v.sum()), int(m.sum()))
                  for h, q, v, m in zip(*(self.masks(s) for s in ("head", "qk", "v", "mlp")))]
        return E, blocks

    def spec(self) -> ViTSpec:
        """The :class:`ViTSpec` of the model that :meth:`to_dense` would build."""
        E, blocks = self.dims()
        full = spec_of(self.vit)
        return ViTSpec(E, tuple(blocks), full.attn_scale, full.img_size, full.patch_size, full.in_chans,
                       full.num_classes, full.qkv_bias, full.mean, full.std)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of images ``(B, C, H, W)`` in [0, 1], with masks and gates applied."""
        vit = self.vit
        C, H, W = vit.input_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (C, H, W):
            raise InputError(f"images must have shape (B, {C}, {H}, {W}), got {tuple(getattr(x, 'shape', ()))}")
        m_e = self.mask_emb
        full_e = bool(m_e.all())
        ge = self.gate_emb * m_e  # (E,) EMB gate on every "out" and "in" of the saliency set
        t = vit.patch_embed(vit.normalize(x)) * ge  # (B, N, E)  patch-embed out
        cls = vit.cls_token.expand(t.shape[0], -1, -1)  # (B, 1, E)
        t = vit.pos_drop(torch.cat([cls, t], dim=1) + vit.pos_embed)  # (B, 1+N, E)
        if not full_e:
            t = t * m_e  # cls token and pos-embed lose the pruned channels too
        for i, blk in enumerate(vit.blocks):
            t = t + blk.drop_path(self._attention(i, blk.attn, masked_layer_norm(t, blk.norm1, m_e, full_e) * ge))
            u = masked_layer_norm(t, blk.norm2, m_e, full_e) * ge  # fc1 in
            mlp = blk.mlp
            z = mlp.fc1(u) * (self.gate_mlp[i] * getattr(self, f"mask_mlp_{i}"))  # (B, N, M)  fc1 out (+bias)
            z = mlp.fc2(mlp.drop1(mlp.act(z)))
            t = t + blk.drop_path(mlp.drop2(z * ge))  # fc2 out
        t = masked_layer_norm(t, vit.norm, m_e, full_e)
        return vit.head(t[:, 0])

    def _attention(self, i: int, attn: nn.Module, u: torch.Tensor) -> torch.Tensor:
        """Block ``i``'s attention on ``u (B, N, E)`` with head/QK/V masks and gates: ``-> (B, N, E)``."""
        B, N, _ = u.shape
        h, dq, dv = attn.num_heads, attn.qk_dim, attn.v_dim
        q, k, v = attn.qkv(u).split([h * dq, h * dq, h * dv], dim=-1)
        gh = (self.gate_head[i] * getattr(self, f"mask_head_{i}")).view(1, h, 1, 1)  # head gate: Q, K, V out of head h
        m_qk = getattr(self, f"mask_qk_{i}")
        q = q.reshape(B, N, h, dq).transpose(1, 2) * (self.gate_qk[i] * m_qk) * gh  # (B, heads, N, dq)
        k = k.reshape(B, N, h, dq).transpose(1, 2) * m_qk * gh  # (B, heads, N, dq)
        g_v = self.gate_v[i] * getattr(self, f"mask_v_{i}")
        v = v.reshape(B, N, h, dv).transpose(1, 2) * g_v * gh  # (B, heads, N, dv)
        a = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, N, N)
        a = attn.attn_drop(a.softmax(dim=-1))
        out = (a @ v).transpose(1, 2).reshape(B, N, h * dv)  # (B, N, heads*dv)
        return attn.proj_drop(attn.proj(out) * (self.gate_emb * self.mask_emb))  # attn-proj out

    # ---- conversion -------------------------------------------------------------------------
    @torch.no_grad()
    def to_dense(self) -> VisionTransformer:
        """Slice the masked-out rows/columns away: a dense ViT with per-block dims, same function."""
        spec = self.spec()
        vit = self.vit
        dense = build_dense(spec).to(device=vit.cls_token.device, dtype=vit.cls_token.dtype)
        e = self.mask_emb.bool()
        sd: dict[str, torch.Tensor] = {
            "cls_token": vit.cls_token[..., e], "pos_embed": vit.pos_embed[..., e],
            "patch_embed.proj.weight": vit.patch_embed.proj.weight[e],
            "patch_embed.proj.bias": vit.patch_embed.proj.bias[e],
            "norm.weight": vit.norm.weight[e], "norm.bias": vit.norm.bias[e],
            "head.weight": vit.head.weight[:, e], "head.bias": vit.head.bias,
        }
        for i, blk in enumerate(vit.blocks):
            a = blk.attn
            mh, mq, mv = (getattr(self, f"mask_{s}_{i}").bool() for s in ("head", "qk", "v"))
            keep_q = (mh[:, None] & mq[None, :]).reshape(-1)  # (h*dq,) head-major rows of q (and k)
            keep_v = (mh[:, None] & mv[None, :]).reshape(-1)  # (h*dv,) rows of v, columns of proj
            rows = torch.cat([keep_q, keep_q, keep_v])
            p = f"blocks.{i}."
            sd[p + "attn.qkv.weight"] = a.qkv.weight[rows][:, e]
            if a.qkv.bias is not None:
                sd[p + "attn.qkv.bias"] = a.qkv.bias[rows]
            sd[p + "attn.proj.weight"] = a.proj.weight[e][:, keep_v]
            sd[p + "attn.proj.bias"] = a.proj.bias[e]
            mm = getattr(self, f"mask_mlp_{i}").bool()
            sd[p + "mlp.fc1.weight"] = blk.mlp.fc1.weight[mm][:, e]
            sd[p + "mlp.fc1.bias"] = blk.mlp.fc1.bias[mm]
            sd[p + "mlp.fc2.weight"] = blk.mlp.fc2.weight[e][:, mm]
            sd[p + "mlp.fc2.bias"] = blk.mlp.fc2.bias[e]
            for n in ("norm1", "norm2"):
                ln = getattr(blk, n)
                sd[p + n + ".weight"], sd[p + n + ".bias"] = ln.weight[e], ln.bias[e]
        dense.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
        return dense.train(self.training)


# --------------------------------------------------------------------------------------------
# timm adapter
# --------------------------------------------------------------------------------------------
def from_timm(model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
              ) -> VisionTransformer:
    """A tenfold ViT with a timm ``VisionTransformer``'s weights (``vit_*``/``deit_*`` built locally).

    Supports class-token models with ``global_pool='token'`` and no register tokens, layer scale or
    distillation token (DeiT distilled's ``dist_token``/``head_dist``: not supported, raises); any other variant
    is one ConfigError naming what differs. The result takes images in [0, 1] and normalises them with ``mean`` /
    ``std`` (default: timm's ``pretrained_cfg``, which must then have one entry per input channel).
    """
    name = type(model).__name__
    if not all(hasattr(model, a) for a in ("patch_embed", "blocks", "cls_token")):
        raise ConfigError(f"{name} is not a timm VisionTransformer (no patch_embed / blocks / cls_token); tenfold's "
                          "NViT prunes ViT / DeiT models with a class token")
    # the layout read below: one attention and one MLP per block, and a single conv patch stem (parallel-block
    # ViTs were an AttributeError; hybrid ones, with a CNN stem, were blamed on their normalisation)
    if getattr(model.patch_embed, "backbone", None) is not None:
        raise ConfigError(f"{name} is a hybrid ViT (a CNN backbone before the patch embedding); tenfold's NViT prunes "
                          "ViT / DeiT models whose stem is one patch convolution")
    odd_blocks = sorted({type(b).__name__ for b in model.blocks
                         if not all(hasattr(b, a) for a in ("attn", "mlp", "norm1", "norm2"))})
    if odd_blocks:
        raise ConfigError(f"{name}: unsupported timm ViT variant (blocks of type {', '.join(odd_blocks)}); tenfold's "
                          "NViT prunes blocks of one attention and one MLP (timm's Block)")
    sd = model.state_dict()
    if "dist_token" in sd or "head_dist.weight" in sd:
        raise ConfigError(f"{name} has a distillation token (DeiT distilled); tenfold's NViT supports "
                          "class-token-only ViTs (deit_*_patch16_224, vit_*) for now")
    bad = [k for k in sd if k.startswith(("reg_token", "fc_norm.", "norm_pre.")) or ".ls1." in k or ".ls2." in k
           or "attn_pool" in k or ".q_norm." in k or ".k_norm." in k]
    if bad or getattr(model, "global_pool", "token") != "token" or "cls_token" not in sd:
        raise ConfigError(f"{name}: unsupported timm ViT variant (needs a class token, global_pool='token', "
                          f"no layer scale/register tokens/qk-norm); offending keys: {bad[:3]}")
    # the dense model computes exact-erf GELU and LayerNorm eps 1e-6 (timm's ViT defaults); anything else used
    # to convert without a word and give other logits (quick_gelu: 2.3e-3 relative)
    odd = sorted({f"activation {type(m.act).__name__}" + (f"({m.act.approximate})" if hasattr(m.act, "approximate")
                                                          else "")
                  for m in (b.mlp for b in model.blocks)
                  if not (isinstance(m.act, nn.GELU) and m.act.approximate == "none")}
                 | {f"LayerNorm eps {m.eps:g}" for m in model.modules()
                    if isinstance(m, nn.LayerNorm) and m.eps != 1e-6})
    if odd:
        raise ConfigError(f"{name}: unsupported timm ViT variant ({', '.join(odd)}); tenfold's ViT uses exact GELU "
                          "and LayerNorm eps 1e-6")
    pe = model.patch_embed
    sizes = {k: tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))
             for k, v in (("img_size", pe.img_size), ("patch_size", pe.patch_size))}
    options = [f"{k}={v}" for k, v in sizes.items() if v[0] != v[1]]  # the options tenfold's ViT has no room for
    options += ["no_embed_class=True"] * bool(getattr(model, "no_embed_class", False))
    options += ["pos_embed='none'"] * (getattr(model, "pos_embed", None) is None)
    options += ["num_classes=0 (no classification head)"] * (getattr(model, "num_classes", 1) == 0)
    options += ["final_norm=False"] * isinstance(getattr(model, "norm", None), nn.Identity)
    options += sorted({opt for blk in model.blocks for opt, off in (
        ("proj_bias=False", getattr(getattr(blk.attn, "proj", None), "bias", 0) is None),
        ("scale_attn_norm=True", not isinstance(getattr(blk.attn, "norm", nn.Identity()), nn.Identity)),
        ("scale_mlp_norm=True", not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity))) if off})
    if options:
        raise ConfigError(f"{name}: unsupported timm ViT option {', '.join(options)}; tenfold's ViT has square images "
                          "and patches, a class token with its position embedding, attention and MLP biases, a final "
                          "LayerNorm and a classification head")
    img, patch = sizes["img_size"][0], sizes["patch_size"][0]
    E = sd["cls_token"].shape[-1]
    blocks = []
    scales = []
    for blk in model.blocks:
        h = blk.attn.num_heads
        d = blk.attn.qkv.out_features // (3 * h)
        blocks.append(BlockDims(h, d, d, blk.mlp.fc1.out_features))
        scales.append(float(getattr(blk.attn, "scale", d ** -0.5)))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    in_chans = sd["patch_embed.proj.weight"].shape[1]
    mean = tuple(mean if mean is not None else cfg.get("mean", (0.0,) * in_chans))
    std = tuple(std if std is not None else cfg.get("std", (1.0,) * in_chans))
    if len(mean) != in_chans or len(std) != in_chans:  # timm keeps ImageNet's three for a 1-channel model
        raise ConfigError(f"{name} takes {in_chans} input channel(s) but its normalisation has {len(mean)} mean and "
                          f"{len(std)} std entries (timm's pretrained_cfg); pass from_timm(model, mean=..., std=...) "
                          "with the normalisation it was trained with")
    spec = ViTSpec(E, tuple(blocks), tuple(scales), img, patch, in_chans, model.num_classes,
                   model.blocks[0].attn.qkv.bias is not None, mean, std)
    vit = build_dense(spec)
    want = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if want != got:  # any variant not named above: one line, not load_state_dict's multi-line report
        diff = sorted(set(got) - set(want))[:3] + sorted(set(want) - set(got))[:3] + sorted(
            k for k in set(want) & set(got) if want[k] != got[k])[:3]
        raise ConfigError(f"{name}: unsupported timm ViT variant; its weights do not fit tenfold's ViT at "
                          f"{', '.join(diff)}")
    vit.load_state_dict(sd, strict=True)
    return vit


# --------------------------------------------------------------------------------------------
# Export: safetensors + JSON (no pickles), ONNX
# --------------------------------------------------------------------------------------------
def save_dense(vit: VisionTransformer, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.safetensors`` (the state_dict) and ``<path>.json`` (the :class:`ViTSpec` + ``extra``)."""
    from safetensors.torch import save_file

    base, j, s = paired_paths(path)  # appended, not swapped in: "deit.v1" and "deit.v2" stay two models
    base.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vit.state_dict().items()}, str(s))
    write_json(j, {"format": FORMAT, "version": 1, "model": spec_of(vit).to_dict(), "extra": extra or {}})
    return j


def load_dense(path: str | os.PathLike) -> VisionTransformer:
    """Rebuild a model written by :func:`save_dense` (no unpickling); CheckpointError when it does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _, j, s = paired_paths(path)
    for f in (j, s):
        if not f.is_file():
            raise CheckpointError(f"NViT model file not found: {f}")
    try:
        head = json.loads(j.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt NViT model config {j}: {e}") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CheckpointError(f"{j} is not an NViT model (no format '{FORMAT}')")
    vit = build_dense(ViTSpec.from_dict(head["model"]))
    try:
        sd = load_file(str(s))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"corrupt NViT weights {s}: {str(e).splitlines()[0]}") from None
    try:
        vit.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{s} does not fit {j}: {str(e).splitlines()[0]}") from None
    return check_finite_weights(vit, str(s))


def check_finite_weights(net: nn.Module, where: str) -> nn.Module:
    """Return ``net``, or raise a one-line CheckpointError naming ``where`` when a parameter or buffer holds
    NaN/Inf (such a model exported to ONNX without a word, and pruning it stopped on a non-finite loss that
    blamed prune_lr)."""
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{where} holds NaN/Inf weights in {len(bad)} tensor(s), e.g. '{bad[0]}'; "
                              "use a model trained without divergence")
    return net


def export_onnx(vit: nn.Module, path: str | os.PathLike, batch: int = 1) -> Path:
    """Export to ONNX (TorchScript exporter, dynamic batch); returns the path."""
    import warnings

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DependencyError("ONNX export needs the 'onnx' package (pip install onnx)") from None
    C, H, W = vit.input_size
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    was = vit.training
    vit.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(vit, (torch.rand(batch, C, H, W),), str(p), input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
    finally:
        vit.train(was)
    return p


def onnx_max_error(vit: nn.Module, path: str | os.PathLike, x: torch.Tensor) -> float | None:
    """Largest |onnxruntime - torch| logit difference on ``x``, or None when onnxruntime is absent."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = vit.eval()(x).numpy()
    return float(abs(got - want).max())


def block_dims_table(dims: Sequence[BlockDims]) -> list[dict[str, int]]:
    """Per-block dims as plain dicts (for JSON reports)."""
    return [{"heads": d.num_heads, "qk": d.qk_dim, "v": d.v_dim, "mlp": d.mlp_hidden} for d in dims]
