"""How often KAMA's analytic fit turns a nearly straight limb 180 deg about its own axis, under keypoint noise, for
the rule that keeps a near-straight hinge axis on the swing-only solution's side (session 12) applied to no limb,
to the legs (the default) and to every limb. SYNTHETIC procedural bodies (seed 11, 200 bodies) with knees and
elbows bent 3 deg; a hip or shoulder counts as flipped when its global rotation is off by more than 115 deg.

    OMP_NUM_THREADS=1 python -m benchmarks.kama_near_straight          # ~1 min; prints a table, writes
                                                                       # results/kama_near_straight.json
"""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from benchmarks.common import OneLineParser, clock, write_result
from tenfold.core.geometry import matrix_to_axis_angle
from tenfold.kama.articulate import fit, hinge_axes
from tenfold.kama.keypoints import regress_keypoints
from tenfold.kama.procedural import procedural_model, random_betas, random_pose

RULES = {"no limb": (), "legs (default)": (1, 2), "every limb": (1, 2, 16, 17)}
ROOTS = {"L hip": 1, "R hip": 2, "L shoulder": 16, "R shoulder": 17}


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default benchmarks/results/kama_near_straight.json)")
    args = p.parse_args()
    started = clock()
    torch.set_num_threads(1)
    articulate = importlib.import_module("tenfold.kama.articulate")  # the module (the package exports a function)
    model = procedural_model()
    g = torch.Generator().manual_seed(11)
    b = random_betas(200, generator=g)
    h = hinge_axes(model.rest_joints(b))
    pose = torch.stack([random_pose(1, h[i], generator=g)[0] for i in range(200)])
    t = torch.randn(200, 3, generator=g)
    for k, j in enumerate((4, 5, 18, 19)):
        pose[:, j] = 0.05 * h[:, k]  # knees and elbows bent 3 deg
    X = regress_keypoints(model, pose, b, t)
    truth = model(pose, b, t)["G"][..., :3, :3]
    default = articulate.LEG_ROOTS
    print("noise | rule | flipped: " + ", ".join(ROOTS))
    rates: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for mm in (10, 25):
            Xn = X + mm * 1e-3 * torch.randn(X.shape, generator=torch.Generator().manual_seed(mm))
            for name, roots in RULES.items():
                articulate.LEG_ROOTS = roots
                out = fit(model, Xn, refine_iters=0)
                got = model(out["rot"], out["betas"], out["transl"])["G"][..., :3, :3]
                flips = [(matrix_to_axis_angle(got[:, j].transpose(-1, -2) @ truth[:, j]).norm(dim=-1) > 2.0)
                         .float().mean().item() for j in ROOTS.values()]
                print(f"{mm} mm | {name} | " + ", ".join(f"{100 * f:.1f} %" for f in flips))
                rates.setdefault(f"{mm} mm", {})[name] = {r: round(100 * f, 2) for r, f in zip(ROOTS, flips)}
    finally:
        articulate.LEG_ROOTS = default
    write_result("kama_near_straight", {"bodies": 200, "seed": 11, "flipped_percent": rates}, [], out=args.out,
                 started=started)


if __name__ == "__main__":
    main()
