"""NViT's prune step: LUT interpolation exact on grid points, latency penalty steers pruning, the
saliency is the mean of squares, minimums and the stop rule hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tenfold.core.io import ConfigError
from tenfold.core.models import BlockDims, VisionTransformer
from tenfold.nvit.model import GatedViT
from tenfold.nvit.prune import LatencyModel, Saliency, delta_latency, masks_of, prune_step, synthetic_lut

AXES = {"embed": [8, 16, 32], "heads": [1, 2, 4], "qk": [4, 8, 16], "v": [4, 8, 16], "mlp": [8, 32, 64]}
GROUP = {"emb": 4, "head": 1, "qk": 4, "v": 4, "mlp": 8}
MINIMUM = {"emb": 8, "head": 1, "qk": 4, "v": 4, "mlp": 8}


def test_lut_model_latency_is_exact_on_grid_points_and_sums_blocks():
    rng = np.random.default_rng(0)
    vals = rng.uniform(1, 2, size=(3, 3, 3, 3, 3))
    from tenfold.core.latency import LatencyTable

    lat = LatencyModel(LatencyTable(AXES, vals), LatencyTable({"embed": AXES["embed"]}, [0.1, 0.2, 0.4]))
    blocks = [BlockDims(2, 8, 16, 64), BlockDims(4, 4, 8, 8)]
    want = vals[1, 1, 1, 2, 2] + vals[1, 2, 0, 1, 0] + 0.2
    assert lat(16, blocks) == want
    # multilinear between grid points: a planted multilinear function is reproduced exactly
    f = lambda E, H, q, v, M, N: 0.5 + E * H * (q + 2 * v) * 1e-3 + 0.01 * E * M  # noqa: E731
    lin = LatencyModel(synthetic_lut(AXES, 1, f))
    assert np.isclose(lin(12, [BlockDims(3, 6, 10, 40)]), f(12, 3, 6, 10, 40, 1), rtol=1e-12)
    # dT: one unit fewer; 0 at the minimum
    assert np.isclose(delta_latency(lin, 12, [BlockDims(3, 6, 10, 40)], "v", 0, 4), 12 * 3 * 2e-3)
    assert delta_latency(lin, 12, [BlockDims(3, 4, 10, 40)], "qk", 0, 4) == 0.0


def _planted(seed: int):
    """Masks and importances of a 2-block model with random saliencies."""
    gen = torch.Generator().manual_seed(seed)
    sizes = {"emb": 32, "head": 4, "qk": 16, "v": 16, "mlp": 64}
    masks, imp = {}, {}
    for s, n in sizes.items():
        for i in range(1 if s == "emb" else 2):
            masks[(s, i)] = torch.ones(n)
            imp[(s, i)] = torch.rand(n, generator=gen).double() * 1e-3
    return masks, imp


def _v_expensive(E, H, q, v, M, N):
    return 1e-6 * (E * H * (2 * q + v) + E * M) + 1e-3 * v  # the V width costs far more than its MACs


def _run(eta: float, seed: int = 0) -> dict:
    masks, imp = _planted(seed)
    lat = LatencyModel(synthetic_lut(AXES, 1, _v_expensive))
    res = prune_step(masks, imp, lat, t=10, prune_per_iter=16, group_norm=16, group_size=GROUP, minimum=MINIMUM,
                     eta=eta, target=0.0)
    assert res.k == 9
    removed = {s: sum(n for ss, _, n in res.removed if ss == s) for s in GROUP}
    return {"removed": removed, "res": res, "masks": masks}


def test_latency_penalty_shifts_pruning_towards_the_expensive_structure():
    plain = _run(0.0)
    aware = _run(1.0)
    # with eta = 0 the ranking is by saliency alone; V gets at most its share
    assert aware["removed"]["v"] > plain["removed"]["v"]
    assert aware["removed"]["v"] >= 3 * 4  # most of the removed groups are V groups
    # inside each structure instance the units go lowest score first (dT is one number per instance, so the
    # removed units are that instance's least salient whatever eta is)
    masks, imp = _planted(0)
    for key, m in aware["masks"].items():
        gone, kept = imp[key][m == 0], imp[key][m == 1]
        if gone.numel() and kept.numel():
            assert float(gone.max()) <= float(kept.min()), key


def test_prune_step_keeps_minimums_and_stops_at_the_target():
    masks, imp = _planted(1)
    lat = LatencyModel(synthetic_lut(AXES, 1, _v_expensive))
    full = lat(32, [BlockDims(4, 16, 16, 64)] * 2)
    t, reached = 1, False
    while not reached and t < 500:
        res = prune_step(masks, imp, lat, t=t, prune_per_iter=16, group_norm=16, group_size=GROUP,
                         minimum=MINIMUM, eta=0.0, target=0.5 * full)
        reached, t = res.reached, t + 1
        for (s, _), m in masks.items():
            assert int(m.sum()) >= MINIMUM[s]
    assert reached and res.latency <= 0.5 * full
    E = int(masks[("emb", 0)].sum())
    blocks = [BlockDims(*(int(masks[(s, i)].sum()) for s in ("head", "qk", "v", "mlp"))) for i in range(2)]
    assert np.isclose(lat(E, blocks), res.latency)
    # the step that reached the target removed no more than needed: undoing its last group misses it
    assert res.removed and res.groups
    key, idx = res.groups[-1]
    masks[key][idx] = 1.0
    E = int(masks[("emb", 0)].sum())
    blocks = [BlockDims(*(int(masks[(s, i)].sum()) for s in ("head", "qk", "v", "mlp"))) for i in range(2)]
    assert lat(E, blocks) > 0.5 * full


def test_saliency_is_the_mean_of_squared_gate_gradients():
    vit = VisionTransformer(img_size=8, patch_size=4, embed_dim=12, depth=1, num_heads=2, mlp_ratio=2.0)
    g = GatedViT(vit)
    sal = Saliency(g, {"emb": 12, "head": 12, "qk": 2, "v": 2, "mlp": 1}, momentum=0.9)
    grads, grads_emb = [], []
    for _ in range(3):
        x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 10, (2,))
        for p in g.gates():
            p.grad = None
        torch.nn.functional.cross_entropy(g(x), y).backward()
        grads.append(g.gate_mlp[0].grad.detach().double().clone())
        grads_emb.append(g.gate_emb.grad.detach().double().clone())
        sal.batch_done()
    want = torch.stack([c * c for c in grads]).mean(0)  # mean of squares, not square of the mean
    imp = sal.importance()
    torch.testing.assert_close(imp[("mlp", 0)], want)
    # the EMB divisor (12) applies to c before squaring: (c / 12)^2, not c^2 / 12
    torch.testing.assert_close(imp[("emb", 0)], torch.stack([(c / 12) ** 2 for c in grads_emb]).mean(0))
    assert not torch.allclose(want, torch.stack(grads).mean(0) ** 2)
    # EMA across steps, and pruned units score 0
    with torch.no_grad():
        g.mask_mlp_0[:3] = 0
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 10, (2,))
    for p in g.gates():
        p.grad = None
    torch.nn.functional.cross_entropy(g(x), y).backward()
    cur = (g.gate_mlp[0].grad.detach().double()) ** 2
    sal.batch_done()
    imp2 = sal.importance()[("mlp", 0)]
    torch.testing.assert_close(imp2, (0.9 * want + 0.1 * cur) * g.mask_mlp_0.double())
    assert torch.all(imp2[:3] == 0)
    # emb saliency is scaled by 1/12 before squaring
    assert masks_of(g)[("emb", 0)] is g.mask_emb
    # after reset_ema the EMA restarts from zero, as the reference's averaged *= 0: (1 - momentum) x this step's mean
    sal.reset_ema()
    for p in g.gates():
        p.grad = None
    torch.nn.functional.cross_entropy(g(x), y).backward()
    cur3 = (g.gate_mlp[0].grad.detach().double()) ** 2
    sal.batch_done()
    torch.testing.assert_close(sal.importance()[("mlp", 0)], 0.1 * cur3 * g.mask_mlp_0.double())


def _prune_run(run_dir, stop_after: int = 0, resume: bool = False, measured_scale: float = 0.0, per_iter: int = 16,
               measured_power: float = 1.0, lr_schedule: str = "cosine", target: float = 0.4, max_iters: int = 40):
    """A tiny pruning loop on seeded synthetic data, checkpointed every 3 iterations."""
    from tenfold.core.data import synthetic_classification
    from tenfold.core.engine import Checkpointer
    from tenfold.nvit.api import prune_model

    torch.manual_seed(0)
    teacher = VisionTransformer(img_size=16, patch_size=4, num_classes=4, embed_dim=32, depth=2, num_heads=4,
                                mlp_ratio=2.0)
    gated = GatedViT(VisionTransformer(img_size=16, patch_size=4, num_classes=4, embed_dim=32, depth=2,
                                       num_heads=4, mlp_ratio=2.0))
    gated.vit.load_state_dict(teacher.state_dict())
    ds = synthetic_classification(64, num_classes=4, size=16, seed=0)
    torch.manual_seed(123)  # the augmentation RNG, restored from the checkpoint on resume
    lat = LatencyModel(synthetic_lut(AXES, 16))
    full = lat(*gated.dims())
    # a planted device clock: measured fraction = measured_scale * LUT fraction (the LUT overestimates)
    measure = (lambda: measured_scale * (lat(*gated.dims()) / full) ** measured_power) if measured_scale else None
    res = prune_model(gated, teacher, ds, lat, target_fraction=target, interval=2, prune_per_iter=per_iter,
                      group_norm=16, group_size=GROUP, minimum=MINIMUM, scale={s: 1.0 for s in GROUP}, momentum=0.9,
                      eta=0.0, eta_mode="relative", eta_rho=1.0, batch_size=8, lr=1e-3, weight_decay=0.05, kd_coef=10.0,
                      temperature=3.0, ce_coef=1.0, label_smoothing=0.1, max_iters=max_iters, seed=0,
                      checkpointer=Checkpointer(run_dir, method="nvit-prune"), ckpt_every=3, resume=resume,
                      stop_after=stop_after, measure=measure, lr_schedule=lr_schedule)
    return gated, res


def test_pruning_loop_resumes_exactly_after_a_kill(tmp_path):
    whole, res_whole = _prune_run(tmp_path / "a")
    assert res_whole["reached"] and res_whole["prune_steps"] >= 3
    _, part = _prune_run(tmp_path / "b", stop_after=7)  # "killed" after 7 iterations; last checkpoint at 6
    assert part["iterations"] == 7 and not part["reached"]
    resumed, res = _prune_run(tmp_path / "b", resume=True)
    assert res["iterations"] == res_whole["iterations"]
    assert [h["blocks"] for h in res["history"]] == [h["blocks"] for h in res_whole["history"]]
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_an_unreachable_target_stops_once_every_structure_is_at_its_minimum(tmp_path):
    """A target below what the minimums allow ends the loop, with one warning, at the first prune step that finds
    nothing left to remove (it ran to max_prune_iters before: hours of training at the paper's cap); it is
    checkpointed there, and a resume does not train on."""
    from tenfold.core.io import TenfoldWarning

    with pytest.warns(TenfoldWarning, match="cannot be reached"):
        gated, res = _prune_run(tmp_path, target=0.01)
    assert res["unreachable"] and not res["reached"] and res["iterations"] < 40
    masks = masks_of(gated)
    for (s, _), m in masks.items():  # every group that could go went: each structure sits at its minimum
        assert int(m.sum()) == MINIMUM[s], s
    assert res["history"][-2]["groups_removed"] > 0  # the step before still removed something
    _, again = _prune_run(tmp_path, target=0.01, resume=True)
    assert again["iterations"] == res["iterations"] and again["unreachable"]


def test_a_run_capped_short_of_its_target_warns_and_the_loop_checks_its_target(tmp_path):
    """max_prune_iters ending the loop short of the target was exit 0 with "reached": false and no word; the public
    loop took NaN / 0 (pruned to the minimums) and 2.0 ("reached" after one step) as targets."""
    import warnings

    from tenfold.core.io import TenfoldWarning

    with pytest.warns(TenfoldWarning, match="latency target 0.4 was not reached within max_prune_iters=4 "
                                            "iterations: the model stands at 0"):
        _, res = _prune_run(tmp_path / "a", max_iters=4)
    assert not res["reached"] and not res["unreachable"] and res["iterations"] == 4
    with pytest.warns(TenfoldWarning, match="not reached within max_prune_iters=4"):  # the cap came first
        _prune_run(tmp_path / "c", max_iters=4, stop_after=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        _, res = _prune_run(tmp_path / "b", stop_after=3)  # stopped as if killed: no verdict on the target
    _, res = _prune_run(tmp_path / "one", target=1.0, max_iters=4)  # the unpruned baseline: a valid target
    assert res["reached"]
    for bad in (float("nan"), 0.0, -1.0, 1.0001, 2.0):
        with pytest.raises(ConfigError, match=r"latency target \(target_fraction\) must lie in \(0, 1\]"):
            _prune_run(tmp_path / f"t{bad}", target=bad)


def test_student_switches_to_eval_and_restarts_the_ema_after_the_first_prune_step(tmp_path, monkeypatch):
    """Spec §2: the student trains in train mode until the first prune step, in eval mode after it (also after a
    resume), and the saliency EMA restarts at that switch."""
    from tenfold.nvit.prune import Saliency as Sal

    resets: list[int] = []
    real_reset = Sal.reset_ema
    monkeypatch.setattr(Sal, "reset_ema", lambda self: (resets.append(1), real_reset(self))[1])
    before, res = _prune_run(tmp_path / "a", stop_after=1)  # interval 2: no prune step yet
    assert res["prune_steps"] == 0 and before.training and not resets
    after, res = _prune_run(tmp_path / "b", stop_after=5)  # steps after iterations 2 and 4
    assert res["prune_steps"] == 2 and not after.training and resets == [1]
    resumed, res = _prune_run(tmp_path / "b", stop_after=7, resume=True)  # from the checkpoint at iteration 3
    assert not resumed.training and resets == [1]


def test_the_threshold_index_counts_the_steps_done_before(tmp_path):
    """Spec §2 / the reference: k = max(0, floor(t P / G) - 1) with t the steps done *before* this one, so with
    P / G = 2 the first step removes 1 group and the second brings the total to 2 (t counted this step too before
    session 14: 2, then 4)."""
    _, res = _prune_run(tmp_path, per_iter=32, stop_after=4)
    assert [h["groups_chosen"] for h in res["history"]] == [1, 1]


def test_a_lut_that_starts_above_the_minimums_is_refused():
    """Below its lowest grid point a LUT clamps, so pruning there saves nothing on it: the `paper` preset's E grid
    began at 256 with a minimum of 64."""
    from tenfold.nvit.api import check_lut_fits
    from tenfold.nvit.config import PRESETS

    spec = GatedViT(VisionTransformer(img_size=16, patch_size=4, num_classes=4, embed_dim=32, depth=2, num_heads=4,
                                      mlp_ratio=2.0)).spec()
    lat = LatencyModel(synthetic_lut(AXES, spec.tokens))
    check_lut_fits(lat, spec, "planted", MINIMUM)
    with pytest.raises(ConfigError, match="embed 8 > minimum 4"):
        check_lut_fits(lat, spec, "planted", dict(MINIMUM, emb=4))
    p = PRESETS["paper"]
    assert int(p.lut_embed.split(",")[0]) <= p.min_emb and p.max_prune_iters == 50 * 2502


def test_the_paper_presets_lut_grid_is_the_references() -> None:
    """Spec: H in {1, 3, 6, 9, 12}, q, v in {1, 16, ..., 64}, M in {1, 128, ..., 3072} (25 points, the reference's
    9,375 entries with E's 3); E adds 64, the pruning minimum (documented). The MLP axis read 1,768,...,3072 until
    session 23, which interpolated the GPU's tile-size latency steps away."""
    from tenfold.nvit.api import build
    from tenfold.nvit.config import PRESETS

    g = build(PRESETS["paper"])["grid"]
    assert list(g["mlp"]) == [1] + [128 * k for k in range(1, 25)]
    assert list(g["heads"]) == [1, 3, 6, 9, 12] and list(g["qk"]) == list(g["v"]) == [1, 16, 32, 48, 64]
    assert list(g["embed"]) == [64, 256, 512, 768]


def test_a_minimum_at_or_above_a_width_warns_that_the_structure_is_never_pruned(tmp_path, monkeypatch):
    """Session 23: min_heads 4 on a 4-head ViT (or min_emb above E) left those structures unpruned without a word;
    prune_model names them, with their width and minimum. The default minimums of the planted run do not warn."""
    import warnings

    from tenfold.core.io import TenfoldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        _prune_run(tmp_path / "ok", stop_after=1)
    monkeypatch.setitem(globals(), "MINIMUM", dict(MINIMUM, head=4, emb=64))
    with pytest.warns(TenfoldWarning, match=r"never pruned.*emb \(width 32, minimum 64\), head \(width 4, minimum 4\)"):
        _prune_run(tmp_path / "frozen", stop_after=1)


def test_a_pruning_checkpoint_of_the_older_loop_is_refused(tmp_path):
    """Session 14 changed the loop's semantics (threshold index, eval switch, EMA restart); a checkpoint written
    before would resume under the new ones, mixed and silently. It is refused by its loop version."""
    from tenfold.core.engine import Checkpointer
    from tenfold.core.io import CheckpointError

    _prune_run(tmp_path, stop_after=7)
    ckpt = Checkpointer(tmp_path, method="nvit-prune")
    st, _ = ckpt.load()
    assert st["loop"] == 2
    del st["loop"]
    ckpt.save(st, 6)
    with pytest.raises(CheckpointError, match="older tenfold"):
        _prune_run(tmp_path, resume=True)


def test_pruning_lr_follows_the_cosine_over_the_run_cap(tmp_path):
    """Spec §2: the weights keep training under a cosine lr; the curve spans max_iters (the run's cap), and the
    optimizer a checkpoint saves carries the lr of the iteration it was saved after."""
    import math

    from tenfold.core.engine import Checkpointer
    from tenfold.nvit.api import prune_lr_at

    assert prune_lr_at(0, 1e-3, 40, "cosine") == pytest.approx(1e-3)
    assert prune_lr_at(20, 1e-3, 40, "cosine") == pytest.approx(5e-4)
    assert prune_lr_at(40, 1e-3, 40, "cosine") == pytest.approx(0.0, abs=1e-18)
    assert prune_lr_at(39, 1e-3, 40, "constant") == 1e-3
    _prune_run(tmp_path, stop_after=7)  # checkpoints after iterations 3 and 6
    st, _ = Checkpointer(tmp_path, method="nvit-prune").load()
    assert st["iteration"] == 6
    lr = st["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 40)))  # the step of 0-based iteration 5
    with pytest.raises(ConfigError, match="schedule"):
        _prune_run(tmp_path / "c", lr_schedule="linear")


def test_measured_stop_calibrates_the_lut_target_to_the_device_clock(tmp_path):
    """With a clock that reads 0.8 x the LUT fraction, the pruning stops where the *clock* says 40 %
    (LUT 0.5), not where the LUT does; without the clock it stops at the LUT target."""
    lut_only, res_lut = _prune_run(tmp_path / "a")
    frac_lut = res_lut["lut_final"] / res_lut["lut_full"]
    assert frac_lut <= 0.4
    _, res = _prune_run(tmp_path / "b", measured_scale=0.8)
    frac = res["lut_final"] / res["lut_full"]
    assert 0.8 * frac <= 0.4 + 1e-9 and frac > 0.42  # stopped on the clock's target, later than the LUT's
    assert res["history"][-1]["lut_target"] == pytest.approx(0.5)


def test_measured_stop_does_not_overshoot_a_clock_the_lut_misjudges(tmp_path):
    """A clock that falls faster than the LUT (measured = LUT fraction ^ 2.5): the calibration of each step's LUT
    target lags the clock, so the step that crosses the target on the clock is one the LUT calls short of it
    (LUT 0.67 against its target 0.44), and it chose three groups (P/G = 4 at that step). The stop comes at that
    step, on the clock, and keeps only the fewest of its groups the clock needs, landing within 0.4 +- 10 %."""
    _, res = _prune_run(tmp_path / "a", measured_scale=1.0, measured_power=2.5, per_iter=64)
    final = res["history"][-1]
    assert res["reached"] and final["measured_fraction_after"] <= 0.4 * 1.05
    assert final["measured_fraction_after"] >= 0.4 * 0.9
    assert final["measured_fraction_before"] > 0.4 * 1.05  # the step itself crossed the target
    assert final["lut_fraction"] > final["lut_target"]  # the LUT alone would have pruned on
    assert final["groups_removed"] < final["groups_chosen"]  # the step was cut back
    assert (res["lut_final"] / res["lut_full"]) ** 2.5 == pytest.approx(final["measured_fraction_after"])


def test_fewest_groups_bisects_to_the_smallest_prefix_the_clock_accepts():
    """Planted clock = alive units / 10; six one-unit groups; limit 0.75 -> exactly the first three stay removed."""
    from tenfold.nvit.api import _fewest_groups

    key = ("mlp", 0)
    before = {key: torch.ones(10)}
    masks = {key: torch.ones(10)}
    order = [7, 2, 9, 0, 4, 5]
    groups = [(key, torch.tensor([i])) for i in order]
    for _, idx in groups:
        masks[key][idx] = 0
    reads = []

    def clock() -> float:
        reads.append(1)
        return float(masks[key].sum()) / 10

    n, at = _fewest_groups(masks, before, groups, clock, 3, 0.75, 0.4)
    assert (n, at) == (3, 0.7)
    assert sorted(torch.nonzero(masks[key] == 0).flatten().tolist()) == sorted(order[:3])
    assert len(reads) % 3 == 0  # each decision is a median of three readings


def test_build_rejects_non_positive_schedule_and_groups():
    """A non-positive interval, P, G or group size is one ConfigError naming the field."""
    import dataclasses

    from tenfold.nvit import PRESETS
    from tenfold.nvit.api import build

    assert build(PRESETS["smoke"])["group_size"]["emb"] == PRESETS["smoke"].group_emb
    for name in ("interval", "prune_per_iter", "group_emb", "group_mlp"):
        with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
            build(dataclasses.replace(PRESETS["smoke"], **{name: 0}))


def test_lut_file_round_trip_and_bad_files_are_one_line(tmp_path):
    """load_lut reads the ``lut`` verb's file without writing temp files beside it (it used to, so a read-only LUT
    folder failed); garbage is a DataError, not a bare JSONDecodeError; a bad --latency-target stops at once."""
    import dataclasses
    import json

    from tenfold.core.io import ConfigError, DataError, write_json
    from tenfold.core.latency import LatencyTable
    from tenfold.nvit import PRESETS
    from tenfold.nvit.api import load_lut, prune

    stem = LatencyTable({"embed": AXES["embed"]}, np.array([1e-3, 2e-3, 5e-3]))
    lat = LatencyModel(synthetic_lut(AXES, 1), stem)
    write_json(tmp_path / "lut.json", lat.to_dict())
    back = load_lut(str(tmp_path))
    dims = [BlockDims(2, 8, 8, 32)] * 3
    assert back(16, dims) == pytest.approx(lat(16, dims)) and back.stem is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lut.json"]
    for text, msg in (("garbage", "corrupt NViT LUT"), (json.dumps({"stem": None}), "no 'block' table"),
                      (json.dumps({"block": {"format": "x"}}), "not a tenfold latency table")):
        (tmp_path / "lut.json").write_text(text)
        with pytest.raises(DataError, match=msg):
            load_lut(str(tmp_path / "lut.json"))
    for bad in (float("nan"), -0.5, 1.5):
        with pytest.raises(ConfigError, match="latency-target must be in"):
            prune(dataclasses.replace(PRESETS["smoke"]), tmp_path / "run", model="nowhere", latency_target=bad)


def test_saliency_resume_puts_the_ema_on_the_gates_device():
    """A checkpoint loads onto the CPU; the EMA used to stay there while the sums followed the gates, so a CUDA run
    failed at its first prune step after a resume. ('meta' stands in for a GPU: CI has none.)"""
    g = GatedViT(VisionTransformer(img_size=8, patch_size=4, embed_dim=12, depth=1, num_heads=2, mlp_ratio=2.0))
    sal = Saliency(g, {"emb": 1, "head": 1, "qk": 1, "v": 1, "mlp": 1}, momentum=0.9)
    state = {"sums": {f"{s}.{i}": v.clone() for (s, i), v in sal.sums.items()},
             "ema": {f"{s}.{i}": torch.ones_like(v) for (s, i), v in sal.sums.items()}, "batches": 1}
    sal.sums = {k: v.to("meta") for k, v in sal.sums.items()}  # the gates on another device
    sal.load_state_dict(state)
    assert {v.device.type for v in sal.ema.values()} == {"meta"}
    assert {v.dtype for v in sal.ema.values()} == {torch.float64}


def test_saliency_and_ranking_without_float64_as_on_apples_mps():
    """Apple's mps device has no float64: the saliency sums there are float32 (they were float64 everywhere, an error
    as soon as pruning started on a Mac), the hooks, the EMA and a resume keep that dtype, and a prune step ranks the
    float32 importances on the CPU in float64, to the same removals as the float64 ones."""
    from tenfold.nvit.prune import accumulator_dtype

    assert accumulator_dtype(torch.device("mps")) is torch.float32
    assert accumulator_dtype("cpu") is torch.float64 and accumulator_dtype("cuda:1") is torch.float64
    torch.manual_seed(0)
    g = GatedViT(VisionTransformer(img_size=8, patch_size=4, embed_dim=12, depth=1, num_heads=2, mlp_ratio=2.0))
    sal = Saliency(g, {"emb": 12, "head": 12, "qk": 2, "v": 2, "mlp": 1}, momentum=0.9)
    ref = {k: v.clone() for k, v in sal.sums.items()}
    sal.sums = {k: v.float() for k, v in sal.sums.items()}  # what Saliency allocates on mps
    x, y = torch.rand(2, 3, 8, 8), torch.randint(0, 10, (2,))
    torch.nn.functional.cross_entropy(g(x), y).backward()
    sal.batch_done()
    assert {v.dtype for v in sal.sums.values()} == {torch.float32}
    want = (g.gate_mlp[0].grad.detach().double()) ** 2
    imp = sal.importance()
    assert imp[("mlp", 0)].dtype is torch.float32
    torch.testing.assert_close(imp[("mlp", 0)].double(), want, rtol=1e-5, atol=0)
    sal.load_state_dict({"sums": {f"{s}.{i}": v.double() for (s, i), v in ref.items()},
                         "ema": {f"{s}.{i}": v.double() for (s, i), v in sal.ema.items()}, "batches": 0})
    assert {v.dtype for v in sal.ema.values()} == {torch.float32}  # a float64 checkpoint follows the sums' dtype
    masks64, imp64 = _planted(3)
    masks32 = {k: m.clone() for k, m in masks64.items()}
    lat = LatencyModel(synthetic_lut(AXES, 1, _v_expensive))
    kw = dict(t=10, prune_per_iter=16, group_norm=16, group_size=GROUP, minimum=MINIMUM, eta=0.0, target=0.0)
    a = prune_step(masks64, imp64, lat, **kw)
    b = prune_step(masks32, {k: v.float() for k, v in imp64.items()}, lat, **kw)
    assert a.removed == b.removed and all(torch.equal(masks64[k], masks32[k]) for k in masks64)


def test_prune_without_weights_distils_from_the_model_it_prunes(tmp_path, monkeypatch):
    """With no --weights the student and the teacher are one random initialisation (they were two: the student was
    distilled towards an unrelated network, and teacher.json was not the unpruned model)."""
    import dataclasses

    from tenfold.nvit import PRESETS, api

    seen = {}

    def stop(gated, teacher, *a, **k):
        seen.update(gated=gated, teacher=teacher)
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "prune_model", stop)
    with pytest.raises(KeyboardInterrupt):
        api.prune(dataclasses.replace(PRESETS["smoke"]), tmp_path, model="vit")
    t, s = seen["teacher"].state_dict(), seen["gated"].vit.state_dict()
    assert all(torch.equal(t[k], s[k]) for k in t)


def test_a_lut_for_another_model_is_refused(tmp_path, monkeypatch):
    """A LUT measured at another token count, or whose grid stops below the model's dims, is refused: outside its
    grid the table clamps, so every unit looked free (all savings 0) and the target's reference was wrong."""
    import dataclasses

    from tenfold.core.io import ConfigError, write_json
    from tenfold.nvit import PRESETS, api

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "prune_model", stop)
    cfg = dataclasses.replace(PRESETS["smoke"])  # embed 32, heads 2, qk = v = 16, mlp 64; 17 tokens
    for name, axes, tokens, match in (("fits", AXES, 17, None), ("tokens", AXES, 50, "measured at 50 tokens"),
                                      ("small", {**AXES, "embed": [8, 16], "mlp": [8, 32]}, 17,
                                       r"embed 32 > 16, mlp 64 > 32")):
        write_json(tmp_path / f"{name}.json", LatencyModel(synthetic_lut(axes, tokens)).to_dict())
        if match is None:
            with pytest.raises(KeyboardInterrupt):  # accepted: pruning starts
                api.prune(cfg, tmp_path / name, lut=str(tmp_path / f"{name}.json"))
        else:
            with pytest.raises(ConfigError, match=match):
                api.prune(cfg, tmp_path / name, lut=str(tmp_path / f"{name}.json"))


# ---------------------------------------------------------------------------------------------
# Mutation audit: direct known answers for what only the pruning loop's end fractions used to reach
# ---------------------------------------------------------------------------------------------
def _lin(E, H, q, v, M, N):
    return 0.5 + E * H * (q + 2 * v) * 1e-3 + 0.01 * E * M  # multilinear: the LUT reproduces it exactly


def test_emb_latency_saving_sums_every_block_and_the_stem():
    """dT_emb = T(E) - T(E - 1) over every block and the stem (spec §2), 0 at the minimum. With the multilinear
    LUT one block saves H (q + 2 v) 1e-3 + 0.01 M per embedding unit; the stem's table adds its own step. A
    reversed difference (clamped to 0: EMB never looked expensive) was caught only by where a whole pruning run
    stopped."""
    from tenfold.core.latency import LatencyTable

    torch.set_num_threads(1)
    blocks = [BlockDims(3, 6, 10, 40), BlockDims(2, 8, 4, 16)]
    per_block = sum(b.num_heads * (b.qk_dim + 2 * b.v_dim) * 1e-3 + 0.01 * b.mlp_hidden for b in blocks)
    lat = LatencyModel(synthetic_lut(AXES, 1, _lin))
    assert delta_latency(lat, 12, blocks, "emb", None, MINIMUM["emb"]) == pytest.approx(per_block, rel=1e-12)
    stem = LatencyTable({"embed": AXES["embed"]}, [0.08, 0.16, 0.48])  # 0.01 s per unit between 8 and 16
    with_stem = LatencyModel(lat.block, stem)
    assert delta_latency(with_stem, 12, blocks, "emb", None, MINIMUM["emb"]) == pytest.approx(per_block + 0.01)
    assert delta_latency(with_stem, 8, blocks, "emb", None, MINIMUM["emb"]) == 0.0


def test_relative_eta_is_rho_times_mean_importance_over_mean_saving_of_the_active_units():
    """Spec's eta_mode="relative": eta = rho mean(I) / mean(dT) over the active units only. Planted one-block masks
    (E 12 of 16, H 3 of 4, q 6 of 8, v 10 of 12, M 40 of 48) and importances whose pruned units hold a huge
    value that must not count; dT per unit from the multilinear LUT in closed form."""
    from tenfold.nvit.prune import relative_eta

    torch.set_num_threads(1)
    alive = {"emb": (16, 12), "head": (4, 3), "qk": (8, 6), "v": (12, 10), "mlp": (48, 40)}
    level = {"emb": 1.0, "head": 5.0, "qk": 2.0, "v": 3.0, "mlp": 0.5}
    masks, imp = {}, {}
    for s, (n, k) in alive.items():
        masks[(s, 0)] = torch.cat([torch.ones(k), torch.zeros(n - k)])
        imp[(s, 0)] = torch.cat([torch.full((k,), level[s]), torch.full((n - k,), 1e6)]).double()
    E, H, q, v, M = 12, 3, 6, 10, 40
    dT = {"emb": H * (q + 2 * v) * 1e-3 + 0.01 * M, "head": E * (q + 2 * v) * 1e-3, "qk": E * H * 1e-3,
          "v": 2 * E * H * 1e-3, "mlp": 0.01 * E}
    n_act = sum(k for _, k in alive.values())
    mean_i = sum(k * level[s] for s, (_, k) in alive.items()) / n_act
    mean_dt = sum(k * dT[s] for s, (_, k) in alive.items()) / n_act
    lat = LatencyModel(synthetic_lut(AXES, 1, _lin))
    eta = relative_eta(imp, masks, lat, MINIMUM, rho=0.7)
    assert eta == pytest.approx(0.7 * mean_i / mean_dt, rel=1e-12)
    # every structure at its minimum: nothing to save, eta 0 (not a division by zero)
    floor = {key: torch.cat([torch.ones(MINIMUM[key[0]]), torch.zeros(m.numel() - MINIMUM[key[0]])])
             for key, m in masks.items()}
    assert relative_eta(imp, floor, lat, MINIMUM, rho=0.7) == 0.0


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_lut_arguments_describe_the_configs_model(preset: str) -> None:
    """The LUT is measured at ``build(cfg)``'s token count and grid: the token count is the sequence the config's
    ViT runs (patches + the class token), and each grid axis is its own ``lut_*`` field (a field read for another
    axis, e.g. the QK widths as head counts, measured a table for another model without a word)."""
    from tenfold.nvit import PRESETS
    from tenfold.nvit.api import build, load_model

    cfg = PRESETS[preset]
    b = build(cfg)
    assert b["tokens"] == load_model(cfg).pos_embed.shape[1]
    for axis, field in (("embed", "lut_embed"), ("heads", "lut_heads"), ("qk", "lut_qk"), ("v", "lut_v"),
                        ("mlp", "lut_mlp")):
        assert list(b["grid"][axis]) == [int(v) for v in getattr(cfg, field).split(",")], axis
