"""The optimisation baseline: an SMPLify-style fit of pose, shape and translation to 3D keypoints.

SMPLify (Bogo et al., ECCV 2016) fits SMPL to 2D joints with a pose prior, a shape prior and a
bending penalty for elbows and knees, in stages of decreasing prior weight, from a torso-based
initialisation. Here the data are 3D keypoints (as in SMPLify-X's 3D variants) and the pose prior is
a Gaussian at the rest pose (no GMM trained on CMU is available offline) [O]. Each body gets its own
L-BFGS (strong Wolfe); the last stage uses the refinement's weights, so both minimise the same energy.
"""

from __future__ import annotations

import torch

from tenfold.core.geometry import kabsch, matrix_to_axis_angle
from tenfold.kama.articulate import hinge_axes, minimise_keypoints, noise_prior_weights
from tenfold.kama.keypoints import KeypointRegressor, check_keypoints, rest_keypoints

__all__ = ["DEFAULT_STAGES", "smplify"]

#: (w_betas, w_pose, w_bend, L-BFGS iterations) per stage: strong priors first, then relaxed [O]
DEFAULT_STAGES: tuple[tuple[float, float, float, int], ...] = (
    (1e-3, 1e-2, 1.0, 30), (1e-4, 1e-3, 1.0, 30), (1e-5, 1e-4, 1.0, 100))


def smplify(model, keypoints: torch.Tensor, confidence: torch.Tensor | None = None,
            stages: tuple[tuple[float, float, float, int], ...] = DEFAULT_STAGES, noise_mm: float = 0.0,
            pose_std: float = 0.5, betas_std: float = 0.5) -> dict[str, torch.Tensor]:
    """Fit (theta, beta, t) to keypoints (B, 26, 3) by staged per-sample L-BFGS from the rest pose, with
    the root rotation and translation initialised by Kabsch on pelvis, hips and torso.
    ``noise_mm`` > 0: no stage's priors drop below the MAP weights of that keypoint noise
    (:func:`noise_prior_weights`), the same information the refinement gets [O].
    Returns rot-free axis-angle ``pose`` (B, 24, 3), ``betas`` (B, NB), ``transl`` (B, 3)."""
    wb, wp = noise_prior_weights(noise_mm, 0.0, 0.0, pose_std, betas_std)
    stages = tuple((max(b, wb), max(p, wp), bend, n) for b, p, bend, n in stages)
    X, c = check_keypoints(keypoints, confidence)
    dt = model.v_template.dtype
    X, c = X.to(dt), c.to(dt)
    B, nb = X.shape[0], model.num_betas
    beta0 = X.new_zeros(B, nb)
    K0 = rest_keypoints(model, beta0)
    ids = [0, 1, 2, 3]
    w = torch.where(c[:, ids].sum(-1, keepdim=True) > 0, c[:, ids], torch.ones_like(c[:, ids]))
    R0, tk, _ = kabsch(K0[:, ids], X[:, ids], w)
    J0 = model.rest_joints(beta0)[:, 0]
    transl = tk + (R0 @ J0[..., None])[..., 0] - J0          # posed pelvis = R0 J0 + tk = J0 + t
    aa = X.new_zeros(B, 24, 3)
    aa[:, 0] = matrix_to_axis_angle(R0)
    hinge = hinge_axes(model.rest_joints(beta0))
    pose, betas, transl = minimise_keypoints(KeypointRegressor(model), aa, beta0, transl, X, c, list(stages), hinge)
    return {"pose": pose, "betas": betas, "transl": transl}
