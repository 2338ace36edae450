"""Session 21: the figures its READMEs quote for three review findings, measured by one rerunnable command.

1. KAMA's refinement on clean keypoints of bodies the analytic step fits exactly (20 bodies whose poses meet its
   assumptions, true shape given): the analytic fit, the refinement with the prior before session 21 (a zero-mean
   floor w_pose = 1e-4, no anchor) and with the current defaults (anchor w_anchor = 1e-4 to the analytic pose).
2. LSGM's `--sampler sde` on N(0.5, 0.25) data with the exact score: the variance of the ancestral sampler at 100 and
   1,000 steps on both SDEs, and the Euler-Maruyama step it replaced (written out here, as it was) on the geometric
   VPSDE at 200 steps with the N(0, I) score.
3. The spread of KAMA's analytic CPU time per body on one 10-body chunk, timed back to back (the benchmark's clean
   CPU ratio divides by it).

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/session21_review_figures.py \
        --out benchmarks/results/session21_review_figures.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import git_commit
from tenfold.core.geometry import axis_angle_to_matrix, forward_kinematics, matrix_to_axis_angle
from tenfold.core.io import write_json

LIMBS = {"hips": [1, 2], "knees": [4, 5], "shoulders": [16, 17], "elbows": [18, 19]}


def kama_refinement(n: int = 20, seed: int = 11) -> dict[str, Any]:
    """Keypoint residual, MPJPE and median world-rotation error per limb pair for the three fits (mm, deg)."""
    from tenfold.kama.articulate import fit, hinge_axes
    from tenfold.kama.keypoints import regress_keypoints
    from tenfold.kama.procedural import procedural_model, random_betas, random_pose

    model = procedural_model(0)
    g = torch.Generator().manual_seed(seed)
    dt = model.v_template.dtype
    betas = random_betas(n, model.num_betas, generator=g, dtype=dt)
    h = hinge_axes(model.rest_joints(betas))
    pose = torch.stack([random_pose(1, h[i], generator=g, matched=True, dtype=dt)[0] for i in range(n)])
    transl = torch.tensor([[0.0, 0.0, 3.0]], dtype=dt).expand(n, -1)
    with torch.no_grad():
        X = regress_keypoints(model, pose, betas, transl)
        truth = model(pose, betas, transl)
    zero = torch.zeros(24, 3, dtype=torch.float64)

    def world(p: torch.Tensor) -> torch.Tensor:
        return forward_kinematics(axis_angle_to_matrix(p.double()), zero, model.parents)[0]

    out: dict[str, Any] = {"bodies": n, "seed": seed}
    for name, kw in (("analytic", dict(refine_iters=0)),
                     ("refine, zero-mean floor (before session 21)", dict(refine_iters=5, w_pose=1e-4, w_anchor=0.0)),
                     ("refine, anchor (current defaults)", dict(refine_iters=5))):
        o = fit(model, X, None, betas=betas, **kw)
        err = matrix_to_axis_angle(world(pose).transpose(-1, -2) @ world(o["pose"])).norm(dim=-1).rad2deg()
        j, gj = o["joints"] - o["joints"][:, :1], truth["joints"] - truth["joints"][:, :1]
        out[name] = {"keypoint_residual_mm": round(float(o["residual"].mean()) * 1e3, 3),
                     "mpjpe_mm": round(float((j - gj).norm(dim=-1).mean()) * 1e3, 3),
                     **{f"median_rotation_error_deg_{k}": round(float(err[:, v].median()), 2)
                        for k, v in LIMBS.items()}}
    return out


def lsgm_sampler() -> dict[str, Any]:
    """Variance of the ancestral sampler's draws (exact score of N(0.5, 0.25)), and the old Euler-Maruyama std."""
    from tenfold.lsgm.ode import sde_sample
    from tenfold.lsgm.sde import VPSDE, GeometricVPSDE

    mu, s2 = 0.5, 0.25

    def gaussian_eps(sde: Any, m0: float, v0: float):
        def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            m, v = sde.mean_coef(t)[:, None], sde.var(t)[:, None]
            return v.sqrt() * (z - m * m0) / (m * m * v0 + v)
        return fn

    out: dict[str, Any] = {"data": "N(0.5, 0.25), 20,000 x 2 draws, exact score"}
    for sde in (VPSDE(), GeometricVPSDE()):
        z1 = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for steps in (100, 1000):
            z, _ = sde_sample(gaussian_eps(sde, mu, s2), sde, z1, steps=steps,
                              generator=torch.Generator().manual_seed(1))
            out[f"ancestral_variance_{sde.name}_{steps}_steps"] = round(float(z.var()), 4)
    sde = GeometricVPSDE()  # the replaced sampler: reverse-SDE Euler-Maruyama on the uniform grid, no last noise
    eps = gaussian_eps(sde, 0.0, 1.0)
    z = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    ts = torch.linspace(1.0, 1e-5, 201, dtype=torch.float64)
    for i in range(200):
        t, dt = float(ts[i]), float(ts[i + 1] - ts[i])
        tb = torch.full((z.shape[0],), t, dtype=z.dtype)
        beta, sigma = sde.beta(tb)[:, None], sde.var(tb).sqrt()[:, None]
        z = z + (-0.5 * beta * z + beta * eps(z, tb) / sigma) * dt
        if i < 199:
            z = z + torch.sqrt(beta * -dt) * torch.randn(z.shape, generator=gen, dtype=z.dtype)
    out["euler_maruyama_std_geometric_200_steps_normal_data"] = round(float(z.std()), 3)
    return out


def kama_analytic_timing(repeats: int = 8) -> dict[str, Any]:
    """Process CPU ms per body of the analytic fit on the benchmark's clean bodies, 10 at a time, back to back."""
    from benchmarks.kama import run_method
    from tenfold.kama.config import Config
    from tenfold.kama.procedural import procedural_model
    from tenfold.kama.verbs import _synthetic_bodies

    cfg = Config()
    model = procedural_model(cfg.seed)
    s = _synthetic_bodies(model, 30, 100, 0.0)
    run_method("analytic", model, s["keypoints"][:1], None, cfg)
    ms = [1e3 * run_method("analytic", model, s["keypoints"][i:i + 10], None, cfg)[1] / 10
          for _ in range(repeats) for i in range(0, 30, 10)]
    return {"chunks": len(ms), "cpu_ms_per_body_min": round(min(ms), 2), "cpu_ms_per_body_max": round(max(ms), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/session21_review_figures.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    figures = {"kama_refinement_on_exact_fits": kama_refinement(), "lsgm_sde_sampler": lsgm_sampler(),
               "kama_analytic_timing": kama_analytic_timing()}
    write_json(args.out, {"command": f"OMP_NUM_THREADS=1 PYTHONPATH=. python tools/session21_review_figures.py "
                                     f"--out {args.out}", "commit": git_commit(),
                          "wall_seconds": round(time.perf_counter() - t0, 1), "figures": figures})
    print(figures)


if __name__ == "__main__":
    main()
