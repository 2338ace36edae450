"""NViT's gated model: exact at gates 1, equal to its sliced dense model, gate gradients equal the
reference saliency sums (float64 oracle), MACs/params formulas equal counted references, export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tenfold.core.io import CheckpointError, ConfigError, InputError
from tenfold.core.models import BlockDims, VisionTransformer
from tenfold.nvit.model import (
    GatedViT,
    ViTSpec,
    build_dense,
    export_onnx,
    from_timm,
    load_dense,
    macs_params,
    onnx_max_error,
    save_dense,
    spec_of,
)


def _vit(dtype=torch.float32, **kw) -> VisionTransformer:
    cfg = {"img_size": 16, "patch_size": 4, "embed_dim": 24, "depth": 2, "num_heads": 3, "mlp_ratio": 2.0}
    cfg.update(kw)
    vit = VisionTransformer(**cfg).to(dtype).eval()
    with torch.no_grad():  # every parameter matters (zero biases and unit LNs would hide mix-ups)
        for p in vit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return vit


def _random_masks(g: GatedViT, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in ("emb", "head", "qk", "v", "mlp"):
            for m in g.masks(s):
                keep = torch.rand(m.shape, generator=gen) < 0.6
                keep[torch.randint(0, m.numel(), (1,), generator=gen)] = True  # at least one unit
                m.copy_(keep.to(m.dtype))


def test_gates_at_one_reproduce_the_dense_model_bit_for_bit():
    vit = _vit()
    g = GatedViT(vit).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(g(x), vit(x))


def test_masked_model_equals_its_sliced_dense_model():
    vit = _vit(torch.float64)
    g = GatedViT(vit).double().eval()
    _random_masks(g)
    dense = g.to_dense().eval()
    E, blocks = g.dims()
    assert dense.embed_dim == E and dense.block_dims() == blocks and E < 24
    assert any(b.qk_dim != b.v_dim for b in blocks)  # heterogeneous dims actually exercised
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), g(x), rtol=1e-10, atol=1e-10)
        # the mask truly changes the function (the test would pass vacuously otherwise)
        assert (g(x) - vit(x)).abs().max() > 1e-3


def _reference_sets(vit: VisionTransformer, i_block: int) -> dict:
    """The spec's saliency sets as (tensor-name, index) slices, written from the table in spec §2."""
    b = vit.blocks[i_block]
    a = b.attn
    h, dq, dv = a.num_heads, a.qk_dim, a.v_dim
    return {"h": h, "dq": dq, "dv": dv, "blk": b}


def _sum_wg(pairs) -> torch.Tensor:
    return sum((w.detach() * w.grad).sum() for w in pairs)


def test_gate_gradient_equals_sum_of_w_times_grad_over_the_saliency_set():
    """c_i = sum_{w in set(i)} w dL/dw (spec §2) equals the unit gate's dL/dgamma, in float64."""
    vit = _vit(torch.float64)
    g = GatedViT(vit).double().train()
    _random_masks(g, seed=3)
    with torch.no_grad():  # keep every unit under test active
        g.mask_emb[5] = 1
        g.mask_head_1[2] = 1
        g.mask_qk_1[4] = 1
        g.mask_v_1[6] = 1
        g.mask_mlp_1[9] = 1
    x, y = torch.rand(5, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (5,))
    torch.nn.functional.cross_entropy(g(x), y).backward()
    i = 1
    blk = vit.blocks[i]
    a = blk.attn
    h, dq, dv = a.num_heads, a.qk_dim, a.v_dim
    W, B = a.qkv.weight, a.qkv.bias

    def rows_wg(rows):  # Linear "out" units: weight rows + bias entries
        return (W.detach()[rows] * W.grad[rows]).sum() + (B.detach()[rows] * B.grad[rows]).sum()

    # MLP neuron m: fc1 out m (+bias)
    m = 9
    f1 = blk.mlp.fc1
    want = (f1.weight.detach()[m] * f1.weight.grad[m]).sum() + f1.bias.detach()[m] * f1.bias.grad[m]
    torch.testing.assert_close(g.gate_mlp[i].grad[m], want)
    # V dim j: V out j of every head
    j = 6
    want = rows_wg([2 * h * dq + hh * dv + j for hh in range(h)])
    torch.testing.assert_close(g.gate_v[i].grad[j], want)
    # QK dim j: Q out j of every head
    j = 4
    want = rows_wg([hh * dq + j for hh in range(h)])
    torch.testing.assert_close(g.gate_qk[i].grad[j], want)
    # head hh: Q, K and V out of head hh
    hh = 2
    rows = ([hh * dq + t for t in range(dq)] + [h * dq + hh * dq + t for t in range(dq)]
            + [2 * h * dq + hh * dv + t for t in range(dv)])
    torch.testing.assert_close(g.gate_head[i].grad[hh], rows_wg(rows))
    # EMB channel e: patch-embed out, every proj out and fc2 out (rows + bias); qkv in and fc1 in (columns)
    e = 5
    pe = vit.patch_embed.proj
    want = (pe.weight.detach()[e] * pe.weight.grad[e]).sum() + pe.bias.detach()[e] * pe.bias.grad[e]
    for b in vit.blocks:
        for lin in (b.attn.proj, b.mlp.fc2):
            want = want + (lin.weight.detach()[e] * lin.weight.grad[e]).sum() + lin.bias.detach()[e] * lin.bias.grad[e]
        for lin in (b.attn.qkv, b.mlp.fc1):
            want = want + (lin.weight.detach()[:, e] * lin.weight.grad[:, e]).sum()
    torch.testing.assert_close(g.gate_emb.grad[e], want)
    # pruned units score exactly 0
    off = (g.mask_mlp_0 == 0).nonzero()
    assert off.numel() and torch.all(g.gate_mlp[0].grad[off] == 0)


def test_gate_gradient_is_the_derivative_of_a_scalar_scaling_of_the_slice():
    """Independent of the gate code: scale fc1 row m by gamma in a plain ViT, dL/dgamma by autograd."""
    vit = _vit(torch.float64)
    x, y = torch.rand(4, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (4,))
    g = GatedViT(vit).double()
    torch.nn.functional.cross_entropy(g(x), y).backward()
    m, blk = 3, vit.blocks[0]
    w0, b0 = blk.mlp.fc1.weight.detach().clone(), blk.mlp.fc1.bias.detach().clone()
    gamma = torch.ones((), dtype=torch.float64, requires_grad=True)
    scale = torch.ones(w0.shape[0], dtype=torch.float64).index_put((torch.tensor([m]),), gamma.reshape(1))
    fn = torch.func.functional_call
    params = {"blocks.0.mlp.fc1.weight": w0 * scale[:, None], "blocks.0.mlp.fc1.bias": b0 * scale}
    loss = torch.nn.functional.cross_entropy(fn(vit, params, (x,)), y)
    (dgamma,) = torch.autograd.grad(loss, gamma)
    torch.testing.assert_close(g.gate_mlp[0].grad[m], dgamma)


def _counted_macs(model, x) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return fc.get_total_flops() // 2


def test_macs_and_params_formulas_match_counted_references():
    vit = _vit(torch.float32, embed_dim=24, depth=3)
    g = GatedViT(vit)
    _random_masks(g, seed=5)
    dense = g.to_dense()
    spec = spec_of(dense)
    macs, params = macs_params(spec)
    assert params == sum(p.numel() for p in dense.parameters())
    assert macs == _counted_macs(dense, torch.rand(1, 3, 16, 16))
    assert macs < macs_params(spec_of(vit))[0]


def test_params_formula_counts_qkv_biases_only_when_the_model_has_them() -> None:
    """Without qkv biases (timm's qkv_bias=False) the closed-form count drops exactly h (2q + v) per block, masked or
    dense; every other test builds biased models, so a formula that always added them passed."""
    vit = _vit(torch.float32, depth=3, qkv_bias=False)
    g = GatedViT(vit)
    _random_masks(g, seed=7)
    for dense in (vit, g.to_dense()):
        spec = spec_of(dense)
        assert not spec.qkv_bias
        assert macs_params(spec)[1] == sum(p.numel() for p in dense.parameters())
    assert macs_params(g)[1] == sum(p.numel() for p in g.to_dense().parameters())


def test_macs_params_reproduce_deit_base():
    """DeiT-B: 17.6 G multiply-accumulates and 86.6 M parameters (DeiT / NViT papers)."""
    import timm

    spec = ViTSpec(768, (BlockDims(12, 64, 64, 3072),) * 12, (0.125,) * 12, 224, 16, 3, 1000)
    macs, params = macs_params(spec)
    assert round(macs / 1e9, 1) == 17.6
    assert round(params / 1e6, 1) == 86.6
    with torch.device("meta"):  # shapes only: no 86 M-parameter initialisation
        ref = timm.create_model("deit_base_patch16_224", pretrained=False)
    assert params == sum(p.numel() for p in ref.parameters())


def test_timm_models_convert_and_prune():
    import timm

    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                            depth=2, num_classes=5).eval()
    vit = from_timm(ref).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(ref.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ref.pretrained_cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), ref((x - mean) / std), rtol=0, atol=1e-5)
    g = GatedViT(vit)
    _random_masks(g)
    with torch.no_grad():
        torch.testing.assert_close(g.to_dense().eval()(x), g.eval()(x), rtol=1e-4, atol=1e-5)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32,
                                  patch_size=8, depth=1)
    with pytest.raises(ConfigError, match="distillation token"):
        from_timm(distilled)
    # another activation or LayerNorm eps converted silently before, and gave other logits
    from functools import partial

    for kw, what in ((dict(act_layer="quick_gelu"), "activation QuickGELU"),
                     (dict(act_layer="gelu_tanh"), "activation GELUTanh"),
                     (dict(norm_layer=partial(torch.nn.LayerNorm, eps=1e-5)), "LayerNorm eps 1e-05")):
        other = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
                                  **kw)
        with pytest.raises(ConfigError, match=what):
            from_timm(other)


@pytest.mark.parametrize("kw,option", [
    (dict(no_embed_class=True), "no_embed_class=True"), (dict(proj_bias=False), "proj_bias=False"),
    (dict(final_norm=False), "final_norm=False"), (dict(pos_embed="none"), "pos_embed='none'"),
    (dict(num_classes=0), r"num_classes=0 \(no classification head\)"),
    (dict(img_size=(32, 48)), r"img_size=\(32, 48\)"),
    (dict(patch_size=(8, 4)), r"patch_size=\(8, 4\)"), (dict(scale_attn_norm=True), "scale_attn_norm=True"),
    (dict(scale_mlp_norm=True), "scale_mlp_norm=True")])
def test_timm_options_tenfolds_vit_lacks_are_one_line_naming_the_option(kw, option):
    """Session 22 review: each was load_state_dict's multi-line size-mismatch report."""
    import timm

    base = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5)
    with warnings.catch_warnings():  # num_classes=0: torch warns of a zero-element Linear
        warnings.simplefilter("ignore", UserWarning)
        m = timm.create_model("vit_tiny_patch16_224", **{**base, **kw})
    with pytest.raises(ConfigError, match=f"unsupported timm ViT option {option};"):
        from_timm(m)


def test_timm_variants_not_named_and_other_models_are_one_line_and_a_grey_vit_takes_its_normalisation():
    """Session 22 review: a variant whose weights do not fit (a gated MLP) was load_state_dict's report, a ResNet or
    Swin 'an unsupported timm ViT variant ... offending keys: []', and a 1-channel ViT was refused over timm's
    3-entry ImageNet mean / std; it now converts with the normalisation passed, to the same logits."""
    import timm
    from timm.layers import GluMlp

    base = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5)
    glu = timm.create_model("vit_tiny_patch16_224", mlp_layer=GluMlp, **base)
    with pytest.raises(ConfigError, match=r"weights do not fit tenfold's ViT at blocks\.0\.mlp\.fc"):
        from_timm(glu)
    for name in ("resnet18", "swin_tiny_patch4_window7_224"):
        with pytest.raises(ConfigError, match="is not a timm VisionTransformer"):
            from_timm(timm.create_model(name, pretrained=False, num_classes=5))
    grey = timm.create_model("vit_tiny_patch16_224", in_chans=1, **base).eval()
    with pytest.raises(ConfigError, match="takes 1 input channel.*3 mean and 3 std entries.*mean=..., std=..."):
        from_timm(grey)
    vit = from_timm(grey, mean=[0.5], std=[0.25]).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit(x), grey((x - 0.5) / 0.25), rtol=0, atol=1e-5)


def test_save_load_and_onnx_round_trip(tmp_path):
    vit = _vit()
    g = GatedViT(vit)
    _random_masks(g)
    dense = g.to_dense().eval()
    save_dense(dense, tmp_path / "m")
    back = load_dense(tmp_path / "m.json").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x), dense(x))
    assert [b.attn.scale for b in back.blocks] == [b.attn.scale for b in vit.blocks]  # original d0^-1/2
    p = export_onnx(dense, tmp_path / "m.onnx")
    err = onnx_max_error(dense, p, torch.rand(3, 3, 16, 16))
    assert err is not None and err < 1e-4
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_dense(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        load_dense(tmp_path / "nothing")


def test_dotted_model_names_stay_separate_models(tmp_path):
    """save_dense appends its suffixes: "deit.v1" and "deit.v2" are two models (the suffix used to be swapped in,
    so both wrote deit.json / deit.safetensors and the second overwrote the first)."""
    x = torch.rand(2, 3, 16, 16)
    outs = {}
    for k, name in enumerate(("deit.v1", "deit.v2")):
        torch.manual_seed(k)
        g = GatedViT(_vit())
        _random_masks(g)
        dense = g.to_dense().eval()
        assert save_dense(dense, tmp_path / name) == tmp_path / f"{name}.json"
        with torch.no_grad():
            outs[name] = dense(x)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deit.v1.json", "deit.v1.safetensors", "deit.v2.json",
                                                          "deit.v2.safetensors"]
    for name, want in outs.items():
        with torch.no_grad():
            assert torch.equal(load_dense(tmp_path / name).eval()(x), want)
            assert torch.equal(load_dense(tmp_path / f"{name}.safetensors").eval()(x), want)
    assert not torch.equal(outs["deit.v1"], outs["deit.v2"])


def test_bad_input_raises_input_error():
    g = GatedViT(_vit())
    with pytest.raises(InputError):
        g(torch.rand(2, 3, 8, 8))
    with pytest.raises(InputError):
        GatedViT(torch.nn.Linear(2, 2))
    spec = spec_of(build_dense(spec_of(_vit())))
    assert ViTSpec.from_dict(spec.to_dict()) == spec
