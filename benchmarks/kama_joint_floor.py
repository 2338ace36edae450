"""Where KAMA's analytic error on clean keypoints sits: per-joint error of the analytic fit on the KAMA benchmark's
clean SYNTHETIC procedural bodies (seed 100, 30 bodies, as ``benchmarks.kama`` draws them), and each joint's share
of the MPJPE (its error / 24). Joints the 26 keypoints cannot see (wrist and hand rotations, the spine split) set
the floor.

    OMP_NUM_THREADS=1 python -m benchmarks.kama_joint_floor          # seconds; writes results/kama_joint_floor.json
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.common import OneLineParser, clock, write_result
from tenfold.kama.articulate import fit
from tenfold.kama.config import Config
from tenfold.kama.procedural import procedural_model
from tenfold.kama.verbs import _synthetic_bodies

JOINT_NAMES = ("pelvis", "L hip", "R hip", "spine1", "L knee", "R knee", "spine2", "L ankle", "R ankle", "spine3",
               "L foot", "R foot", "neck", "L collar", "R collar", "head", "L shoulder", "R shoulder", "L elbow",
               "R elbow", "L wrist", "R wrist", "L hand", "R hand")


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--bodies", type=int, default=30)
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default benchmarks/results/kama_joint_floor.json)")
    args = p.parse_args()
    started = clock()
    torch.set_num_threads(1)
    cfg = Config()
    model = procedural_model(cfg.seed)
    s = _synthetic_bodies(model, args.bodies, 100, 0.0)
    out = fit(model, s["keypoints"], refine_iters=0, with_vertices=False, shape_rounds=cfg.shape_rounds)
    with torch.no_grad():
        got = model(out["pose"], out["betas"], out["transl"])["joints"]
        truth = model(s["pose"], s["betas"], s["transl"])["joints"]
    rel = (got - got[:, :1]) - (truth - truth[:, :1])               # pelvis-relative, as the benchmark's MPJPE
    per_joint = rel.norm(dim=-1).mean(0) * 1e3                       # (24,) mm
    figures = {"bodies": args.bodies, "seed": 100, "mpjpe_mm": round(float(per_joint.mean()), 2),
               "per_joint_mm": {n: round(float(e), 2) for n, e in zip(JOINT_NAMES, per_joint)},
               "mpjpe_share_mm": {n: round(float(e) / 24, 2) for n, e in zip(JOINT_NAMES, per_joint)}}
    for n, e in sorted(figures["per_joint_mm"].items(), key=lambda kv: -kv[1]):
        print(f"{n:>11}: {e:6.2f} mm (MPJPE share {e / 24:.2f} mm)")
    print(f"MPJPE {figures['mpjpe_mm']} mm")
    write_result("kama_joint_floor", figures, [], out=args.out, started=started)


if __name__ == "__main__":
    main()
