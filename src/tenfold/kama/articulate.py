"""KAMA's analytic articulation of an SMPL-layout body from 26 3D keypoints (spec 2.3).

The paper (arXiv 2104.13502) says only "a set of straightforward geometric transformations"; the steps
below are the research notes' reconstruction [R/O], not the authors' code:
  1 shape beta from bone lengths (damped Gauss-Newton),      2 root by Kabsch of hips + torso,
  3 spine split evenly over joints 3/6/9, neck swing, collars, 4 limbs by a hinge two-vector align
  (swing only for a straight limb),                           5 ankles and head by Kabsch of their
  landmarks, 6 translation from the pelvis,                    7 optional per-sample L-BFGS refinement.
Missing keypoints (confidence 0) fall back to the prior (identity rotation, beta = 0) only for the
joints they determine. Rotations are global G_j (world) while solving; locals R_j = G_parent^T G_j.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections.abc import Callable

import torch

from tenfold.core.geometry import axis_angle_to_matrix, kabsch, matrix_to_axis_angle, swing_rotation, two_vector_align
from tenfold.core.io import ConfigError, InputError, TenfoldWarning, check_tensor
from tenfold.kama.keypoints import (
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    KeypointRegressor,
    assemble,
    check_keypoints,
    facing_backwards,
    regress_keypoints,
    rest_keypoints,
)

__all__ = ["BONE_PAIRS", "articulate", "fit", "hinge_axes", "landmark_pose_offsets", "minimise_keypoints",
           "noise_prior_weights", "refine", "shape_given_pose", "warn_doubtful", "warn_extreme_shape"]

# keypoint pairs whose distance fixes beta (spec 2.3 step 1): rigid in the model when unobservable joints rest
BONE_PAIRS: list[tuple[int, int]] = [
    (0, 1), (0, 2), (1, 2), (1, 4), (2, 5), (4, 7), (5, 8), (20, 22), (21, 23), (22, 24), (23, 25), (0, 3),
    (7, 13), (7, 9), (7, 11), (8, 14), (8, 10), (8, 12), (13, 9), (14, 10), (13, 11), (14, 12),
    (15, 18), (15, 19), (18, 19), (15, 16), (15, 17),
]
# limbs: (proximal joint, middle joint, distal joint, middle keypoint, distal keypoint, flex direction f)
LIMBS = [(1, 4, 7, 4, 7, (0.0, 0.0, -1.0)), (2, 5, 8, 5, 8, (0.0, 0.0, -1.0)),
         (16, 18, 20, 22, 24, (0.0, 0.0, 1.0)), (17, 19, 21, 23, 25, (0.0, 0.0, 1.0))]
STRAIGHT = 0.15          # |u x s| < 0.15 |u||s|: a straight limb, swing only (spec 2.3 step 4)
NEAR_STRAIGHT = 0.5      # |u x s| < 0.5 |u||s| (a leg bent under 30 deg): hinge axis on the swing's side (ours)
LEG_ROOTS = (1, 2)       # the hips
DUAL_JACOBIAN_ROWS = 340  # refine_lm: Jacobians by dual-number rows up to this many (bodies x parameters: 4 bodies)
FEET = {0: ((9, 11), 13), 1: ((10, 12), 14)}  # leg -> (big toe, small toe), heel keypoints


def _foot(P: torch.Tensor, seen: torch.Tensor, ankle: int, toes: tuple[int, int], heel: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The foot's forward direction in keypoints ``P (B, 26, 3)``: mean of the seen toes minus the heel (the ankle
    where the heel is not seen). Returns (usable (B,), vector (B, 3))."""
    wt = seen[:, list(toes)].to(P.dtype)
    toe = (P[:, list(toes)] * wt[..., None]).sum(1) / wt.sum(1, keepdim=True).clamp_min(1.0)
    back = torch.where(seen[:, heel, None], P[:, heel], P[:, ankle])
    return (wt.sum(1) > 0) & (seen[:, heel] | seen[:, ankle]), toe - back


def hinge_axes(Jr: torch.Tensor) -> torch.Tensor:
    """Rest hinge axes h = normalize(u0 x f) of L/R knee and L/R elbow: Jr (B, 24, 3) -> (B, 4, 3).

    f is where the distal segment moves when flexing (knee: -z; elbows: +z), so flexion > 0 about +h."""
    out = []
    for prox, mid, _d, _km, _kd, f in LIMBS:
        u0 = Jr[:, mid] - Jr[:, prox]
        h = torch.linalg.cross(u0, torch.tensor(f, dtype=Jr.dtype, device=Jr.device).expand_as(u0), dim=-1)
        out.append(h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return torch.stack(out, 1)


def _shape_basis(model, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rest keypoints are linear in beta: K0(beta) = Kt + D beta; returns Kt (26, 3), D (26, 3, NB)."""
    nb = model.num_betas
    dt, dev = model.v_template.dtype, model.v_template.device
    basis = torch.cat([torch.zeros(1, nb, dtype=dt, device=dev), torch.eye(nb, dtype=dt, device=dev)])
    K = rest_keypoints(model, basis)                          # (1 + NB, 26, 3)
    return K[0], (K[1:] - K[:1]).permute(1, 2, 0)


def fit_shape(Kt: torch.Tensor, D: torch.Tensor, X: torch.Tensor, c: torch.Tensor, iters: int = 8,
              damping: float = 1e-4) -> torch.Tensor:
    """Step 1: beta from bone lengths. d_b(beta) = d_b0 + D_b beta, r_b = |d_b| - L_b,
    J_b = (d_b / |d_b|)^T D_b, beta <- beta - (J^T W J + lam I)^-1 (J^T W r + lam beta).
    Kt (26, 3), D (26, 3, NB), X (B, 26, 3), c (B, 26) -> beta (B, NB). lam in metres^2 [O]."""
    B, nb = X.shape[0], D.shape[-1]
    beta = X.new_zeros(B, nb)
    lam = damping * torch.eye(nb, dtype=X.dtype, device=X.device)
    for _ in range(iters):
        Jb, n, L, W = _bone_terms(Kt, D, X, c, beta)
        r = n - L
        JtW = Jb.transpose(1, 2) * W[:, None]
        beta = beta - torch.linalg.solve(JtW @ Jb + lam, (JtW @ r[..., None])[..., 0] + damping * beta)
    return beta


def _bone_terms(Kt: torch.Tensor, D: torch.Tensor, X: torch.Tensor, c: torch.Tensor, beta: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bone-length model at beta: Jacobian J_b (B, P, NB), rest length |d_b| (B, P), observed length
    L_b (B, P) and pair weight min(c_i, c_j) (B, P)."""
    i, j = torch.tensor(BONE_PAIRS, device=X.device).T
    d = (Kt[j] - Kt[i]) + torch.einsum("pcn,bn->bpc", D[j] - D[i], beta)   # (B, P, 3)
    n = d.norm(dim=-1).clamp_min(1e-9)
    Jb = torch.einsum("bpc,pcn->bpn", d / n[..., None], D[j] - D[i])     # (B, P, NB)
    return Jb, n, (X[:, j] - X[:, i]).norm(dim=-1), torch.minimum(c[:, i], c[:, j])


def _safe_kabsch(A: torch.Tensor, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rotation R (B, 3, 3) with X ~ R A + t (weighted); rows without weight get a dummy (caller masks)."""
    w = torch.where(w.sum(-1, keepdim=True) > 0, w, torch.ones_like(w))
    return kabsch(A, X, w)[0]


def _flexion(u0: torch.Tensor, s0: torch.Tensor, h: torch.Tensor, u: torch.Tensor, s: torch.Tensor,
             back: torch.Tensor) -> torch.Tensor:
    """Hinge angle theta (B,) about the rest axis h (unit, _|_ u0) with u^.s^ = u0^.R_h(theta) s0^ (Rodrigues:
    a cos(theta) - b sin(theta), a = u0^.s0^, b = s0^.(h x u0^)), the bend towards the flex side; ``back`` (B,) the
    other root (a bend backwards). An angle the rest segments cannot make (a kinked limb stretched straight) is
    clamped to the nearest one."""
    d = (u * s).sum(-1) / (u.norm(dim=-1) * s.norm(dim=-1)).clamp_min(1e-12)
    return _flexion_of_cosine(u0, s0, h, d, back)


def _flexion_of_cosine(u0: torch.Tensor, s0: torch.Tensor, h: torch.Tensor, d: torch.Tensor,
                       back: torch.Tensor) -> torch.Tensor:
    """:func:`_flexion` given the cosine ``d`` (B,) of the angle between the two segments instead of them."""
    un, sn = u0 / u0.norm(dim=-1, keepdim=True), s0 / s0.norm(dim=-1, keepdim=True)
    a = (un * sn).sum(-1)
    b = (sn * torch.linalg.cross(h, un, dim=-1)).sum(-1)
    r = torch.sqrt(a * a + b * b).clamp_min(1e-12)
    delta = torch.acos((d / r).clamp(-1.0, 1.0))
    psi = torch.atan2(b, a)  # the rest bend in the flexion plane
    return torch.where(back, -delta, delta) - psi


def _sel(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample choice: mask (B,) -> a where True else b (matrices or vectors)."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _split(R: torch.Tensor, parts: int) -> torch.Tensor:
    """R^(1/parts) about the same axis (equal split of the axis-angle)."""
    return axis_angle_to_matrix(matrix_to_axis_angle(R) / parts)


def shape_given_pose(kpfn: KeypointRegressor, aa: torch.Tensor, X: torch.Tensor, c: torch.Tensor,
                     damping: float = 1e-4, bones: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                     w_bones: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """[O] With the rotations fixed, every keypoint is affine in (beta, t): kp = k0 + M beta + t. Solve the
    confidence-weighted least squares sum_k c_k |k0_k + M_k beta + t - x_k|^2 + lam |beta|^2 in closed
    form. This reaches shape directions that bone lengths cannot (torso length, shoulder width, girth
    of the neck/shoulder offsets). aa (B, 24, 3), X (B, 26, 3), c (B, 26) -> beta (B, NB), t (B, 3).
    ``bones`` = (Kt, D, beta0) of :func:`fit_shape` adds its bone-length residuals, linearised at beta0,
    with weight ``w_bones``: bone lengths do not depend on the (partly unobservable) pose, so they keep
    priority and the pose-dependent rows only fill the directions they leave free [O]."""
    B, nb = aa.shape[0], kpfn.S.shape[-1]
    dt, dev = X.dtype, X.device
    basis = torch.cat([torch.zeros(1, nb, dtype=dt, device=dev), torch.eye(nb, dtype=dt, device=dev)])
    kp = kpfn(aa.repeat_interleave(nb + 1, 0), basis.repeat(B, 1), X.new_zeros(B * (nb + 1), 3))
    kp = kp.reshape(B, nb + 1, NUM_KEYPOINTS, 3)
    k0, M = kp[:, 0], (kp[:, 1:] - kp[:, :1]).permute(0, 2, 3, 1)          # (B, 26, 3), (B, 26, 3, NB)
    eye3 = torch.eye(3, dtype=dt, device=dev).expand(B, NUM_KEYPOINTS, 3, 3)
    A = torch.cat([M, eye3], -1).reshape(B, NUM_KEYPOINTS * 3, nb + 3)      # unknowns [beta, t]
    w = c.repeat_interleave(3, 1)                                           # (B, 78)
    r = (X - k0).reshape(B, -1)
    if bones is not None:                                                   # r_b ~ J_b beta - (L_b - |d_b| + J_b beta0)
        Kt, D, beta0 = bones
        Jb, n, L, Wb = _bone_terms(Kt, D, X, c, beta0)
        A = torch.cat([A, torch.cat([Jb, Jb.new_zeros(B, Jb.shape[1], 3)], -1)], 1)
        w = torch.cat([w, w_bones * Wb], 1)
        r = torch.cat([r, L - n + (Jb @ beta0[..., None])[..., 0]], 1)
    AtW = A.transpose(1, 2) * w[:, None]
    reg = torch.zeros(nb + 3, dtype=dt, device=dev)
    reg[:nb] = damping
    sol = torch.linalg.solve(AtW @ A + torch.diag(reg), (AtW @ r[..., None])[..., 0])
    return sol[:, :nb], sol[:, nb:]


def _check_betas(model, betas: torch.Tensor | None, batch: int) -> None:
    """Given betas must be (B, NB) and finite (a wrong shape failed deep inside with an einsum or 'Q must have
    shape' error, NaN as 'P holds NaN/Inf')."""
    if betas is not None:
        check_tensor(betas, "betas", (batch, model.num_betas))


def articulate(model, keypoints: torch.Tensor, confidence: torch.Tensor | None = None,
               betas: torch.Tensor | None = None, shape_iters: int = 8, shape_damping: float = 1e-4,
               shape_rounds: int = 2, twist_ref: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Analytic fit: keypoints (B, 26, 3) metres, confidence (B, 26) in [0, 1] (0 = missing) ->
    rot (B, 24, 3, 3) local rotations, betas (B, NB), transl (B, 3), degenerate (B, 4) straight-limb
    flags (L/R knee, L/R elbow), hinge_world (B, 4, 3) the limbs' hinge axes in the world frame.
    ``betas`` given: skip the shape steps and use them.
    ``shape_rounds`` [O]: after the first articulation, re-solve beta by :func:`shape_given_pose` and
    articulate again, this many times (0 = the spec's bone-length shape only).
    ``twist_ref`` (B, 4, 3): world hinge axes to keep for straight limbs (spec step 4, "in video keep the
    previous twist": the previous frame's ``hinge_world``); without it a straight limb takes the swing only."""
    X, c = check_keypoints(keypoints, confidence)
    _check_betas(model, betas, X.shape[0])
    if twist_ref is not None:  # a (1, 4, 3) broadcast over the batch before session 25; now one line, not a reshape
        check_tensor(twist_ref, "twist_ref", (X.shape[0], 4, 3))
    out = _articulate_once(model, keypoints, confidence, betas, shape_iters, shape_damping, twist_ref=twist_ref)
    if shape_rounds <= 0:
        return out
    dt = model.v_template.dtype
    X, c = X.to(dt), c.to(dt)
    kpfn = KeypointRegressor(model)
    Kt, D = _shape_basis(model, X.shape[0])
    for _ in range(shape_rounds):
        beta = out["betas"]
        if betas is None:
            beta, _t = shape_given_pose(kpfn, matrix_to_axis_angle(out["rot"]), X, c, shape_damping,
                                        bones=(Kt, D, out["betas"]))
        out = _articulate_once(model, X, c, beta, shape_iters, shape_damping,
                               lm_offset=landmark_pose_offsets(kpfn, out["rot"]), twist_ref=twist_ref)
    return out


def landmark_pose_offsets(kpfn: KeypointRegressor, rot: torch.Tensor) -> torch.Tensor:
    """[O] Pose blend-shape offsets of the landmark keypoints in the rest frame, P(theta) posedirs, from the
    rotations of a previous articulation: rot (B, 24, 3, 3) -> (B, 26, 3) (zero at the 15 joint keypoints,
    which pose blend shapes do not move). The next articulation aligns these posed-rest landmarks."""
    B = rot.shape[0]
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    lm = ((rot[:, 1:] - eye).reshape(B, -1) @ kpfn.Pd).reshape(B, -1, 3)    # (B, 11, 3)
    return assemble(lm.new_zeros(B, 24, 3), lm)


def _articulate_once(model, keypoints: torch.Tensor, confidence: torch.Tensor | None,
                     betas: torch.Tensor | None, shape_iters: int, shape_damping: float,
                     lm_offset: torch.Tensor | None = None, twist_ref: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """Steps 1-6 once (step 1 skipped when ``betas`` is given); ``lm_offset`` (B, 26, 3) is added to the
    rest keypoints (pose blend shapes of the landmarks, :func:`landmark_pose_offsets`)."""
    X, c = check_keypoints(keypoints, confidence)
    dt = model.v_template.dtype
    X, c = X.to(dt), c.to(dt)
    B = X.shape[0]
    seen = c > 0                                              # (B, 26)
    Kt, D = _shape_basis(model, B)
    beta = fit_shape(Kt, D, X, c, shape_iters, shape_damping) if betas is None else betas.to(dt)
    K0 = Kt + torch.einsum("kcn,bn->bkc", D, beta)            # (B, 26, 3) rest keypoints
    if lm_offset is not None:
        K0 = K0 + lm_offset
    Jr = model.rest_joints(beta)                              # (B, 24, 3) rest joints
    h = hinge_axes(Jr)                                        # (B, 4, 3)
    eye = torch.eye(3, dtype=dt, device=X.device).expand(B, 3, 3)
    G: list[torch.Tensor | None] = [None] * 24                # global rotations
    p: list[torch.Tensor | None] = [None] * 24                # posed joint positions
    par = model.parents

    def place(j: int) -> None:                                # p_j = p_parent + G_parent (J_j - J_parent)
        p[j] = p[par[j]] + (G[par[j]] @ (Jr[:, j] - Jr[:, par[j]])[..., None])[..., 0]

    def rest_child(j: int) -> None:                           # joint keeps the parent's rotation
        G[j] = G[par[j]]
        place(j)

    # --- step 2: root by Kabsch of {pelvis, L hip, R hip, torso}; step 6: translation -------------------
    ids = [0, 1, 2, 3]
    w = c[:, ids]
    R0 = _safe_kabsch(K0[:, ids], X[:, ids], w)
    # the spec's rule (torso + one hip), or pelvis + both hips (session 23): the pelvis sits ~8 cm above the hip
    # line, so the three fix the root too; without the torso the whole-body fallback below read 17.9 mm MPJPE
    # on noise-free bodies against 6.7 from these three (level at 25 mm noise; tools/kama_hidden_keypoints.py)
    root_ok = (seen[:, 3] & (seen[:, 1] | seen[:, 2]) & ((seen[:, ids]).sum(-1) >= 3)) | seen[:, :3].all(-1)
    # without torso + one hip, the whole seen body as one rigid piece gives a rough root rotation, the
    # refinement the rest (it was identity; test_a_body_without_its_root_points_is_still_placed); only where the
    # seen points span a plane (two points, or a line of them, leave the turn about that line free, and Kabsch
    # would pick one at random: identity stays then)
    no_root = ~seen[:, ids].any(-1)
    if bool(root_ok.all()):  # the common case pays nothing for the fallback
        G[0] = R0
    else:
        wc_all = c / c.sum(-1, keepdim=True).clamp_min(1e-12)
        centred = (X - (wc_all[..., None] * X).sum(1, keepdim=True)) * wc_all[..., None].sqrt()
        sv = torch.linalg.svdvals(centred)  # (B, 3)
        spread = (seen.sum(-1) >= 3) & (sv[:, 1] > 1e-2 * sv[:, 0])
        G[0] = _sel(root_ok, R0, _sel(spread, _safe_kabsch(K0, X, c), eye))
    # the pelvis used to land at the camera origin, metres off, without a word, when no root point was seen
    # posed pelvis = J0 + t; without a pelvis keypoint, t from the weighted centroids (of every seen point when no
    # root point is seen)
    wc = torch.where(no_root[:, None], c, torch.zeros_like(c).index_copy(1, torch.tensor(ids, device=c.device), w))
    wn = wc / wc.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_x = (wn[..., None] * X).sum(1)
    mu_k = (wn[..., None] * (K0 - Jr[:, :1])).sum(1)
    p0_from_centroid = mu_x - (G[0] @ mu_k[..., None])[..., 0]
    p[0] = _sel(seen[:, 0], X[:, 0], p0_from_centroid)
    transl = p[0] - Jr[:, 0]
    place(3)

    # --- step 3: spine. Kabsch of {neck, L shoulder, R shoulder}, split over 3/6/9 --------------------
    # The three points move rigidly with G_9 (collars at rest), so their Kabsch (translation free) is G_9.
    # With only two of them seen, the torso joint is added as an anchor to fix the roll.
    sp = [6, 20, 21]
    n_sp = seen[:, sp].sum(-1)
    A = torch.cat([torch.zeros_like(Jr[:, :1]), K0[:, sp] - Jr[:, 3:4]], 1)       # (B, 4, 3) rest, torso at 0
    T = torch.cat([torch.zeros_like(X[:, :1]), X[:, sp] - p[3][:, None]], 1)      # targets about the torso
    wsp = torch.cat([(n_sp < 3).to(dt)[:, None], c[:, sp]], 1)
    Rw = _safe_kabsch(A, T, wsp)
    only_neck = (n_sp == 1) & seen[:, 6]
    neck_dir = (G[0] @ (Jr[:, 12] - Jr[:, 3])[..., None])[..., 0]
    Rw = _sel(only_neck, swing_rotation(neck_dir, T[:, 1]) @ G[0], Rw)     # only the neck seen: swing
    Rrel = G[0].transpose(1, 2) @ Rw                        # spine rotation relative to the root
    Rrel = _sel((n_sp >= 2) | only_neck, Rrel, eye)
    Rs = _split(Rrel, 3)
    for j in (3, 6, 9):
        G[j] = G[par[j]] @ Rs
        if j != 3:
            place(j)
    # neck swing: joint 9 turns so that the neck lands on its keypoint
    a = (G[9] @ (Jr[:, 12] - Jr[:, 9])[..., None])[..., 0]
    G[9] = _sel(seen[:, 6], swing_rotation(a, X[:, 6] - p[9]) @ G[9], G[9])
    # collars: the swing that puts each shoulder on its keypoint
    for col, sh, k in ((13, 16, 20), (14, 17, 21)):
        place(col)
        a = (G[9] @ (Jr[:, sh] - Jr[:, col])[..., None])[..., 0]
        G[col] = _sel(seen[:, k], swing_rotation(a, X[:, k] - p[col]) @ G[9], G[9])
        place(sh)
    place(12)

    # --- step 4: limbs by hinge two-vector alignment (swing only when straight) -------------------------
    # The four limbs are independent once the root and the collars are placed, so they run as one batch of
    # NL * B rows, limb-major (row li * B + b); a loop over the limbs made a single body's call mostly op overhead.
    place(1)
    place(2)
    NL = len(LIMBS)
    prox_j, mid_j, dist_j, km_k, kd_k = (list(v) for v in zip(*[limb[:5] for limb in LIMBS]))

    def rows(t: torch.Tensor, idx: list[int]) -> torch.Tensor:  # (B, N, ...) at idx -> (NL * B, ...) limb-major
        return t[:, idx].transpose(0, 1).reshape(NL * B, *t.shape[2:])

    eye_l = torch.eye(3, dtype=dt, device=X.device).expand(NL * B, 3, 3)
    Gp = torch.stack([G[par[j]] for j in prox_j]).reshape(NL * B, 3, 3)   # the parents' world rotations
    p_prox = torch.stack([p[j] for j in prox_j]).reshape(NL * B, 3)
    u0 = rows(Jr, mid_j) - rows(Jr, prox_j)
    s0 = rows(Jr, dist_j) - rows(Jr, mid_j)
    hl = rows(h, list(range(NL)))
    a1 = (Gp @ u0[..., None])[..., 0]
    a2 = (Gp @ hl[..., None])[..., 0]
    Xm, Xd = rows(X, km_k), rows(X, kd_k)
    seen_m, seen_d = rows(seen, km_k), rows(seen, kd_k)
    u = Xm - p_prox
    s = Xd - Xm
    n = torch.linalg.cross(u, s, dim=-1)
    us = u.norm(dim=-1) * s.norm(dim=-1)
    # <=: a distal point on the middle one (s = 0) is a straight limb too (0 < 0 failed, and the rank-1
    # "hinge" frame returned matrices that were not rotations)
    # a limb folded back on itself (u . s < 0, a 170 deg elbow) is not straight: the hinge plane is still
    # defined, and swing only lost the whole upper-arm twist there; exactly antiparallel stays degenerate
    straight = (n.norm(dim=-1) <= STRAIGHT * us) & (((u * s).sum(-1) >= 0) | (n.norm(dim=-1) <= 1e-6 * us))
    swing = swing_rotation(a1, u)
    # a nearly straight leg bent slightly backwards (noise, or hyperextension) flips u x s, and the hinge
    # solution then twisted the whole leg by 180 deg at the hip: below NEAR_STRAIGHT keep the hinge axis on
    # the side of the swing-only solution's (the smaller twist: a hip turns well under 90 deg about the
    # thigh). Arms keep the measured sign: a shoulder can turn past 90 deg, where the rule is wrong (at 10 mm
    # noise it flipped 2 % of right shoulders that were right; benchmarks/kama_near_straight.py)
    a2s = (swing @ a2[..., None])[..., 0]
    near = (n.norm(dim=-1) < NEAR_STRAIGHT * us) & ((u * s).sum(-1) > 0)
    leg = torch.tensor([j in LEG_ROOTS for j in prox_j], device=X.device).repeat_interleave(B)  # (NL * B,)
    feet = [li for li, j in enumerate(prox_j) if j in LEG_ROOTS and li in FEET]
    if feet and bool(near.view(NL, B)[feet].any()):
        # the foot, where seen, is the better reference: s x (heel -> toes) is about the hinge axis whatever
        # the hip does (the swing-only twist can sit > 90 deg off a flexed, abducted thigh's). Only a2s's near
        # rows are read (by `back`), so a leg without one may take the foot's reference too
        parts = list(a2s.view(NL, B, 3).unbind(0))
        for li in feet:
            r = slice(li * B, (li + 1) * B)
            toes, heel = FEET[li]
            f_ok, f = _foot(X, seen, kd_k[li], toes, heel)
            _, f0 = _foot(K0, seen, kd_k[li], toes, heel)
            sign = torch.sign((torch.linalg.cross(s0[r], f0, dim=-1) * hl[r]).sum(-1, keepdim=True))
            foot_ref = sign * torch.linalg.cross(s[r], f, dim=-1)
            parts[li] = torch.where((f_ok & (sign[:, 0] != 0))[..., None], foot_ref, parts[li])
        a2s = torch.cat(parts, 0)
    # near straight means a small bend, u . s > 0: sin(angle) < NEAR_STRAIGHT also holds for a knee folded past
    # 150 deg (a deep squat), where the hinge solution is exact and the rule flipped clean hips by 180 deg
    back = near & ((n * a2s).sum(-1) < 0) & leg
    # flexion theta about the rest hinge axis h from the angle between the segments: u^.s^ = u0^.R_h(theta)s0^.
    # A rest distal segment out of the flexion plane (a real SMPL forearm or shin is kinked a few degrees) made
    # the old map h -> u x s twist the shoulder at zero keypoint residual (test_a_kinked_rest_forearm_...); with
    # R_h(theta) s0 the plane of (u0, R_h s0) goes onto that of (u, s), exact for any rest kink (equal to the old
    # map without one)
    theta = _flexion(u0, s0, hl, u, s, back)
    Rflex = axis_angle_to_matrix(hl * theta[:, None])
    hinge = two_vector_align(a1, (Gp @ Rflex @ s0[..., None])[..., 0], u, s)
    straight_rot = swing
    if twist_ref is not None:  # keep the reference hinge axis (the previous frame's), where it is not along u
        ref = rows(twist_ref.to(dt), list(range(NL)))
        ref_ok = torch.linalg.cross(ref, u, dim=-1).norm(dim=-1) > 0.1 * ref.norm(dim=-1) * u.norm(dim=-1)
        straight_rot = _sel(ref_ok, two_vector_align(a1, a2, u, ref), swing)
    Rm = _sel(straight, straight_rot, hinge)
    # only the distal point seen (session 23; the limb used to swing towards it straight, leaving the distal
    # point 5-12 cm off on average and up to 28 cm): two-bone IK. The bone lengths and the distance to the
    # distal point fix the angle between the segments (law of cosines), hence the flexion about the rest
    # hinge axis (forward, clamped to
    # what the rest segments can make); the bent rest limb then swings onto the distal point, so the swivel
    # about the proximal-distal line is the least rotation from the parent's frame (the hidden middle joint
    # is a guess on that circle; the distal point is exact where it is within reach)
    t_d = Xd - p_prox
    L1, L2 = u0.norm(dim=-1), s0.norm(dim=-1)
    cos_us = (t_d.pow(2).sum(-1) - L1 * L1 - L2 * L2) / (2 * L1 * L2).clamp_min(1e-12)
    theta_ik = _flexion_of_cosine(u0, s0, hl, cos_us, torch.zeros_like(cos_us, dtype=torch.bool))
    Rflex_ik = axis_angle_to_matrix(hl * theta_ik[:, None])
    chain = (Gp @ (u0 + (Rflex_ik @ s0[..., None])[..., 0])[..., None])[..., 0]
    whole = swing_rotation(chain, t_d)
    both = seen_m & seen_d
    only_distal = ~seen_m & seen_d
    Rm = _sel(both, Rm, _sel(seen_m, swing, _sel(seen_d, whole, eye_l)))
    degenerate = (straight & both).view(NL, B).T.contiguous()              # (B, 4)
    G_prox = Rm @ Gp
    p_mid = p_prox + (G_prox @ u0[..., None])[..., 0]                      # place(mid): its parent is prox
    # the middle joint flexes by R_h(theta) where the hinge solution was taken (then the swing is a no-op on
    # consistent keypoints, and takes up noise); a straight or partly seen limb keeps the swing alone
    Gm = G_prox @ _sel(both & ~straight, Rflex, eye_l)
    a = (Gm @ s0[..., None])[..., 0]
    G_mid = _sel(both, swing_rotation(a, Xd - p_mid) @ Gm, _sel(only_distal, G_prox @ Rflex_ik, G_prox))
    p_dist = p_mid + (G_mid @ s0[..., None])[..., 0]                       # place(dist): its parent is mid
    for li in range(NL):
        r = slice(li * B, (li + 1) * B)
        G[prox_j[li]], G[mid_j[li]], p[mid_j[li]], p[dist_j[li]] = G_prox[r], G_mid[r], p_mid[r], p_dist[r]

    # --- step 5: ankles by Kabsch of {ankle, heel, big toe, small toe}; head of {nose, eyes, ears} -------
    # both ankles as one batch of 2 B rows (ankle-major), as the limbs above
    ankles, knees, pts = (7, 8), (4, 5), ([13, 9, 11], [14, 10, 12])
    A = torch.cat([torch.cat([torch.zeros_like(Jr[:, :1]), K0[:, q] - Jr[:, a:a + 1]], 1) for a, q in zip(ankles, pts)])
    T = torch.cat([torch.cat([torch.zeros_like(X[:, :1]), X[:, q] - p[a][:, None]], 1) for a, q in zip(ankles, pts)])
    wa = torch.cat([torch.cat([torch.ones_like(c[:, :1]), c[:, q]], 1) for q in pts])
    seen_a = torch.cat([seen[:, q] for q in pts])                           # (2 B, 3)
    n_a = seen_a.sum(-1)
    Rk = _safe_kabsch(A, T, wa)
    # one landmark seen: swing towards it (the big toe in mocap); none: the ankle rests
    first = seen_a.float().argmax(-1)
    a_one = torch.gather(A[:, 1:], 1, first[:, None, None].expand(-1, 1, 3))[:, 0]
    t_one = torch.gather(T[:, 1:], 1, first[:, None, None].expand(-1, 1, 3))[:, 0]
    Gk = torch.cat([G[k] for k in knees])
    Rone = swing_rotation((Gk @ a_one[..., None])[..., 0], t_one) @ Gk
    G_ank = _sel(n_a >= 2, Rk, _sel(n_a == 1, Rone, Gk))
    G[ankles[0]], G[ankles[1]] = G_ank[:B], G_ank[B:]
    face = [15, 16, 17, 18, 19]
    # face points move rigidly with G_15: X_f ~ p_15 + G_15 (K0_f - J_15), so Kabsch gives G_15 and p_15
    Rh, th, _ = kabsch(K0[:, face] - Jr[:, 15:16], X[:, face],
                       torch.where(seen[:, face].any(-1, keepdim=True), c[:, face], torch.ones_like(c[:, face])))
    head_ok = seen[:, face].sum(-1) >= 3
    Rrel = _sel(head_ok, G[9].transpose(1, 2) @ Rh, eye)
    Rn = _split(Rrel, 2)
    G[12] = G[9] @ Rn
    # [O] the split fixes neither where the head sits nor G_15: swing joint 12 so that p_15 lands on the
    # Kabsch head position th, then give joint 15 the rest of the Kabsch rotation (exact when split evenly)
    a = (G[12] @ (Jr[:, 15] - Jr[:, 12])[..., None])[..., 0]
    G[12] = _sel(head_ok, swing_rotation(a, th - p[12]) @ G[12], G[12])
    G[15] = _sel(head_ok, Rh, G[12] @ Rn)
    for j in (10, 11, 20, 21, 22, 23):                        # unobservable from 26 points: identity
        rest_child(j)

    Gs = torch.stack(G, 1)                                    # (B, 24, 3, 3)
    Gpar = torch.cat([eye[:, None], Gs[:, par[1:]]], 1)
    rot = Gpar.transpose(-1, -2) @ Gs                         # local R_j = G_parent^T G_j
    hinge_world = torch.stack([(G[prox] @ h[:, li, :, None])[..., 0] for li, (prox, *_r) in enumerate(LIMBS)], 1)
    return {"rot": rot, "betas": beta, "transl": transl, "degenerate": degenerate, "hinge_world": hinge_world}


def refine(model, rot: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor, keypoints: torch.Tensor,
           confidence: torch.Tensor | None = None, iters: int = 20, w_betas: float = 1e-5,
           w_pose: float = 0.0, method: str = "lbfgs", fix_betas: bool = False,
           w_anchor: float = 1e-4) -> dict[str, torch.Tensor]:
    """Step 7 [R]: per-sample L-BFGS (strong Wolfe) on sum_k c_k |kp_k - x_k|^2 + w_betas |beta|^2
    + w_pose |theta_body|^2 + w_anchor |theta_body - theta_analytic|^2, started from the analytic answer. One
    optimiser per sample: a line search shared across a batch lets the worst sample set every step (spec 2.3
    step 7). ``method="lm"``: :func:`refine_lm` instead (``iters`` LM steps). w_betas: the spec recalls 1e-3 [R];
    in metres that prior moves beta by ~0.1 and the keypoints by ~3 mm, so we use 1e-5 [O]. ``fix_betas``: the
    shape stays as given (a sequence's shared shape), only pose and translation move.
    ``w_anchor`` [O] holds the directions the keypoints do not see (a straight limb's twist) at the analytic
    answer; until session 21 that was a zero-mean floor w_pose = 1e-4, which pulled every joint towards the rest
    pose: on clean keypoints of exactly fitted bodies it turned elbows and shoulders 10.7 and 14.3 degrees off
    (medians; `tools/session21_review_figures.py`)."""
    X, c = check_keypoints(keypoints, confidence)
    if not (math.isfinite(w_anchor) and w_anchor >= 0):  # NaN rejected every step, a negative one was complex
        raise ConfigError(f"w_anchor must be finite and >= 0, got {w_anchor}")
    dt = model.v_template.dtype
    args = (KeypointRegressor(model), matrix_to_axis_angle(rot.to(dt)), betas.to(dt), transl.to(dt), X.to(dt),
            c.to(dt))
    if method == "lm":
        aa = refine_lm(*args, iters=iters, w_betas=w_betas, w_pose=w_pose, fix_betas=fix_betas, w_anchor=w_anchor)
    elif method == "lbfgs":
        aa = minimise_keypoints(*args, [(w_betas, w_pose, 0.0, iters)], fix_betas=fix_betas, w_anchor=w_anchor)
    else:
        raise ConfigError(f"refinement method must be 'lm' or 'lbfgs', got {method!r}")
    return {"rot": axis_angle_to_matrix(aa[0]), "betas": aa[1], "transl": aa[2]}


def refine_lm(kpfn: KeypointRegressor, aa0: torch.Tensor, betas0: torch.Tensor, transl0: torch.Tensor,
              X: torch.Tensor, c: torch.Tensor, iters: int = 5, w_betas: float = 1e-5,
              w_pose: float = 0.0, fix_betas: bool = False,
              w_anchor: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[O] Levenberg-Marquardt on the same energy as :func:`refine`, every sample with its own damping and
    its own accept/reject (no shared step); residuals and Jacobian of :func:`lm_terms`; step
    dx = -(J^T J + mu diag(J^T J))^-1 J^T r. Keypoint fitting is least squares, so a few steps suffice."""
    B, nb = betas0.shape
    x = torch.cat([aa0.reshape(B, -1), betas0, transl0], 1)
    a0 = aa0.reshape(B, -1)[:, 3:72].clone()  # the analytic body pose, the anchor
    res, jac = lm_terms(kpfn, X, c, a0, w_betas, w_pose, w_anchor)
    mu = torch.full((B,), 1e-3, dtype=x.dtype, device=x.device)
    r = res(x)
    cost = (r * r).sum(-1)
    for _ in range(iters):
        Jm = jac(x)                                                  # (B, R, P)
        if fix_betas:  # no column for beta: its step solves to exactly 0
            Jm[:, :, 72:72 + nb] = 0
        JtJ = Jm.transpose(1, 2) @ Jm
        g = (Jm.transpose(1, 2) @ r[..., None])[..., 0]
        D = torch.diagonal(JtJ, dim1=1, dim2=2).clamp_min(1e-9)
        dx = -torch.linalg.solve(JtJ + (mu[:, None] * D).diag_embed(), g)
        x_new = x + dx
        r_new = res(x_new)
        cost_new = (r_new * r_new).sum(-1)
        ok = cost_new < cost
        x = torch.where(ok[:, None], x_new, x)
        r = torch.where(ok[:, None], r_new, r)
        cost = torch.where(ok, cost_new, cost)
        mu = torch.where(ok, mu / 3, mu * 4)
    return x[:, :72].reshape(B, 24, 3), x[:, 72:72 + nb], x[:, 72 + nb:]


def lm_terms(kpfn: KeypointRegressor, X: torch.Tensor, c: torch.Tensor, a0: torch.Tensor, w_betas: float,
             w_pose: float, w_anchor: float) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                      Callable[[torch.Tensor], torch.Tensor]]:
    """:func:`refine_lm`'s residuals r(x) (B, R) of B bodies x = [pose (72), beta (NB), transl (3)] (B, P),
    r = [sqrt(c)(kp(x) - X), sqrt(w_b) beta, sqrt(w_p) theta_body, sqrt(w_anchor)(theta_body - a0)], and their
    Jacobian J(x) (B, R, P): sqrt(c) times the keypoints' Jacobian by forward-mode autodiff over a constant block
    for the priors, which are linear in x. Forward mode: for a few bodies dual numbers, each body's P tangent
    directions as P rows of one batch (:func:`_jacobian`); for more, torch.func's jacfwd vmapped over the bodies,
    which computes each body's primal once."""
    B = X.shape[0]
    nb = kpfn.S.shape[-1]
    P = 72 + nb + 3
    sc, sb, sp, sa = c.clamp_min(0).sqrt(), w_betas ** 0.5, w_pose ** 0.5, w_anchor ** 0.5

    def keypoints(x: torch.Tensor) -> torch.Tensor:
        """The 26 fitted keypoints, flattened: x (N, P) -> (N, 78), the one non-linear part of the residuals."""
        return kpfn(x[:, :72].reshape(-1, 24, 3), x[:, 72:72 + nb], x[:, 72 + nb:]).flatten(1)

    def res(x: torch.Tensor) -> torch.Tensor:
        kp = keypoints(x).reshape(x.shape[0], -1, 3)
        body = x[:, 3:72]
        return torch.cat([(sc[..., None] * (kp - X)).flatten(1), sb * x[:, 72:72 + nb], sp * body, sa * (body - a0)], 1)

    eye = functools.partial(torch.eye, dtype=X.dtype, device=X.device)
    lin = X.new_zeros(nb + 2 * 69, P)                                # d(prior rows) / dx
    lin[:nb, 72:72 + nb] = sb * eye(nb)
    lin[nb:nb + 69, 3:72] = sp * eye(69)
    lin[nb + 69:, 3:72] = sa * eye(69)
    sc_rows = sc.repeat_interleave(3, 1)[..., None]                  # (B, 78, 1)
    # which autodiff: torch.func's per-op wrapper overhead rules a few bodies, the P-fold primal of the dual-number
    # rows rules many; they cross near 4 bodies (tools/kama_call_overhead.py times both paths at 1-8 and 200 bodies
    # per call; the kama README quotes it)
    if B * P <= DUAL_JACOBIAN_ROWS:
        jac_kp = functools.partial(_jacobian, keypoints)
    else:
        from torch.func import jacfwd, vmap
        jac_kp = vmap(jacfwd(lambda xi: keypoints(xi[None])[0]))

    def jac(x: torch.Tensor) -> torch.Tensor:
        if "torch._decomp.decompositions_for_jvp" in sys.modules:
            Jk = jac_kp(x)                                           # (B, 78, P)
        else:  # a process's first forward-AD call loads torch's jvp decompositions by torch.jit.script, which warns
            with warnings.catch_warnings():  # (deprecated; unsupported from Python 3.14) 18 times: not the user's
                warnings.filterwarnings("ignore", r".*torch\.jit\.script", FutureWarning)
                Jk = jac_kp(x)
        return torch.cat([sc_rows * Jk, lin.expand(x.shape[0], -1, -1)], 1)

    return res, jac


def _jacobian(fn: Callable[..., torch.Tensor], x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
    """J (B, R, P) of a row-wise function fn(x (B, P), *args (B, ...)) -> (B, R), by forward-mode autodiff: each
    sample's P tangent directions run as P rows of one batch of dual numbers. (torch.func's vmap(jacfwd(...)) gives
    the same J; for one body its per-op wrapper overhead made it the slower of the two, tools/kama_call_overhead.py.)"""
    import torch.autograd.forward_ad as fwAD

    if torch.is_inference_mode_enabled():  # forward AD is off there (the tangent came back None): leave it, on copies
        with torch.inference_mode(False):
            return _jacobian(fn, x.clone(), *(a.clone() for a in args))
    B, P = x.shape
    eye = torch.eye(P, dtype=x.dtype, device=x.device)
    with fwAD.dual_level():
        xd = fwAD.make_dual(x.repeat_interleave(P, 0), eye.repeat(B, 1))
        r = fn(xd, *(a.repeat_interleave(P, 0) for a in args))
        J = fwAD.unpack_dual(r).tangent                              # (B P, R): row b P + p = dr_b / dx_p
    return J.reshape(B, P, -1).transpose(1, 2)


def _closure(opt: torch.optim.Optimizer, kpfn: KeypointRegressor, aa: torch.Tensor, b: torch.Tensor,
             t: torch.Tensor, X: torch.Tensor, c: torch.Tensor, hinge: torch.Tensor | None, w_b: float, w_p: float,
             w_bend: float, anchor: torch.Tensor | None = None, w_anchor: float = 0.0):
    """The L-BFGS closure of one sample and stage (energy of :func:`minimise_keypoints`)."""
    def closure() -> torch.Tensor:
        opt.zero_grad()
        kp = kpfn(aa, b, t)
        loss = (c[..., None] * (kp - X) ** 2).sum() + w_b * (b ** 2).sum() + w_p * (aa[:, 1:] ** 2).sum()
        if w_anchor > 0 and anchor is not None:
            loss = loss + w_anchor * ((aa[:, 1:] - anchor) ** 2).sum()
        if w_bend > 0 and hinge is not None:
            flex = (aa[:, [4, 5, 18, 19]] * hinge).sum(-1)          # flexion about each hinge axis
            loss = loss + w_bend * torch.relu(-flex).square().sum()
        loss.backward()
        return loss
    return closure


def minimise_keypoints(kpfn: KeypointRegressor, aa0: torch.Tensor, betas0: torch.Tensor, transl0: torch.Tensor,
                       X: torch.Tensor, c: torch.Tensor, stages: list[tuple[float, float, float, int]],
                       hinge: torch.Tensor | None = None, fix_betas: bool = False, w_anchor: float = 0.0
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample L-BFGS over (theta, beta, t) through ``stages`` of (w_betas, w_pose, w_bend, iterations):
    E = sum_k c_k |kp_k - x_k|^2 + w_betas |beta|^2 + w_pose |theta_body|^2
        + w_bend sum_{knees, elbows} relu(-theta . h)^2    (bending the wrong way; ``hinge`` (B, 4, 3))
        + w_anchor |theta_body - theta0_body|^2             (the start's body pose; the refinement's anchor).
    Shared by the refinement (one stage) and the SMPLify-style baseline (several stages, no anchor)."""
    outs: list[list[torch.Tensor]] = [[], [], []]
    for i in range(X.shape[0]):
        aa = aa0[i:i + 1].clone().requires_grad_(True)
        b = betas0[i:i + 1].clone().requires_grad_(not fix_betas)
        t = transl0[i:i + 1].clone().requires_grad_(True)
        hi = hinge[i:i + 1] if hinge is not None else None
        for w_b, w_p, w_bend, iters in stages:
            if iters <= 0:
                continue
            opt = torch.optim.LBFGS([aa, t] if fix_betas else [aa, b, t], lr=1.0, max_iter=iters,
                                    line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12,
                                    history_size=20)
            opt.step(_closure(opt, kpfn, aa, b, t, X[i:i + 1], c[i:i + 1], hi, w_b, w_p, w_bend,
                              aa0[i:i + 1, 1:].detach(), w_anchor))
        for lst, v in zip(outs, (aa, b, t)):
            lst.append(v.detach())
    return torch.cat(outs[0]), torch.cat(outs[1]), torch.cat(outs[2])


def noise_prior_weights(noise_mm: float, w_betas: float = 1e-5, w_pose: float = 0.0, pose_std: float = 0.5,
                        betas_std: float = 0.5) -> tuple[float, float]:
    """[O] MAP prior weights of the refinement for keypoints with a stated noise of ``noise_mm`` (std per
    coordinate): with x_k = kp_k + N(0, sigma^2), theta_body ~ N(0, pose_std^2) (radians) and
    beta ~ N(0, betas_std^2), the energy sum_k |kp_k - x_k|^2 + sigma^2 (|theta|^2 / pose_std^2
    + |beta|^2 / betas_std^2) gives w = (sigma / std)^2; ``w_betas``/``w_pose`` stay as floors (clean
    keypoints). pose_std = betas_std = 0.5 were chosen on validation bodies (seeds 7, 17, 32), never
    the benchmark's. Returns (w_betas, w_pose)."""
    fin = math.isfinite
    if not all(fin(v) and v >= 0 for v in (noise_mm, w_betas, w_pose)) or not all(
            fin(v) and v > 0 for v in (pose_std, betas_std)):
        raise ConfigError(f"noise_mm, w_betas, w_pose must be finite and >= 0 and pose_std, betas_std finite and > 0, "
                          f"got {noise_mm}, {w_betas}, {w_pose}, {pose_std}, {betas_std}")
    sigma = noise_mm * 1e-3
    return max(w_betas, (sigma / betas_std) ** 2), max(w_pose, (sigma / pose_std) ** 2)


def fit(model, keypoints: torch.Tensor, confidence: torch.Tensor | None = None, refine_iters: int = 0,
        betas: torch.Tensor | None = None, with_vertices: bool = True, shape_rounds: int = 2,
        refine_method: str = "lm", noise_mm: float = 0.0, w_betas: float = 1e-5, w_pose: float = 0.0,
        pose_std: float = 0.5, betas_std: float = 0.5, shape_iters: int = 8,
        shape_damping: float = 1e-4, sequential: bool = False, w_anchor: float = 1e-4,
        warn: bool = True) -> dict[str, torch.Tensor]:
    """KAMA fit: keypoints (B, 26, 3) metres (camera or world frame), confidence (B, 26) | None ->
    pose (B, 24, 3) axis-angle, rot (B, 24, 3, 3), betas (B, NB), transl (B, 3), vertices (B, V, 3),
    joints (B, 24, 3), keypoints (B, 26, 3) of the fitted body, residual (B, 26) metres (0 where
    missing), degenerate (B, 4) straight-limb flags. ``refine_iters`` > 0 adds step 7, whose prior
    weights follow the stated keypoint noise ``noise_mm`` (:func:`noise_prior_weights`). Given ``betas`` (B, NB)
    the shape is fixed, in the refinement too (it used to re-fit them, so `kama bvh`'s shared shape was not).
    ``shape_iters`` / ``shape_damping``: the bone-length shape fit's Gauss-Newton iterations and damping.
    ``sequential``: the batch is a video, frame after frame; a straight limb keeps the previous frame's twist
    (spec step 4) instead of taking the swing only. ``warn``: :func:`warn_doubtful` on the result (off for a pass
    whose fit is thrown away, as the ``bvh`` verb's shape pass)."""
    if not hasattr(model, "v_template"):  # None or another object raised an AttributeError deep inside
        raise InputError(f"model must be a KAMA body model (tenfold.kama.procedural_model() or load_body_model(path)), "
                         f"got {type(model).__name__}")
    X, c = check_keypoints(keypoints, confidence)
    _check_betas(model, betas, X.shape[0])
    if not (shape_damping > 0) or shape_iters < 0 or shape_rounds < 0 or refine_iters < 0:
        raise ConfigError(f"shape_damping must be > 0 and shape_iters, shape_rounds, refine_iters >= 0, got "
                          f"{shape_damping}, {shape_iters}, {shape_rounds}, {refine_iters}")
    with torch.no_grad():
        kw = dict(shape_rounds=shape_rounds, shape_iters=shape_iters, shape_damping=shape_damping)
        out = articulate(model, X, c, betas=betas, **kw)
        if sequential:  # only frames with a straight limb depend on the frame before: redo those, in order
            out = {k: v.clone() for k, v in out.items()}  # written in place below (betas may be the caller's, expanded)
            for i in torch.nonzero(out["degenerate"][1:].any(-1)).flatten().tolist():
                i += 1
                o = articulate(model, X[i:i + 1], c[i:i + 1], betas=None if betas is None else betas[i:i + 1],
                               twist_ref=out["hinge_world"][i - 1:i], **kw)
                for k, v in o.items():
                    out[k][i:i + 1] = v
    if refine_iters > 0:
        wb, wp = noise_prior_weights(noise_mm, w_betas, w_pose, pose_std, betas_std)
        out.update(refine(model, out["rot"], out["betas"], out["transl"], X, c, iters=refine_iters,
                          method=refine_method, w_betas=wb, w_pose=wp, fix_betas=betas is not None,
                          w_anchor=w_anchor))
    with torch.no_grad():
        res = model(out["rot"], out["betas"], out["transl"]) if with_vertices else None
        kp = regress_keypoints(model, out["rot"], out["betas"], out["transl"])
    out["pose"] = matrix_to_axis_angle(out["rot"])
    if res is not None:
        out["vertices"], out["joints"] = res["vertices"], res["joints"]
    out["keypoints"] = kp
    out["residual"] = (kp - X.to(kp.dtype)).norm(dim=-1) * (c > 0).to(kp.dtype)
    assert out["residual"].shape[-1] == NUM_KEYPOINTS
    if warn:
        warn_doubtful(X, c, out["residual"])
        warn_extreme_shape(out["betas"])
    return out


# a fitted shape coefficient beyond this is no human body (betas are in prior standard deviations): real-size
# keypoints fit within +-1.1 clean and +-5.1 at 25 mm noise (30 bodies); scaled by 0.5 or 2 about the pelvis they
# fit "well" (1-2 mm) with betas up to 8.7 and 18.3, silently until session 27 (tools/kama_shape_range.py)
EXTREME_BETA = 8.0


def warn_extreme_shape(betas: torch.Tensor) -> None:
    """Warn (:class:`TenfoldWarning`) of bodies fitted with an absurd shape: keypoints of a scaled skeleton (a
    normalised one, or wrong units by less than the span checks catch) or very noisy ones fit with a small error."""
    worst = betas.detach().abs().amax(-1).cpu()
    bad = worst > EXTREME_BETA
    if bool(bad.any()):
        warnings.warn(f"{int(bad.sum())} of {len(bad)} bodies fit with shape coefficients beyond +-{EXTREME_BETA:g} "
                      f"prior standard deviations (worst: body {int(worst.argmax())}, {float(worst.max()):.1f}): "
                      "the keypoints look scaled (KAMA takes a real-size body in metres) or very noisy (state the "
                      "noise with noise_mm)", TenfoldWarning, stacklevel=3)


# a mean keypoint error above this is no fit of these points: 4x the 25 mm per-coordinate noise the benchmark
# studies (whose 3-D error is about 25 sqrt(3) = 43 mm); at 50, session 23's first value, good bodies at 35 mm noise
# warned (tests/kama/test_articulate.py, mutation r13-K4)
DOUBTFUL_MM = 100.0


def warn_doubtful(X: torch.Tensor, c: torch.Tensor, residual: torch.Tensor) -> None:
    """Warn (:class:`TenfoldWarning`) of fits that are no answer: a mean error over the seen keypoints above
    ``DOUBTFUL_MM`` (keypoints in another order, or not a body), and keypoints facing backwards (left and right
    swapped, or a mirrored frame), which fit with a small error while the body is turned around; and (since
    session 27) two seen keypoints at the very same point. All used to pass without a word; until session 23 only
    the CLI's ``fit`` warned, and :func:`fit` itself did not."""
    seen = (c > 0).cpu()
    per_body = (residual.detach().cpu() * seen).sum(-1) / seen.sum(-1).clamp(min=1) * 1e3  # mm
    bad = per_body > DOUBTFUL_MM
    if bool(bad.any()):
        warnings.warn(f"{int(bad.sum())} of {len(bad)} bodies fit with a mean keypoint error above {DOUBTFUL_MM:g} mm "
                      f"(worst: body {int(per_body.argmax())}, {float(per_body.max()):.0f} mm): check that "
                      "the keypoints follow KEYPOINT_NAMES' order and are in metres", TenfoldWarning, stacklevel=3)
    # two seen keypoints at the very same point: a missing one written as zeros next to a pelvis at the origin
    # (pelvis-centred data) fitted an arm bent to the pelvis without a word
    Xc, pair = X.detach().cpu(), seen[:, :, None] & seen[:, None, :]
    same = (Xc[:, :, None] == Xc[:, None]).all(-1) & pair
    same = same & ~torch.eye(NUM_KEYPOINTS, dtype=torch.bool, device="cpu")
    if bool(same.any()):
        b, k1, k2 = (int(i) for i in same.nonzero()[0])
        n = int(same.any(-1).any(-1).sum())
        warnings.warn(f"{n} of {len(same)} bodies have two seen keypoints at the very same point (first: body {b}, "
                      f"{KEYPOINT_NAMES[k1]} and {KEYPOINT_NAMES[k2]}): a missing point written as zeros? give it "
                      "confidence 0", TenfoldWarning, stacklevel=3)
    back = facing_backwards(X.detach().cpu(), c.cpu())
    if bool(back.any()):
        warnings.warn(f"{int(back.sum())} of {len(back)} bodies have the nose behind the neck in the frame of their "
                      f"hips and spine (first: body {int(back.float().argmax())}): left and right are swapped, or "
                      "the frame is mirrored (left-handed); the fit turns the body around", TenfoldWarning,
                      stacklevel=3)
