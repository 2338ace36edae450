"""The benchmarks' statistical and measurement helpers (benchmarks/*.py), against closed forms and planted truths:
the goal functions are re-scored elsewhere (tests/*/test_benchmark_goals.py), but the figures they read come from
these helpers, so a wrong SE, a mean over the wrong axis or a bookkeeping slip would pass those tests unnoticed
(mutation audit, round 4)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import benchmarks.common as common
import benchmarks.kama as kama
import benchmarks.lsgm as lsgm
import benchmarks.nvit as nvit
from tenfold.core.geometry import axis_angle_to_matrix

torch.set_num_threads(1)

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


# ---------------------------------------------------------------------------------------------------------
# benchmarks/lsgm.py
# ---------------------------------------------------------------------------------------------------------
def test_lsgm_paired_reads_the_closed_form_relative_difference_and_its_standard_error() -> None:
    """relative = mean(a) / mean(b) - 1, diff = mean(a - b), SE = std(a - b) / sqrt(n): the NELBO goal's numbers."""
    a, b = torch.tensor([3.0, 5.0, 7.0, 9.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    r = lsgm.paired(a, b)
    assert r["relative"] == pytest.approx(6.0 / 2.5 - 1)
    assert r["diff_nats"] == pytest.approx(3.5)
    assert r["diff_se"] == pytest.approx(math.sqrt(5.0 / 3.0) / 2.0)  # unbiased std of (2, 3, 4, 5) over sqrt(4)
    # a constant per-image gap has no paired SE, however spread the images themselves are
    x = torch.tensor([10.0, 100.0, 1000.0])
    assert lsgm.paired(x + 1.0, x)["diff_se"] == pytest.approx(0.0, abs=1e-9)


class _FlatFeatures(nn.Module):
    """A feature 'network' that returns its input scaled: FD then has a known scaling law."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1)


def test_lsgm_fd_diff_se_resamples_the_two_sample_sets_independently() -> None:
    """Two identical sample sets still have a nonzero SE (each resampled on its own, with replacement); sharing
    their indices, or drawing without replacement, reads exactly 0 and would make any FD gap look significant."""
    g = torch.Generator().manual_seed(0)
    a, real = torch.randn(60, 2, generator=g), torch.randn(60, 2, generator=g)
    se = lsgm.fd_diff_se(_FlatFeatures(), a, a.clone(), real, reps=30)
    assert se > 1e-3


def test_lsgm_fd_diff_se_is_a_standard_deviation_in_fd_units() -> None:
    """FD scales with the square of the features, so its SE must too (a variance would scale with the 4th power)."""
    g = torch.Generator().manual_seed(1)
    a, b, real = (torch.randn(50, 2, generator=g) + s for s in (0.0, 0.3, 0.1))
    se1 = lsgm.fd_diff_se(_FlatFeatures(1.0), a, b, real, reps=30)
    se10 = lsgm.fd_diff_se(_FlatFeatures(10.0), a, b, real, reps=30)
    assert se1 > 0 and se10 / se1 == pytest.approx(100.0, rel=1e-6)


def test_lsgm_fd_diff_se_shares_the_real_resample_between_the_two_terms() -> None:
    """With large generated sets and a small real set the real set's resampling dominates each FD; one draw of it
    shared by both terms cancels in the difference (independent draws would read sqrt(2) x one term's SE)."""
    g = torch.Generator().manual_seed(2)
    a, b, real = torch.randn(3000, 2, generator=g), torch.randn(3000, 2, generator=g), torch.randn(25, 2, generator=g)
    net = _FlatFeatures()
    se = lsgm.fd_diff_se(net, a, b, real, reps=40)
    from tenfold.core.metrics import frechet_distance, gaussian_stats

    gen = torch.Generator().manual_seed(3)
    one = [frechet_distance(*gaussian_stats(a[torch.randint(3000, (3000,), generator=gen)].double()),
                            *gaussian_stats(real[torch.randint(25, (25,), generator=gen)].double())) for _ in range(40)]
    single_se = float(torch.tensor(one).std())
    assert se < 0.5 * single_se


class _CountUNet(nn.Module):
    """Stands in for the data-space U-Net: ch ** 2 parameters, and it records how it was built."""

    built: list[dict[str, Any]] = []

    def __init__(self, in_ch: int, ch: int, **kw: Any) -> None:
        super().__init__()
        _CountUNet.built.append(dict(kw, in_ch=in_ch, ch=ch))
        self.w = nn.Parameter(torch.zeros(ch * ch))


def test_lsgm_data_channels_picks_the_width_of_nearest_parameter_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal parameter count is the data-space contender's fairness: the nearest width, in either direction, within
    6..128, counted on the U-Net the benchmark trains (DATA_MULT scales, one res block)."""
    monkeypatch.setattr(lsgm, "UNet", _CountUNet)
    _CountUNet.built.clear()
    assert lsgm.data_channels(20 * 20) == 20
    assert lsgm.data_channels(420) == 20 and lsgm.data_channels(421) == 21  # 400 / 441 on either side
    assert lsgm.data_channels(0) == 6 and lsgm.data_channels(10 ** 9) == 128
    assert {(k["ch_mult"], k["num_res_blocks"], k["in_ch"]) for k in _CountUNet.built} == {(lsgm.DATA_MULT, 1, 1)}


def _sweep(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, best_lr: float, max_sweep: int = 5) -> dict[float, float]:
    """pick_lr with training replaced by a planted validation objective, minimal at ``best_lr`` (in log lr)."""
    calls: list[float] = []

    def train(ch: int, lr: float, *a: Any, **k: Any) -> tuple[float, float, dict[str, Any]]:
        calls.append(lr)
        assert len(calls) <= 3 * max_sweep, f"the sweep does not terminate: {calls}"
        return lr, 0.0, {}

    monkeypatch.setattr(lsgm, "train_data_sgm", train)
    monkeypatch.setattr(lsgm, "data_dsm_nll", lambda m, *a, **k: (math.log10(m) - math.log10(best_lr)) ** 2)
    a = types.SimpleNamespace(sweep=[1e-3, 3e-3, 1e-2], sweep_steps=1, batch=1, time_scale=1.0, ema=0.9,
                              max_sweep=max_sweep)
    return lsgm.pick_lr(8, torch.zeros(1), torch.zeros(1), a, tmp_path, lsgm.VPSDE(), 1e-5)


def test_lsgm_pick_lr_widens_at_the_winning_edge_until_the_best_is_interior(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    """The sweep keeps every lr it tried; it grows x3 past an upper-edge winner, /3 past a lower-edge one, stops
    once the best is interior, and never tries more than ``max_sweep`` lrs."""
    interior = _sweep(monkeypatch, tmp_path, 3e-3)
    assert sorted(interior) == pytest.approx([1e-3, 3e-3, 1e-2])
    assert min(interior, key=interior.get) == pytest.approx(3e-3)
    up = _sweep(monkeypatch, tmp_path, 0.015)  # 1e-2 wins at the edge, then 3e-2 is tried and loses
    assert sorted(up) == pytest.approx([1e-3, 3e-3, 1e-2, 3e-2])
    down = _sweep(monkeypatch, tmp_path, 1e-6)  # keeps winning at the lower edge: capped at max_sweep lrs
    assert sorted(down) == pytest.approx([1e-3 / 9, 1e-3 / 3, 1e-3, 3e-3, 1e-2])
    assert len(_sweep(monkeypatch, tmp_path, 10.0, max_sweep=4)) == 4


def test_lsgm_dequantise_is_a_binary_draw_plus_uniform_noise_in_minus_one_one() -> None:
    """y = Bernoulli(x) + U - 1: y >= 0 exactly when the draw is 1 (the data-space samples are binarised by y > 0),
    and a grey pixel lands in either half of [-1, 1) with its own probability."""
    torch.manual_seed(0)
    x = torch.tensor([0.0, 1.0]).repeat(500)
    y = lsgm.dequantise(x)
    assert torch.equal((y >= 0).float(), x) and float(y.min()) >= -1 and float(y.max()) < 1
    assert float(y[x == 1].mean()) == pytest.approx(0.5, abs=0.05)
    grey = lsgm.dequantise(torch.full((4000,), 0.25))
    assert float((grey >= 0).float().mean()) == pytest.approx(0.25, abs=0.03)
    assert float(grey.min()) < -0.9 and float(grey.max()) > 0.9

def test_lsgm_merge_earlier_keeps_the_earlier_run_its_figures_goals_and_seconds(tmp_path: Path) -> None:
    """``--update-from``: the dataset not rerun keeps its figures and goals, and its source names the command,
    commit and the wall / CPU seconds of the run that measured it (the merged file's own seconds are this run's)."""
    old = {"command": "python -m benchmarks.lsgm --data mnist-test", "environment": {"commit": "abc"},
           "figures": {"settings": {"data": "mnist-test"}, "mnist-test": {"nfe": 26}},
           "goals": [{"name": "mnist-test: x", "holds": True}, {"name": "other: y", "holds": False}],
           "wall_seconds": 4065.8, "process_cpu_seconds": 3454.7}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    figures, goals = lsgm.merge_earlier(path, ["omniglot-small1"], {"omniglot-small1": {"nfe": 32}}, [])
    assert figures["mnist-test"] == {"nfe": 26} and [g["name"] for g in goals] == ["mnist-test: x"]
    assert figures["dataset_sources"] == {
        "omniglot-small1": "this run",
        "mnist-test": {"command": old["command"], "commit": "abc", "wall_seconds": 4065.8,
                       "process_cpu_seconds": 3454.7}}
    # merged again: the earlier source record travels as it is
    path.write_text(json.dumps({**old, "figures": {**figures, "settings": {"data": "omniglot-small1"}},
                                "goals": goals, "wall_seconds": 1.0}))
    again, _ = lsgm.merge_earlier(path, ["omniglot-small1"], {}, [])
    assert again["dataset_sources"]["mnist-test"]["wall_seconds"] == 4065.8


def test_lsgm_time_scale_merge_joins_one_model_per_file_and_rescores_the_committed_gpu_study(tmp_path: Path) -> None:
    """``--merge``: the per-model files of results/lsgm_budget_h200/ join to the committed merged figures (each
    model's profile kept, the ratio = data-space NFE / LSGM NFE at each tolerance, goals re-scored); files of
    another study (other steps), a model given twice, files of different tolerances and unreadable files are
    refused with one line, and one model alone gets no ratio and no goal."""
    import benchmarks.lsgm_time_scale as ts
    root = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "lsgm_budget_h200"
    if not (root / "mnist-test-3200-lsgm.json").is_file():
        pytest.skip(f"{root} or its files are absent")
    for merged in sorted(p for p in root.glob("*.json") if p.stem.count("-") == 2):
        parts = [root / f"{merged.stem}-{m}.json" for m in ("lsgm", "data_space")]
        fig, scales = ts.merge(parts)
        committed = json.loads(merged.read_text())
        row, want = fig["time_scale_1000"], committed["figures"]["time_scale_1000"]
        assert row == want, merged.name
        for tol in ("0.001", "1e-05"):
            assert row[f"nfe_ratio_data_over_lsgm_tol_{tol}"] == pytest.approx(
                row["data_space"][f"tol_{tol}"]["nfe_median"] / row["lsgm"][f"tol_{tol}"]["nfe_median"])
        assert ts.goals_of(fig, scales) == committed["goals"]
    other = json.loads((root / "mnist-test-3200-lsgm.json").read_text())
    other["figures"]["lsgm_steps"] = 9600
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="not the same study"):
        ts.merge([root / "mnist-test-3200-data_space.json", tmp_path / "other.json"])
    with pytest.raises(SystemExit, match="more than one file"):
        ts.merge([root / "mnist-test-3200-lsgm.json", root / "mnist-test-3200-lsgm.json"])
    fewer = json.loads((root / "mnist-test-3200-data_space.json").read_text())
    del fewer["figures"]["time_scale_1000"]["data_space"]["tol_1e-05"]
    (tmp_path / "fewer.json").write_text(json.dumps(fewer))
    with pytest.raises(SystemExit, match="different tolerances"):
        ts.merge([root / "mnist-test-3200-lsgm.json", tmp_path / "fewer.json"])
    (tmp_path / "cut.json").write_text("{")  # a file cut short while written
    for bad in (tmp_path / "cut.json", tmp_path / "absent.json"):
        with pytest.raises(SystemExit, match="not a readable result"):
            ts.merge([root / "mnist-test-3200-lsgm.json", bad])
    alone, scales = ts.merge([root / "mnist-test-3200-lsgm.json"])
    assert set(alone["time_scale_1000"]) == {"lsgm"} and ts.goals_of(alone, scales) == []
    assert alone["sources"][str(root / "mnist-test-3200-lsgm.json")]["wall_seconds"] == 168.9  # the training's



# ---------------------------------------------------------------------------------------------------------
# benchmarks/gradinversion.py (needs breaching, which the benchmark itself needs)
# ---------------------------------------------------------------------------------------------------------
gi = pytest.importorskip("benchmarks.gradinversion", reason="benchmarks.gradinversion needs the breaching package")


def test_gradinversion_overlap_is_the_multiset_overlap_over_the_true_batch() -> None:
    """Repeated labels count as often as both sides hold them; missing predictions count as wrong."""
    t = torch.tensor
    assert gi._overlap(t([0, 0, 1]), t([0, 1, 1])) == pytest.approx(2 / 3)
    assert gi._overlap(t([1]), t([1, 2])) == pytest.approx(0.5)
    assert gi._overlap(t([], dtype=torch.long), t([3, 3])) == 0.0
    assert gi._overlap(t([5, 5, 5]), t([5, 5, 5])) == 1.0


def test_gradinversion_expected_overlap_equals_the_average_over_every_padding() -> None:
    """E[overlap] with ``pads`` uniform labels from C classes equals the exact average over all C ** pads paddings,
    and with no padding it is the plain overlap; chosen = none, pads = B unique labels: 1 - (1 - 1/C) ** B."""
    t = torch.tensor
    C = 4
    for chosen, true in ((t([0, 0]), t([0, 1, 1, 2, 3])), (t([3]), t([3, 3, 1, 0])), (t([1, 2]), t([2, 1, 0, 0]))):
        pads = len(true) - len(chosen)
        exact = sum(gi._overlap(torch.cat([chosen, t(p)]), true)
                    for p in itertools.product(range(C), repeat=pads)) / C ** pads
        assert gi.expected_overlap(chosen, pads, true, C) == pytest.approx(exact, abs=1e-12)
        assert gi.expected_overlap(true, 0, true, C) == pytest.approx(1.0)
        assert gi.expected_overlap(chosen, 0, true, C) == pytest.approx(gi._overlap(chosen, true))
    B, C = 4, 10
    none = torch.zeros(0, dtype=torch.long)
    assert gi.expected_overlap(none, B, torch.arange(B), C) == pytest.approx(1 - (1 - 1 / C) ** B)


def test_gradinversion_breaching_labels_unpadded_separates_chosen_labels_from_random_padding() -> None:
    """breaching's ``analytic`` rule on a bias gradient negative at classes 0 and 3 (B = 4) chooses exactly those
    two, class 0 included, and pads two; ``yin`` chooses all B; torch.randint is restored afterwards."""
    real_randint = torch.randint
    W = torch.zeros(5, 3)
    W[:, 0] = torch.tensor([-3.0, -1.0, 0.5, -2.0, 1.0])  # yin ranks rows by their minimum: 0, 3, 1, then 4 / 2
    bias = torch.tensor([-1.0, 0.5, 0.2, -2.0, 0.3])
    chosen, pads = gi.breaching_labels_unpadded("analytic", [W, bias], 4)
    assert sorted(chosen.tolist()) == [0, 3] and pads == 2
    chosen, pads = gi.breaching_labels_unpadded("yin", [W, bias], 3)
    assert sorted(chosen.tolist()) == [0, 1, 3] and pads == 0
    assert torch.randint is real_randint


def _run(psnr: float, ssim: float, snap: dict[int, float]) -> dict[str, Any]:
    return {"psnr": psnr, "psnr_returned": psnr - 1, "psnr_max": psnr + 1, "ssim": ssim, "label_accuracy": ssim,
            "cpu_s_per_iteration": psnr / 100, "wall_s_per_iteration": psnr / 50,
            "psnr_vs_iterations": snap, "ssim_vs_iterations": {k: v / 100 for k, v in snap.items()}}


def test_gradinversion_cell_row_means_every_figure_over_the_seeds() -> None:
    """Each figure of a cell is the mean over its seeded runs (not the first seed's), per snapshot too."""
    runs = [_run(10.0, 0.1, {8: 6.0, 16: 9.0}), _run(14.0, 0.5, {8: 8.0, 16: 13.0}), _run(18.0, 0.3, {8: 1.0, 16: 2.0})]
    row = gi._cell_row("trained", 4, "ours", runs, [8, 16])
    assert (row["regime"], row["B"], row["attack"]) == ("trained", 4, "ours")
    assert row["psnr"] == pytest.approx(14.0) and row["psnr_returned"] == pytest.approx(13.0)
    assert row["psnr_max"] == pytest.approx(15.0)
    assert row["ssim"] == pytest.approx(0.3) and row["label_accuracy"] == pytest.approx(0.3)
    assert row["cpu_s_per_iteration"] == pytest.approx(0.14) and row["wall_s_per_iteration"] == pytest.approx(0.28)
    assert row["psnr_per_seed"] == [10.0, 14.0, 18.0]
    assert row["psnr_vs_iterations"] == {"8": 5.0, "16": 8.0}
    assert row["ssim_vs_iterations"] == pytest.approx({"8": 0.05, "16": 0.08})


def test_gradinversion_attack_seeds_are_distinct_across_every_cell_and_draw() -> None:
    """Two cells (or two draws) sharing a seed would start from the same images: every (regime, B, k) of both
    scales gets its own seed, and it does not depend on call order."""
    keys = [(r, B, k) for r in gi.REGIMES for B in (1, 4, 8, 10) for k in range(5)]
    seeds = [gi._attack_seed(*key) for key in keys]
    assert len(set(seeds)) == len(keys)
    assert seeds == [gi._attack_seed(*key) for key in reversed(keys)][::-1]


def test_gradinversion_pick_batch_unique_and_non_unique_batches() -> None:
    """Unique batches hold B different labels; non-unique ones are the seeded permutation's first B (repeats allowed,
    as in real data), and the same seed gives the same batch."""
    from tenfold.gradinversion.verbs import pick_batch

    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    for seed in range(20):
        u = pick_batch(labels, 3, seed)
        assert sorted(labels[u].tolist()) == [0, 1, 2] and len(set(u.tolist())) == 3
        n = pick_batch(labels, 8, seed, unique=False)
        assert len(set(n.tolist())) == 8 and torch.equal(n, pick_batch(labels, 8, seed, unique=False))
        assert torch.equal(n, torch.randperm(12, generator=torch.Generator().manual_seed(seed))[:8])


def test_gradinversion_oracle_affine_psnr_fits_one_scale_and_per_channel_offsets() -> None:
    """Images that are the truth under one brightness scale and per-channel offsets, shuffled, are fitted exactly
    (very high PSNR); per-channel scales are outside the oracle's affine family and are not."""
    g = torch.Generator().manual_seed(0)
    truth = 0.2 + 0.6 * torch.rand(3, 3, 12, 12, generator=g)
    off = torch.tensor([0.05, -0.1, 0.02]).view(1, 3, 1, 1)
    images = (0.9 * truth + off)[torch.tensor([2, 0, 1])]
    assert gi.oracle_affine_psnr(images, truth) > 100
    per_channel = truth * torch.tensor([0.6, 1.0, 1.3]).view(1, 3, 1, 1) - 0.05
    assert gi.oracle_affine_psnr(per_channel.clamp(0, 1), truth) < 60


# ---------------------------------------------------------------------------------------------------------
# benchmarks/nvit.py
# ---------------------------------------------------------------------------------------------------------
def test_nvit_paired_margin_is_the_mean_top1_difference_in_points_with_paired_se() -> None:
    """mean(a - b) and std(a - b) / sqrt(n), both x100 (points), on per-image hits of the same images."""
    a, b = torch.tensor([True, True, False, True]), torch.tensor([True, False, False, False])
    r = nvit.paired_margin(a, b)
    assert r["mean"] == pytest.approx(50.0)
    assert r["se"] == pytest.approx(round(100 * math.sqrt(1 / 3) / 2, 2))
    assert nvit.paired_margin(b, a)["mean"] == pytest.approx(-50.0)


def test_nvit_bisect_finds_the_knob_meeting_the_target_both_ways() -> None:
    """On a latency that rises (or falls) with the knob, bisection lands within 2^-iters of the planted knob and
    returns the closest (knob, model, latency) it saw."""
    k, m, t = nvit.bisect(lambda s: ("model", s), 0.0, 1.0, 0.6, lambda m: m[1], 12, increasing=True)
    assert k == pytest.approx(0.6, abs=1e-3) and m == ("model", k) and t == k
    k, m, t = nvit.bisect(lambda s: 1.0 - s, 0.0, 1.0, 0.6, lambda m: m, 12, increasing=False)
    assert k == pytest.approx(0.4, abs=1e-3) and t == pytest.approx(0.6, abs=1e-3) and m == t
    # the returned point is the best seen, not the last
    seen: list[float] = []
    k, _, t = nvit.bisect(lambda s: s, 0.0, 1.0, 0.5, lambda m: seen.append(m) or m, 3, increasing=True)
    assert k == 0.5 and min(abs(s - 0.5) for s in seen) == abs(t - 0.5)


def test_nvit_measured_returns_wall_then_cpu_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """``measured`` is (median wall, median CPU) of time_model at the given batch, repeats and device."""
    calls: list[tuple[Any, ...]] = []

    def fake(vit: Any, batch: int, *, repeats: int, device: str) -> Any:
        calls.append((vit, batch, repeats, device))
        return types.SimpleNamespace(median=0.25, cpu_median=0.75)

    monkeypatch.setattr(nvit, "time_model", fake)
    assert nvit.measured("vit", 64, 7, "cpu") == (0.25, 0.75)
    assert calls == [("vit", 64, 7, "cpu")]


# ---------------------------------------------------------------------------------------------------------
# benchmarks/kama.py
# ---------------------------------------------------------------------------------------------------------
def _world(pose: torch.Tensor) -> torch.Tensor:
    """World rotations (F, 24, 3, 3) of an axis-angle pose down the SMPL tree."""
    R = axis_angle_to_matrix(pose.double())
    G: list[torch.Tensor] = []
    for j, par in enumerate(SMPL_PARENTS):
        G.append(R[:, j] if par < 0 else G[par] @ R[:, j])
    return torch.stack(G, 1)


def test_kama_rotation_tracking_reads_a_planted_world_rotation_in_degrees() -> None:
    """BVH world rotations W_t = Rz(theta_t) G_t O_j (a constant bone-frame offset O_j, theta_0 = 0): the offset
    cancels and every tracked joint's angle per frame is theta_t, so mean / p90 are those of theta in degrees."""
    g = torch.Generator().manual_seed(0)
    F = 11
    pose = 0.4 * torch.randn(F, 24, 3, generator=g, dtype=torch.float64)
    G = _world(pose)
    theta = torch.linspace(0, 50, F, dtype=torch.float64)
    Rz = axis_angle_to_matrix(torch.stack([torch.zeros(F), torch.zeros(F), theta.deg2rad()], -1).double())
    names = sorted(set(kama.TRACKED.values())) + ["Unused"]
    off = axis_angle_to_matrix(torch.randn(len(names), 3, generator=g, dtype=torch.float64))
    W = torch.eye(3, dtype=torch.float64).expand(F, len(names), 3, 3).clone()
    for j, bvh in kama.TRACKED.items():
        i = names.index(bvh)
        W[:, i] = Rz @ G[:, j] @ off[i]
    out = kama.rotation_tracking(types.SimpleNamespace(parents=SMPL_PARENTS), pose, W, names)
    assert set(out) == {f"{j}:{n}" for j, n in kama.TRACKED.items()}
    for v in out.values():
        assert v["mean_deg"] == pytest.approx(25.0, abs=0.01)
        assert v["p90_deg"] == pytest.approx(float(theta.quantile(0.9)), abs=0.01)
    same = kama.rotation_tracking(types.SimpleNamespace(parents=SMPL_PARENTS), pose,
                                  torch.stack([G[:, j] @ off[0] for j in range(24)], 1),
                                  [kama.TRACKED.get(j, f"j{j}") for j in range(24)])
    assert all(v["mean_deg"] == pytest.approx(0.0, abs=0.01) for v in same.values())


class _FakeBody:
    """A body model stand-in: ``weights`` for the hand mask, and a forward that returns per-body tensors."""

    weights = torch.zeros(6, 24)

    def __call__(self, pose: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"joints": pose.clone()}


def test_kama_synthetic_summary_is_mean_over_bodies_and_median_cpu_over_chunks(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """Errors are means over all bodies (not over chunk means: the last chunk is short), per method; CPU per body is
    the median over chunks of each chunk's seconds / its body count."""
    n = 5
    idx = torch.arange(n, dtype=torch.float64)
    bodies = {"pose": idx.view(n, 1, 1).expand(n, 1, 3).clone(), "betas": torch.zeros(n, 1),
              "transl": torch.zeros(n, 3), "keypoints": idx.view(n, 1, 1).expand(n, 2, 3).clone()}
    monkeypatch.setattr(kama, "_synthetic_bodies", lambda model, n_, seed, noise: bodies)
    cpu_per_body = {0: 1.0, 2: 10.0, 4: 3.0}  # ms per body of the chunk starting at body 0, 2, 4 (a short one)

    def run_method(name: str, model: Any, X: torch.Tensor, c: Any, cfg: Any, **kw: Any
                   ) -> tuple[dict[str, Any], float]:
        return {"scale": kama.METHODS.index(name) + 1}, 1e-3 * cpu_per_body[int(X[0, 0, 0])] * X.shape[0]

    def evaluate(model: Any, out: dict[str, Any], gt: dict[str, torch.Tensor], X: torch.Tensor, hand: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        assert torch.equal(gt["joints"][:, 0, 0], X[:, 0, 0])  # the chunk's own ground truth
        return {"mpjpe": out["scale"] * X[:, 0, 0] ** 2, "pve": X[:, 0, 0] + 0}

    monkeypatch.setattr(kama, "run_method", run_method)
    monkeypatch.setattr(kama, "evaluate", evaluate)
    res = kama.synthetic(_FakeBody(), None, n, 0.0, chunk=2, seed=0)
    assert set(res) == set(kama.METHODS)
    for i, m in enumerate(kama.METHODS):
        assert res[m]["mpjpe"] == pytest.approx(6.0 * (i + 1))  # mean of 0, 1, 4, 9, 16, times the method's scale
        assert res[m]["pve"] == pytest.approx(2.0)
        assert res[m]["cpu_ms_per_body"] == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------------------
# benchmarks/common.py
# ---------------------------------------------------------------------------------------------------------
def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_common_git_commit_marks_tracked_changes_dirty_and_ignores_untracked_files(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """HEAD's sha; '-dirty' once a tracked file changes; an untracked file (a result being written) is not a change;
    outside a repository, 'unknown'."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    monkeypatch.setattr(common, "__file__", str(repo / "benchmarks" / "common.py"))
    assert common.git_commit() == "unknown"
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "c")
    sha = _git(repo, "rev-parse", "HEAD")
    assert common.git_commit() == sha
    (repo / "new.json").write_text("{}")
    assert common.git_commit() == sha
    (repo / "a.txt").write_text("2\n")
    assert common.git_commit() == sha + "-dirty"


def test_common_write_result_payload_records_command_commit_and_timing(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """The result file holds the command that reproduces it, the commit at start (and at write only when it moved),
    figures and goals as given, and wall seconds only when a start time is passed."""
    monkeypatch.setattr(common, "COMMIT_AT_START", "abc")
    monkeypatch.setattr(common, "git_commit", lambda: "abc")
    monkeypatch.setattr(sys, "argv", ["x", "--data", "a b", "--jobs", "2"])
    goals = [common.goal("g", "<= 1", 0.5, True)]
    path = common.write_result("lsgm", {"f": 1}, goals, out=tmp_path / "r.json")
    p = json.loads(path.read_text())
    assert path == tmp_path / "r.json"
    assert p["command"] == "python -m benchmarks.lsgm --data 'a b' --jobs 2"
    assert p["environment"]["commit"] == "abc" and "commit_at_write" not in p["environment"]
    assert p["figures"] == {"f": 1} and p["goals"] == goals and "wall_seconds" not in p
    monkeypatch.setattr(common, "git_commit", lambda: "def")
    p = json.loads(common.write_result("lsgm", {}, [], out=tmp_path / "s.json",
                                       started=time.perf_counter() - 2.0).read_text())
    assert p["environment"]["commit"] == "abc" and p["environment"]["commit_at_write"] == "def"
    assert 2.0 <= p["wall_seconds"] < 30 and p["process_cpu_seconds"] >= 0


def test_write_result_times_cpu_and_wall_over_the_same_span(tmp_path: Path) -> None:
    """Session 22 review: the wall seconds ran from ``started`` while the CPU seconds ran from the process's start
    (imports and, in this pytest process, every earlier test), so a one-thread run could read more CPU than wall.
    With ``clock()`` both start at the same moment."""
    # a child process's CPU before the start (CI's pytest had spawned torchrun workers: 88.7 s) must not count
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:"
                    "\n    pass"], check=True)
    started = common.clock()
    t = time.process_time()
    while time.process_time() - t < 0.2:  # 0.2 s of CPU
        pass
    path = common.write_result("unit", {}, [], out=tmp_path / "r.json", started=started)
    r = json.loads(path.read_text())
    assert 0.15 <= r["process_cpu_seconds"] <= r["wall_seconds"] + 0.1 < 5.0
    assert "process_cpu_span" not in r
    old = json.loads(common.write_result("unit", {}, [], out=tmp_path / "o.json",
                                         started=time.perf_counter()).read_text())
    assert old["process_cpu_span"] == "since the process started (imports included)"


def test_gradinversion_ablations_run_each_declared_variant_on_the_comparisons_cells(monkeypatch) -> None:
    """--ablations: every variant of ABLATIONS, in order, per cell, with its overrides over the cpu preset (grad only
    has no prior at all), from the image comparison's start seeds; IIP and labels are fractions."""
    from tests.gradinversion.nets import two_bn_net

    net = two_bn_net(0, (0.5, 1.5))
    net.input_size = (3, 16, 16)  # as the CIFAR ResNets carry it
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.rand(20, 3, 16, 16, generator=g), torch.arange(20) % 5
    seen: list[Any] = []
    real = gi.build

    def spy(cfg: Any) -> Any:
        seen.append(cfg)
        return real(cfg)

    monkeypatch.setattr(gi, "build", spy)
    rows = gi.ablation_study({"trained": (net, [0.5] * 3, [0.25] * 3)}, xs, ys, ["trained"], [1, 2], 2, 1, "cpu")
    names = list(gi.ABLATIONS)
    assert [(r["B"], r["variant"]) for r in rows] == [(B, n) for B in (1, 2) for n in names]
    warm, seen = seen[0], seen[1:]  # one short run off the clock first
    assert warm.iterations == 2 and warm.seed == 10 ** 6
    cfg = dict(zip(names, seen[:len(names)]))
    preset = gi.PRESETS["cpu"]
    assert (cfg["grad only"].alpha_tv, cfg["grad only"].alpha_l2, cfg["grad only"].alpha_bn) == (0.0, 0.0, 0.0)
    tv = cfg["+ TV / l2 (the cpu preset)"]
    assert tv.alpha_tv == preset.alpha_tv > 0 and tv.alpha_l2 == preset.alpha_l2 > 0 and tv.alpha_bn == 0
    assert cfg["+ BN prior (alpha_bn 1e-3)"].alpha_bn == 1e-3
    control = cfg["G = 3 independent, plain mean (the group variants' control)"]
    assert control.group_size == 3 and control.alpha_group == 0 and control.registration == "none"
    pulled = cfg["+ group, registration none (consensus: the plain mean)"]
    assert pulled.alpha_group == preset.alpha_group > 0 and pulled.registration == "none"
    assert cfg["+ group, registration translation"].registration == "translation"
    assert all(c.seed == gi._attack_seed("trained", 1, 0) and c.iterations == 2 for c in seen[:len(names)])
    assert all(0 <= r["iip_pixel"] <= 1 and 0 <= r["label_accuracy"] <= 1 and r["cpu_s"] > 0 for r in rows)
    seen.clear()  # --seed-start: the comparison's draws from there on
    gi.ablation_study({"trained": (net, [0.5] * 3, [0.25] * 3)}, xs, ys, ["trained"], [1], 2, 1, "cpu", seed_start=2)
    assert all(c.seed == gi._attack_seed("trained", 1, 2) for c in seen[1:])
