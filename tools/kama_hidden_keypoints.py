"""KAMA with hidden keypoints (confidence 0), analytic and with the CLI presets' 5 refinement steps.

``limbs``: a hidden elbow or knee with its wrist or ankle seen: how far the seen distal point and the hidden joint
land from the truth (session 23 replaced the straight swing towards the distal point by two-bone IK). ``torso``: the
torso keypoint hidden: MPJPE of the 24 joints, noise-free and at 25 mm keypoint noise (session 23 lets pelvis + both
hips fix the root, where the spec's rule needs the torso). 64 random bodies of the procedural model (seed 7). Run
from the repository root; ``--label`` names the code measured (run it with PYTHONPATH at another checkout's src to
measure that code)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/kama_hidden_keypoints.py --label ik --out OUT.json
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
    t = torch.randn(n, 3, generator=g)
    X = regress_keypoints(m, pose, b, t)
    J = m(pose, b, t)["joints"]  # the true joints
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
    for noise in (0.0, 25.0):  # the torso hidden (the root's rule)
        Xn = X + noise * 1e-3 * torch.randn(X.shape, generator=g) / 3 ** 0.5
        c = torch.ones(n, 26)
        c[:, K["torso"]] = 0
        for r in (0, 5):
            out = fit(m, Xn, c, refine_iters=r, noise_mm=noise)
            row = {"hidden": "torso", "noise_mm": noise, "refine_iters": r,
                   "mpjpe_mm": round(float((out["joints"] - J).norm(dim=-1).mean() * 1e3), 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    a.out.write_text(json.dumps({"label": a.label, "tenfold": str(Path(tenfold.__file__).parent), "bodies": n,
                                 "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
