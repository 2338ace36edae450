"""The GradInversion benchmark's goal logic (benchmarks/gradinversion.py): deltas against the better breaching
attack per cell, cut-short cells named and failing, CPU goals only for CPU runs, and --merge of cells run as
separate processes."""

from __future__ import annotations

import json

import pytest

from benchmarks.gradinversion import image_goals, merge_cells


def _row(regime, B, attack, psnr, seeds=(), labels=1.0, cpu=0.05):
    return {"regime": regime, "B": B, "attack": attack, "psnr": psnr, "label_accuracy": labels,
            "cpu_s_per_iteration": cpu, "psnr_per_seed": list(seeds)}


def _figures(rows, device="cpu", attacks=("seethroughgradients", "invertinggradients")):
    return {"images": rows, "breaching_attacks": list(attacks), "device": device, "data": "x", "iterations": 8,
            "snapshots_at": [2, 4, 8], "ours_config": {}, "seeds": 2}


def _goal(goals, start):
    return next(g for g in goals if g["name"].startswith(start))


def test_delta_is_against_the_better_attack_with_its_paired_se():
    rows = [_row("trained", 1, "ours", 15.0, (15.2, 14.8)), _row("trained", 1, "seethroughgradients", 10.0, (10, 10)),
            _row("trained", 1, "invertinggradients", 13.5, (13.5, 13.5))]
    f = _figures(rows)
    goals = image_goals(f, ("trained",), 8, 4)
    assert f["psnr_delta_vs_better_breaching"] == [1.5]
    assert f["psnr_delta_se"] == [pytest.approx(0.2)]  # stdev(1.7, 1.3) / sqrt(2)
    assert _goal(goals, "PSNR")["holds"]
    rows[2]["psnr"] = 14.5  # the better attack moves: delta 0.5 fails
    assert not _goal(image_goals(_figures(rows), ("trained",), 8, 4), "PSNR")["holds"]


def test_a_cut_short_cell_is_named_and_fails():
    rows = [_row("trained", 1, "ours", 20.0), _row("trained", 1, "seethroughgradients", 10.0),
            _row("trained", 1, "invertinggradients", 10.0), _row("calibrated", 4, "ours", 20.0)]
    f = _figures(rows)
    goals = image_goals(f, ("trained", "calibrated"), 8, 4)
    assert f["cells_incomplete"] and "calibrated B=4" in f["cells_incomplete"][0]
    assert not _goal(goals, "PSNR")["holds"] and not _goal(goals, "label accuracy")["holds"]


def test_cpu_goals_only_for_cpu_runs():
    rows = [_row("trained", 1, "ours", 15.0), _row("trained", 1, "invertinggradients", 13.0)]
    on_cpu = image_goals(_figures(rows, attacks=("invertinggradients",)), ("trained",), 8, 4)
    on_gpu = image_goals(_figures(rows, "cuda", ("invertinggradients",)), ("trained",), 8, 4)
    assert any(g["name"].startswith("CPU time") for g in on_cpu)
    assert not any(g["name"].startswith("CPU time") for g in on_gpu)


def test_merge_joins_cells_and_refuses_overlaps_and_mismatches(tmp_path):
    a = [_row("trained", 1, "ours", 15.0), _row("trained", 1, "invertinggradients", 13.0)]
    b = [_row("calibrated", 8, "ours", 14.0), _row("calibrated", 8, "invertinggradients", 14.5)]
    paths = []
    for name, rows in (("a", a), ("b", b)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"command": name, "figures": _figures(rows, attacks=("invertinggradients",))}))
    out = merge_cells(paths, tmp_path / "m.json")
    merged = json.loads(out.read_text())
    assert merged["figures"]["psnr_delta_vs_better_breaching"] == [2.0, -0.5]
    assert [m["command"] for m in merged["figures"]["merged_from"]] == ["a", "b"]
    with pytest.raises(SystemExit, match="more than one part"):
        merge_cells([paths[0], paths[0]], tmp_path / "m2.json")
    other = json.loads(paths[1].read_text())
    other["figures"]["iterations"] = 16
    paths[1].write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="iterations"):
        merge_cells(paths, tmp_path / "m3.json")


def test_merge_joins_one_cells_seeds_run_as_separate_processes(tmp_path):
    """--seed-start parts of one cell become one row: means weighted by each part's seeds, per-seed PSNRs in seed
    order (so ours and breaching stay paired), the delta's SE over all seeds; a seed in two parts is refused."""
    def part(name, seeds, ours, ig):
        rows = []
        for attack, vals in (("ours", ours), ("invertinggradients", ig)):
            r = _row("trained", 8, attack, sum(vals) / len(vals), vals)
            r.update(seed_indices=list(seeds), ssim=0.1 * len(seeds),
                     psnr_vs_iterations={"4": sum(vals) / len(vals) - 1, "8": sum(vals) / len(vals)})
            rows.append(r)
        path = tmp_path / f"{name}.json"
        f = _figures(rows, attacks=("invertinggradients",))
        f["seeds"] = len(seeds)
        path.write_text(json.dumps({"command": name, "figures": f}))
        return path

    a, b = part("a", [0, 1], [15.0, 13.0], [14.0, 13.0]), part("b", [2], [16.0], [13.0])
    merged = json.loads(merge_cells([b, a], tmp_path / "m.json").read_text())["figures"]
    ours = next(r for r in merged["images"] if r["attack"] == "ours")
    assert ours["psnr"] == pytest.approx(44.0 / 3) and ours["psnr_per_seed"] == [15.0, 13.0, 16.0]
    assert ours["seed_indices"] == [0, 1, 2] and ours["ssim"] == pytest.approx((0.2 * 2 + 0.1) / 3)
    assert ours["psnr_vs_iterations"]["4"] == pytest.approx(44.0 / 3 - 1, abs=1e-4)
    assert merged["seeds"] == 3
    assert merged["psnr_delta_vs_better_breaching"] == [pytest.approx(round(44.0 / 3 - 40.0 / 3, 3))]
    assert merged["psnr_delta_se"] == [pytest.approx(0.882, abs=1e-3)]  # stdev(1, 0, 3) / sqrt(3)
    with pytest.raises(SystemExit, match="same seeds"):
        merge_cells([a, part("c", [1], [15.0], [14.0])], tmp_path / "m2.json")


def test_delta_se_pairs_attacks_by_seed_index_not_position():
    """A merged cell whose attacks ran different seeds pairs only the seeds both ran (by index), never seed 2 of one
    attack with seed 1 of the other; rows without indices (one process ran both) pair by position."""
    from benchmarks.gradinversion import _seed_pairs

    ours = {"psnr_per_seed": [15.0, 13.0, 16.0], "seed_indices": [0, 1, 2]}
    ig = {"psnr_per_seed": [14.0, 12.0], "seed_indices": [0, 2]}
    assert _seed_pairs(ours, ig) == [(15.0, 14.0), (16.0, 12.0)]
    assert _seed_pairs({"psnr_per_seed": [1.0, 2.0]}, {"psnr_per_seed": [3.0, 4.0]}) == [(1.0, 3.0), (2.0, 4.0)]
    rows = [_row("trained", 1, "ours", 14.0, (15.0, 13.0, 16.0)), _row("trained", 1, "invertinggradients", 13.0,
                                                                       (14.0, 12.0))]
    rows[0]["seed_indices"], rows[1]["seed_indices"] = [0, 1, 2], [0, 2]
    f = _figures(rows, attacks=("invertinggradients",))
    image_goals(f, ("trained",), 8, 4)
    assert f["psnr_delta_se"] == [pytest.approx(1.5)]  # stdev(1, 4) / sqrt(2)


def test_the_committed_results_rescore_to_their_own_goals():
    """Every goal in results/gradinversion.json (names, targets, measured values, verdicts) follows from its
    figures: the image cells, the label study and the group study, scored by the functions the benchmark uses."""
    import copy
    from pathlib import Path

    from benchmarks.gradinversion import REGIMES, group_goal

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "gradinversion.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    d = json.loads(path.read_text())
    fig = copy.deepcopy(d["figures"])
    goals = image_goals(fig, REGIMES, fig["iterations"], fig["paired_cpu_timing"]["iterations_per_call"])
    if "group_consistency" in fig:
        goals.append(group_goal(fig))
    assert json.loads(json.dumps(goals)) == d["goals"]  # through JSON, as written (tuples become lists)
    # the figures image_goals derives are the committed ones too
    for key in ("psnr_delta_vs_better_breaching", "psnr_delta_se", "paired_cpu_ratio_vs_faster_breaching"):
        assert json.loads(json.dumps(fig[key])) == d["figures"][key]


def test_group_goal_holds_only_above_its_control():
    """The group study's verdict: strictly above the plain mean of G runs, not at or below it."""
    from benchmarks.gradinversion import group_goal

    def study(gc, ctrl):
        return {"group_consistency": {"batches": 3, "variants": {
            "control: plain mean of G independent runs": {"psnr": ctrl, "alpha_group": 0.0},
            "group consistency, registration translation": {"psnr": gc, "alpha_group": 0.05}}}}

    assert group_goal(study(14.3, 14.2))["holds"] and not group_goal(study(14.2, 14.2))["holds"]
    assert not group_goal(study(14.1, 14.2))["holds"]
    assert "alpha_group 0.05" in group_goal(study(14.3, 14.2))["name"]
    # with per-batch figures the goal reports the paired difference, its SE and the batches won
    s = study(14.3, 14.2)
    # (a tie is not a batch won)
    s["group_consistency"]["variants"]["control: plain mean of G independent runs"]["psnr_per_batch"] = [
        14.0, 14.4, 14.2]
    s["group_consistency"]["variants"]["group consistency, registration translation"]["psnr_per_batch"] = [
        14.4, 14.2, 14.2]
    g = group_goal(s)
    assert g["holds"] and g["measured"]["minus_control"] == pytest.approx(0.1)
    assert g["measured"]["paired_se"] == pytest.approx(0.176, abs=1e-3)  # stdev(0.4, -0.2, 0) / sqrt(3)
    assert g["measured"]["batches_won"] == 1 and g["measured"]["batches"] == 3
