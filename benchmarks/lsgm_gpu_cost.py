"""LSGM on a GPU: what the `cifar10` and `paper-cifar10` presets cost, read off short runs of the real presets.

A short run (`tenfold lsgm train --preset P --set stage1_steps=N --set stage2_steps=N` under torchrun) logs
seconds and peak GPU memory every `log_every` steps; this reads each stage's steady-state seconds per step (the
first logged interval, with start-up and cuDNN autotuning, left out), extrapolates them to the preset's full
schedule, and gathers the `sample` / `evaluate` outputs of the same run. `benchmarks/gpu_slot.sh` runs it all:

    python -m benchmarks.lsgm_gpu_cost --run cifar10=RUN --run paper-cifar10=RUN2 \
        --verb sample=SAMPLE.json --verb evaluate=EVAL.json --out lsgm_gpu.json
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.common import OneLineParser, clock, goal, write_result
from tenfold.lsgm.config import PRESETS


def stage_cost(metrics: Path) -> dict[str, Any] | None:
    """Steady-state seconds per step, steps done, last loss and peak memory of one stage's ``metrics.jsonl``."""
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "seconds" in r]
    if not rows:
        return None
    first, last = (rows[1], rows[-1]) if len(rows) > 2 else (rows[0], rows[-1])
    steps = last["step"] - first["step"]
    s_per_step = (last["seconds"] - first["seconds"]) / steps if steps > 0 else last["seconds"] / max(last["step"], 1)
    return {"steps_done": last["step"], "s_per_step": s_per_step, "timed_steps": steps,
            "last_loss": last.get("loss"), "loss_finite": all(math.isfinite(r.get("loss", 0.0)) for r in rows),
            "max_mem_gib": max((r["max_mem_gib"] for r in rows if "max_mem_gib" in r), default=None)}


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="PRESET=RUN_DIR", help="a short run of a preset")
    p.add_argument("--verb", action="append", default=[], metavar="NAME=JSON", help="a verb's --json output")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    started = clock()
    figures: dict[str, Any] = {"presets": {}}
    for spec in args.run:
        preset, run = spec.split("=", 1)
        full = PRESETS[preset]
        try:  # the run's own settings (e.g. --set batch_size=32), as the CLI saved them
            run_cfg = json.loads((Path(run) / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            run_cfg = {}
        entry: dict[str, Any] = {"run_dir": run, "batch_size": run_cfg.get("batch_size", full.batch_size),
                                 "preset_batch_size": full.batch_size, "amp": run_cfg.get("amp", full.amp)}
        total_h = 0.0
        for stage, n_full in (("stage1", full.stage1_steps), ("stage2", full.stage2_steps)):
            c = stage_cost(Path(run) / stage / "metrics.jsonl")
            entry[stage] = c
            if c is not None:
                c["full_schedule_steps"] = n_full
                c["full_schedule_hours_one_gpu"] = round(c["s_per_step"] * n_full / 3600, 2)
                total_h += c["full_schedule_hours_one_gpu"]
        entry["full_schedule_hours_one_gpu"] = round(total_h, 2)
        figures["presets"][preset] = entry
    for spec in args.verb:
        name, path = spec.split("=", 1)
        try:
            figures[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            figures[name] = {"error": f"{path}: {e}"}
    c10 = figures["presets"].get("cifar10", {})
    ran = (all((c10.get(s) or {}).get("loss_finite") for s in ("stage1", "stage2")) and "nfe" in figures.get(
        "sample", {}) and args.device.startswith("cuda") and c10.get("amp") == "bf16")  # a CPU dry run does not count
    goals = [] if "cifar10" not in figures["presets"] else [  # a paper-cifar10-only run times steps only
        goal("the cifar10 preset trains both stages under torchrun in bf16 on a GPU and samples through the "
             "ODE (short run; cost extrapolated to the full schedule)", "runs",
             {"hours_one_gpu_full_schedule": c10.get("full_schedule_hours_one_gpu"),
              "sample_nfe": figures.get("sample", {}).get("nfe")}, bool(ran))]
    write_result("lsgm_gpu_cost", figures, goals, device=args.device, out=args.out, started=started)


if __name__ == "__main__":
    main()
