"""KAMA with a hidden elbow or knee (confidence 0) and its wrist or ankle seen: how far the seen distal point and
the hidden joint land from the truth, analytic and with the CLI presets' 5 refinement steps.

Session 23 replaced the straight swing towards the distal point by two-bone IK (README, "Missing keypoints"). 64
random noise-free bodies of the procedural model (seed 7), one limb's middle joint hidden at a time. Run from the
repository root; ``--label`` names the code measured (run it with PYTHONPATH at another checkout's src to measure
that code)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/kama_hidden_middle_joint.py --label ik --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True, help="what code this measures (recorded)")
    p.add_argument("--bodies", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # bodies whose hidden joint makes the error large warn; not the point here

    import tenfold
    from tenfold.kama import procedural_model
    from tenfold.kama.articulate import fit, hinge_axes
    from tenfold.kama.keypoints import K, regress_keypoints
    from tenfold.kama.procedural import random_betas, random_pose

    m, n = procedural_model(), a.bodies
    g = torch.Generator().manual_seed(7)
    b = random_betas(n, generator=g)
    h = hinge_axes(m.rest_joints(b))
    pose = torch.stack([random_pose(1, h[i], generator=g)[0] for i in range(n)])
    X = regress_keypoints(m, pose, b, torch.randn(n, 3, generator=g))
    rows = []
    for hidden, distal in (("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
                           ("left_knee", "left_ankle"), ("right_knee", "right_ankle")):
        c = torch.ones(n, 26)
        c[:, K[hidden]] = 0
        for r in (0, 5):
            out = fit(m, X, c, refine_iters=r)
            miss = (out["keypoints"][:, K[hidden]] - X[:, K[hidden]]).norm(dim=-1) * 1e3
            d = out["residual"][:, K[distal]] * 1e3
            row = {"hidden": hidden, "refine_iters": r, "hidden_joint_error_mm_mean": round(float(miss.mean()), 1),
                   "hidden_joint_error_mm_median": round(float(miss.median()), 1),
                   "distal_residual_mm_mean": round(float(d.mean()), 2),
                   "distal_residual_mm_max": round(float(d.max()), 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    a.out.write_text(json.dumps({"label": a.label, "tenfold": str(Path(tenfold.__file__).parent), "bodies": n,
                                 "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
