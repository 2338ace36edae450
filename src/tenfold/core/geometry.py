"""Rotations, rigid alignment, pinhole cameras and kinematic trees (KAMA, handpose, gaze, rendering).

Conventions, fixed once for the whole toolkit:

* Rotation matrices act on column vectors: ``x' = R @ x``. Batched tensors put the matrix in the
  last two dims, ``(..., 3, 3)``.
* Axis-angle ``(..., 3)``: unit axis times angle in radians (Rodrigues vector).
* Quaternions are **scalar-first ``wxyz``** by default (kornia's and roma's ``*_wxyz``, pytorch3d's
  convention). SciPy's ``Rotation.as_quat`` is **scalar-last ``xyzw``**: pass ``order="xyzw"``.
  :func:`matrix_to_quaternion` returns the representative with ``w >= 0``.
* 6D rotation (Zhou et al., CVPR 2019): the **first two columns** of R, ``[R[:, 0], R[:, 1]]``,
  as in the paper's code. pytorch3d's ``matrix_to_rotation_6d`` stores the first two *rows*
  (the 6D of R^T); do not mix them.
* Euler angles follow SciPy's letters: upper case = intrinsic (``"ZYX"``: R = Rz(a0) Ry(a1) Rx(a2),
  the BVH channel order), lower case = extrinsic (``"zyx"``: R = Rx(a2) Ry(a1) Rz(a0)).
* Cameras are OpenCV-style: camera frame x right, y down, z forward (the gaze and rendering
  specs), world-to-camera extrinsics ``x_cam = R @ x_world + t``, intrinsics K (3, 3).
* Gaze (Gaze360): g = (cos p sin y, sin p, -cos p cos y) in the eye frame; (0, 0, -1) looks at the
  camera; yaw = atan2(g_x, -g_z), pitch = asin(g_y).

Conversions delegate to kornia where it has them; the functions here add the boundary checks,
the conventions above and the pieces kornia lacks (6D, Kabsch/Umeyama, swing-twist, FK, 2.5D lift).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from kornia.geometry import conversions as _kc

from tenfold.core.io import InputError, check_tensor

__all__ = [
    "axis_angle_to_matrix",
    "batch_rodrigues",
    "euler_to_matrix",
    "forward_kinematics",
    "kabsch",
    "lift_2p5d",
    "look_at",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "pitch_yaw_to_vector",
    "project",
    "quaternion_to_matrix",
    "random_rotation",
    "rotation_6d_to_matrix",
    "swing_rotation",
    "swing_twist",
    "two_vector_align",
    "unproject",
    "vector_to_pitch_yaw",
]


def _unit(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """v / |v| along the last dim, with the norm clamped at ``eps`` (finite for zero vectors)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def _check_rotmat(R: torch.Tensor, name: str = "R") -> torch.Tensor:
    check_tensor(R, name, ("...", 3, 3))
    if not R.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {R.dtype}")
    return R


# --------------------------------------------------------------------------------------------
# Axis-angle, quaternions, 6D, Euler
# --------------------------------------------------------------------------------------------
def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: (..., 3) axis*angle (radians) -> (..., 3, 3) rotation matrices.

    Why: SMPL/MANO poses and network outputs are axis-angle; FK needs matrices. Smooth (Taylor
    branch) at angle 0, so it is safe to differentiate there.
    """
    check_tensor(axis_angle, "axis_angle", ("...", 3))
    lead = axis_angle.shape[:-1]
    return _kc.axis_angle_to_rotation_matrix(axis_angle.reshape(-1, 3)).reshape(*lead, 3, 3)


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3). SMPL's name for :func:`axis_angle_to_matrix`, kept for readers of
    SMPL/HybrIK code."""
    return axis_angle_to_matrix(axis_angle)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis*angle with angle in [0, pi].

    Why: the compact pose output (KAMA returns both). Goes through a quaternion, so it stays
    accurate near 0 and near pi (where the trace formula loses the axis).
    """
    _check_rotmat(R)
    lead = R.shape[:-2]
    q = matrix_to_quaternion(R)  # (..., 4) wxyz, w >= 0 -> angle in [0, pi]
    return _kc.quaternion_to_axis_angle(q.reshape(-1, 4)).reshape(*lead, 3)


def quaternion_to_matrix(q: torch.Tensor, order: str = "wxyz") -> torch.Tensor:
    """(..., 4) quaternion (normalised here) -> (..., 3, 3) rotation matrix.

    ``order``: ``"wxyz"`` (scalar first, our default) or ``"xyzw"`` (scalar last, SciPy).
    Why: BVH/robotics files and SciPy speak quaternions; everything here speaks matrices.
    """
    check_tensor(q, "q", ("...", 4))
    q = _to_wxyz(q, order)
    n = q.norm(dim=-1, keepdim=True)
    if (n < 1e-12).any():
        raise InputError("q holds a zero quaternion; a rotation quaternion must have norm > 0")
    lead = q.shape[:-1]
    return _kc.quaternion_to_rotation_matrix((q / n).reshape(-1, 4)).reshape(*lead, 3, 3)


def matrix_to_quaternion(R: torch.Tensor, order: str = "wxyz") -> torch.Tensor:
    """(..., 3, 3) rotation matrix -> (..., 4) unit quaternion with w >= 0 (one of the two signs).

    ``order`` as in :func:`quaternion_to_matrix`.
    """
    _check_rotmat(R)
    lead = R.shape[:-2]
    q = _kc.rotation_matrix_to_quaternion(R.reshape(-1, 3, 3).contiguous()).reshape(*lead, 4)
    q = torch.where(q[..., :1] < 0, -q, q)
    q = _unit(q)
    return q if order == "wxyz" else _from_wxyz(q, order)


def _to_wxyz(q: torch.Tensor, order: str) -> torch.Tensor:
    if order == "wxyz":
        return q
    if order == "xyzw":
        return torch.cat([q[..., 3:], q[..., :3]], dim=-1)
    raise InputError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def _from_wxyz(q: torch.Tensor, order: str) -> torch.Tensor:
    if order == "xyzw":
        return torch.cat([q[..., 1:], q[..., :1]], dim=-1)
    raise InputError(f"quaternion order must be 'wxyz' or 'xyzw', got {order!r}")


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt (Zhou et al. 2019, Eq. 15-16).

    ``x = [a1, a2]`` become the first two **columns**: b1 = a1/|a1|, b2 = unit(a2 - (b1.a2) b1),
    b3 = b1 x b2. Why: a continuous rotation parameterisation for network outputs.
    """
    check_tensor(x, "x", ("...", 6))
    a1, a2 = x[..., 0:3], x[..., 3:6]
    b1 = _unit(a1)
    b2 = _unit(a2 - (b1 * a2).sum(-1, keepdim=True) * b1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, ``[R[..., :, 0], R[..., :, 1]]``."""
    _check_rotmat(R)
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def _elementary(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """(...,) angle -> (..., 3, 3) rotation about the coordinate axis 'x', 'y' or 'z'."""
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = [o, z, z, z, c, -s, z, s, c]
    elif axis == "y":
        rows = [c, z, s, z, o, z, -s, z, c]
    else:
        rows = [c, -s, z, s, c, z, z, z, o]
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def _check_order(order: str) -> None:
    ok = (len(order) == 3 and (order.isupper() or order.islower())
          and set(order.lower()) <= set("xyz") and order[0] != order[1] and order[1] != order[2])
    if not ok:
        raise InputError(f"Euler order must be 3 letters of x/y/z, all upper (intrinsic) or all lower "
                         f"(extrinsic), no axis twice in a row; got {order!r}")


def euler_to_matrix(angles: torch.Tensor, order: str = "ZYX", *, degrees: bool = False) -> torch.Tensor:
    """(..., 3) Euler angles -> (..., 3, 3), SciPy's letter convention (upper = intrinsic).

    ``"ZYX"`` gives R = Rz(a0) @ Ry(a1) @ Rx(a2): the BVH convention, where channels
    ``Zrotation Yrotation Xrotation`` are applied in file order. Differentiable.
    """
    check_tensor(angles, "angles", ("...", 3))
    _check_order(order)
    if degrees:
        angles = torch.deg2rad(angles)
    mats = [_elementary(order[i].lower(), angles[..., i]) for i in range(3)]
    if order.isupper():  # intrinsic: rotate about the moving axes, left to right
        return mats[0] @ mats[1] @ mats[2]
    return mats[2] @ mats[1] @ mats[0]


def matrix_to_euler(R: torch.Tensor, order: str = "ZYX", *, degrees: bool = False) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) Euler angles (inverse of :func:`euler_to_matrix`), via SciPy.

    Not differentiable (numpy round trip); meant for writing BVH files and reports. At gimbal
    lock SciPy warns and sets the third angle to zero.
    """
    from scipy.spatial.transform import Rotation

    _check_rotmat(R)
    _check_order(order)
    lead = R.shape[:-2]
    mats = R.detach().reshape(-1, 3, 3).cpu().double().numpy()
    ang = Rotation.from_matrix(mats).as_euler(order, degrees=degrees) if len(mats) else np.zeros((0, 3))
    return torch.as_tensor(ang, dtype=R.dtype, device=R.device).reshape(*lead, 3)


def random_rotation(*shape: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotations uniform on SO(3) (normalised Gaussian quaternions): (*shape, 3, 3).

    Why: test fixtures and random augmentation.
    """
    q = torch.randn(*shape, 4, dtype=dtype, device=device, generator=generator)
    return quaternion_to_matrix(q)


# --------------------------------------------------------------------------------------------
# Alignment primitives (KAMA section 2.3)
# --------------------------------------------------------------------------------------------
def kabsch(P: torch.Tensor, Q: torch.Tensor, weights: torch.Tensor | None = None,
           allow_scale: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted least-squares similarity (Umeyama 1991) taking P onto Q: Q ~ s R P + t.

    Shapes: P, Q (..., N, D); weights (..., N) >= 0 or None. Returns R (..., D, D) with det +1
    (reflections are replaced by the nearest proper rotation), t (..., D), s (...,) (ones when
    ``allow_scale`` is False). Minimises sum_i w_i |s R p_i + t - q_i|^2.
    Why: root/spine/ankle/head rotations in KAMA, PA-MPJPE, palm-frame alignment in handpose.
    Differentiable while the cross-covariance has distinct singular values.
    """
    check_tensor(P, "P", ("...", "N", "D"))
    check_tensor(Q, "Q", tuple(P.shape))
    if not P.is_floating_point():
        raise InputError(f"P must be a floating-point tensor, got {P.dtype}")
    n, d = P.shape[-2], P.shape[-1]
    if n < 1:
        raise InputError("P must hold at least one point (N >= 1)")
    if weights is None:
        w = torch.ones(P.shape[:-1], dtype=P.dtype, device=P.device)
    else:
        w = check_tensor(weights, "weights", tuple(P.shape[:-1])).to(P.dtype)
        if (w < 0).any():
            raise InputError("weights must be non-negative")
        if (w.sum(-1) <= 0).any():
            raise InputError("weights must not all be zero for a sample")
    w = w / w.sum(-1, keepdim=True)  # (..., N), sums to 1
    mu_p = (w[..., None] * P).sum(-2)  # (..., D)
    mu_q = (w[..., None] * Q).sum(-2)
    Pc, Qc = P - mu_p[..., None, :], Q - mu_q[..., None, :]
    H = (w[..., None] * Pc).transpose(-1, -2) @ Qc  # (..., D, D) = sum_i w_i p_i q_i^T
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    sign = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    diag = torch.ones(*H.shape[:-2], d, dtype=P.dtype, device=P.device)
    diag = torch.cat([diag[..., :-1], sign[..., None]], dim=-1)  # diag(1, ..., 1, det(V U^T))
    R = V @ (diag[..., :, None] * U.transpose(-1, -2))
    if allow_scale:
        var_p = (w * (Pc * Pc).sum(-1)).sum(-1)  # (...,)
        s = (S * diag).sum(-1) / var_p.clamp_min(torch.finfo(P.dtype).tiny)
    else:
        s = torch.ones(P.shape[:-2], dtype=P.dtype, device=P.device)
    t = mu_q - s[..., None] * (R @ mu_p[..., None])[..., 0]
    return R, t, s


def swing_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotation taking direction a to direction b: (..., 3), (..., 3) -> (..., 3, 3).

    Axis a x b, angle atan2(|a x b|, a.b). Antiparallel a, b give a rotation by pi about an axis
    perpendicular to a (never the identity). Why: KAMA's swing corrections and limb swings.
    """
    check_tensor(a, "a", ("...", 3))
    check_tensor(b, "b", ("...", 3))
    a, b = torch.broadcast_tensors(_unit(a), _unit(b))
    c = (a * b).sum(-1)  # cos angle
    # a x b = a x (a + b): past 90 deg the sum is the small, exactly formed vector, and the axis keeps its digits
    # (a x b there is mostly rounding: R a missed b by far more than rounding just outside the half-turn branch,
    # test_swing_rotation_hits_b_just_outside_the_half_turn_branch)
    v = torch.linalg.cross(a, torch.where((c < 0)[..., None], a + b, b), dim=-1)
    s = torch.linalg.vector_norm(v, dim=-1)  # sin angle
    # |a x b| at rounding level with a.b < 0: the axis a x b is noise, so take the half-turn branch
    anti = (c < 0) & (s < 64 * torch.finfo(a.dtype).eps)
    # Rodrigues with a unit axis, R = I + sin t K + (1 - cos t) K^2: orthogonal to rounding at every angle
    # (I + [v]x + [v]x^2 / (1 + c) divided by a cancelling 1 + c: far from orthogonal in float32 near pi)
    K = _skew(v / s.clamp_min(torch.finfo(a.dtype).tiny)[..., None])
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand(K.shape)
    R_reg = eye + s[..., None, None] * K + (1.0 - c)[..., None, None] * (K @ K)
    # antiparallel: rotation by pi about n perpendicular to a: R = 2 n n^T - I
    idx = a.abs().argmin(-1)  # least-aligned coordinate axis
    e = torch.nn.functional.one_hot(idx, 3).to(a.dtype)
    n = _unit(torch.linalg.cross(a, e, dim=-1))
    R_anti = 2.0 * n[..., :, None] * n[..., None, :] - eye
    return torch.where(anti[..., None, None], R_anti, R_reg)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix [v]x."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v.unbind(-1)
    return torch.stack([z, -w, y, w, z, -x, -y, x, z], dim=-1).reshape(*v.shape[:-1], 3, 3)


def swing_twist(R: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split R into swing @ twist: twist rotates about ``axis``; swing's axis is perpendicular to it.

    Shapes: R (..., 3, 3), axis (..., 3) or (3,) (normalised here). Returns (swing, twist), both
    (..., 3, 3), with R == swing @ twist (twist acts first, in the local frame). The twist angle
    is ``(matrix_to_axis_angle(twist) * axis).sum(-1)``. When the twist is undefined (a
    half-turn swing: R's quaternion has no component along the axis) twist = identity.
    Why: KAMA separates the observable swing of a bone from its unobservable twist.
    """
    _check_rotmat(R)
    check_tensor(axis, "axis", ("...", 3))
    u = _unit(axis.to(R.dtype))
    q = matrix_to_quaternion(R)  # (..., 4) wxyz
    w, v = q[..., :1], q[..., 1:]
    proj = (v * u).sum(-1, keepdim=True) * u  # vector part projected on the axis
    tq = torch.cat([w.expand(proj.shape[:-1] + (1,)), proj], dim=-1)
    norm = tq.norm(dim=-1, keepdim=True)
    ident = torch.zeros_like(tq)
    ident[..., 0] = 1.0
    tq = torch.where(norm > 1e-9, tq / norm.clamp_min(1e-12), ident)
    lead = tq.shape[:-1]
    twist = _kc.quaternion_to_rotation_matrix(tq.reshape(-1, 4)).reshape(*lead, 3, 3)
    swing = R @ twist.transpose(-1, -2)
    return swing, twist


def two_vector_align(a1: torch.Tensor, a2: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Rotation taking the frame of (a1, a2) to that of (b1, b2): all (..., 3) -> (..., 3, 3).

    F(x, y) = [x^, y_perp^, x^ x y_perp^] (columns); R = F(b1, b2) F(a1, a2)^T, so R a1^ = b1^
    exactly and R a2 lies in the (b1, b2) half-plane. Why: KAMA's hinge limbs (bone + hinge axis).
    Degenerate (parallel) pairs give an arbitrary but finite result: the caller checks.
    """
    for name, v in (("a1", a1), ("a2", a2), ("b1", b1), ("b2", b2)):
        check_tensor(v, name, ("...", 3))
    return _frame(b1, b2) @ _frame(a1, a2).transpose(-1, -2)


def _frame(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., 3), (..., 3) -> (..., 3, 3) orthonormal frame with columns x^, y_perp^, x^ x y_perp^."""
    e1 = _unit(x)
    e2 = _unit(y - (e1 * y).sum(-1, keepdim=True) * e1)
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    e1, e2, e3 = torch.broadcast_tensors(e1, e2, e3)
    return torch.stack([e1, e2, e3], dim=-1)


# --------------------------------------------------------------------------------------------
# Pinhole cameras
# --------------------------------------------------------------------------------------------
def look_at(eye: torch.Tensor, target: torch.Tensor,
            up: torch.Tensor | Sequence[float] = (0.0, 1.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera extrinsics (R, t) of an OpenCV camera at ``eye`` looking at ``target``.

    Shapes: eye, target (..., 3); up (3,) or (..., 3), the world's up direction (the camera's
    image y axis points along -up). Returns R (..., 3, 3), t (..., 3) with x_cam = R x + t, so the
    target lands on the optical axis (x_cam = y_cam = 0, z_cam > 0). Why: synthetic scenes.
    """
    check_tensor(eye, "eye", ("...", 3))
    check_tensor(target, "target", ("...", 3))
    up_t = torch.as_tensor(up, dtype=eye.dtype, device=eye.device)
    check_tensor(up_t, "up", ("...", 3))
    fwd = target - eye
    if (fwd.norm(dim=-1) < 1e-12).any():
        raise InputError("look_at: eye and target coincide; the viewing direction is undefined")
    z = _unit(fwd)
    x = torch.linalg.cross(z, up_t.expand_as(z), dim=-1)
    if (x.norm(dim=-1) < 1e-9).any():
        raise InputError("look_at: viewing direction is parallel to 'up'; pass another up vector")
    x = _unit(x)
    y = torch.linalg.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=-2)  # rows are the camera axes in world coordinates
    t = -(R @ eye[..., None])[..., 0]
    return R, t


def project(points: torch.Tensor, K: torch.Tensor, R: torch.Tensor | None = None,
            t: torch.Tensor | None = None) -> torch.Tensor:
    """Pinhole projection: points (..., N, 3) in world (or camera, if R, t are None) -> (..., N, 2) pixels.

    K (..., 3, 3), R (..., 3, 3), t (..., 3) broadcast over the leading dims. u = fx X/Z + s Y/Z + cx,
    v = fy Y/Z + cy. Points must be in front of the camera (Z > 0); no check, so it stays cheap.
    """
    check_tensor(points, "points", ("...", 3))
    check_tensor(K, "K", ("...", 3, 3))
    X = _to_camera(points, R, t)
    xn = X[..., :2] / X[..., 2:3]  # (..., N, 2) normalised image coordinates
    hom = torch.cat([xn, torch.ones_like(xn[..., :1])], dim=-1)  # (..., N, 3)
    uvw = hom @ K.transpose(-1, -2)
    return uvw[..., :2]


def unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, R: torch.Tensor | None = None,
              t: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`project`: pixels (..., N, 2) with camera-frame depth Z (..., N) -> (..., N, 3).

    Returns world points when R, t are given (x = R^T (x_cam - t)), else camera-frame points.
    """
    check_tensor(uv, "uv", ("...", 2))
    check_tensor(depth, "depth", tuple(uv.shape[:-1]))
    check_tensor(K, "K", ("...", 3, 3))
    hom = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)  # (..., N, 3)
    q = hom @ torch.linalg.inv(K).transpose(-1, -2)  # K^-1 [u, v, 1]: ray with Z = 1
    X = q * depth[..., None]
    if R is None and t is None:
        return X
    if t is not None:
        X = X - t[..., None, :]
    if R is not None:
        X = X @ R  # R^T x for row vectors
    return X


def _to_camera(points: torch.Tensor, R: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
    X = points
    if R is not None:
        _check_rotmat(R)
        X = X @ R.transpose(-1, -2)
    if t is not None:
        check_tensor(t, "t", ("...", 3))
        X = X + t[..., None, :]
    return X


def lift_2p5d(uv: torch.Tensor, z_rel: torch.Tensor, K: torch.Tensor, bone: tuple[int, int],
              bone_length: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Iqbal et al. (ECCV 2018) 2.5D -> 3D lift from one reference bone of known length.

    Shapes: uv (..., J, 2) pixels, z_rel (..., J) depth relative to the root in the units of
    ``bone_length``, K (..., 3, 3). With q_k = K^-1 [u_k, v_k, 1], bone (n, m), d = q_n - q_m,
    e = z_n q_n - z_m q_m, the root depth Z solves |d|^2 Z^2 + 2 (d.e) Z + |e|^2 - C^2 = 0 (larger
    root); returns P_k = (Z + z_k) q_k, (..., J, 3) camera frame. Both roots reproduce the pixels,
    relative depths and bone length; the larger (farther) one is Iqbal et al.'s convention and is
    wrong for a small fraction of poses (about 0.1% of random 21-joint poses in our tests). A
    negative discriminant (bone too short for the rays) is clamped to 0. ``bone_length``: a float
    or a (...,) tensor. Why: shared by KAMA and handpose (2.5D heat maps); the metric scale
    comes entirely from the assumed ``bone_length``.
    """
    check_tensor(uv, "uv", ("...", "J", 2))
    check_tensor(z_rel, "z_rel", tuple(uv.shape[:-1]))
    check_tensor(K, "K", ("...", 3, 3))
    J = uv.shape[-2]
    n, m = bone
    if not (0 <= n < J and 0 <= m < J and n != m):
        raise InputError(f"bone must be two different joint indices in [0, {J}), got {bone}")
    hom = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    q = hom @ torch.linalg.inv(K).transpose(-1, -2)  # (..., J, 3)
    d = q[..., n, :] - q[..., m, :]
    e = z_rel[..., n, None] * q[..., n, :] - z_rel[..., m, None] * q[..., m, :]
    C = torch.as_tensor(bone_length, dtype=uv.dtype, device=uv.device)
    a2 = (d * d).sum(-1)
    b = (d * e).sum(-1)
    c = (e * e).sum(-1) - C * C
    disc = (b * b - a2 * c).clamp_min(0.0)
    Z = (-b + disc.sqrt()) / a2.clamp_min(torch.finfo(uv.dtype).tiny)  # (...,)
    return (Z[..., None] + z_rel)[..., None] * q


# --------------------------------------------------------------------------------------------
# Kinematic trees
# --------------------------------------------------------------------------------------------
def _check_parents(parents: Sequence[int] | torch.Tensor, J: int) -> list[int]:
    par = [int(p) for p in (parents.tolist() if isinstance(parents, torch.Tensor) else parents)]
    if len(par) != J:
        raise InputError(f"parents must have one entry per joint ({J}), got {len(par)}")
    for j, p in enumerate(par):
        if j == 0 and p >= 0:
            raise InputError(f"parents[0] must be -1 (joint 0 is the root), got {p}")
        if j > 0 and not 0 <= p < j:
            raise InputError(f"parents must be topologically sorted (0 <= parents[j] < j); parents[{j}] = {p}")
    return par


def forward_kinematics(local_rot: torch.Tensor, rest: torch.Tensor, parents: Sequence[int] | torch.Tensor,
                       *, offsets: bool = False,
                       root_translation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed global rotations and joint positions of a kinematic tree.

    Shapes: local_rot (..., J, 3, 3) rotations relative to the parent; rest (J, 3) or (..., J, 3):
    rest-pose joint positions (SMPL/MANO, ``offsets=False``) or per-joint offsets from the parent
    (BVH ``OFFSET``, ``offsets=True``; the root's offset is its rest position); parents (J,) with
    parents[0] = -1 and parents[j] < j; root_translation (..., 3) or None.
    Returns G (..., J, 3, 3) global rotations, p (..., J, 3) positions:
    G_j = G_parent R_j, p_j = p_parent + G_parent (rest_j - rest_parent); p_0 = rest_0 + t.
    Why: one FK for KAMA (SMPL), handpose (MANO-like) and BVH mocap.
    """
    check_tensor(local_rot, "local_rot", ("...", "J", 3, 3))
    J = local_rot.shape[-3]
    check_tensor(rest, "rest", ("...", J, 3))
    par = _check_parents(parents, J)
    if not local_rot.is_floating_point():  # integer rotations cast rest to int64: positions silently truncated
        local_rot = local_rot.to(torch.promote_types(rest.dtype, torch.get_default_dtype()))
    rest = rest.to(local_rot.dtype)
    if offsets:
        off = rest
    else:
        idx = torch.tensor([max(p, 0) for p in par], device=rest.device)
        off = rest - rest.index_select(-2, idx) * (torch.arange(J, device=rest.device) > 0)[:, None]
    lead = torch.broadcast_shapes(local_rot.shape[:-3], off.shape[:-2])
    R = local_rot.expand(*lead, J, 3, 3)
    off = off.expand(*lead, J, 3)
    G: list[torch.Tensor] = [R[..., 0, :, :]]
    p0 = off[..., 0, :]
    if root_translation is not None:
        check_tensor(root_translation, "root_translation", ("...", 3))
        p0 = p0 + root_translation
    pos: list[torch.Tensor] = [p0]
    for j in range(1, J):
        Gp = G[par[j]]
        G.append(Gp @ R[..., j, :, :])
        pos.append(pos[par[j]] + (Gp @ off[..., j, :, None])[..., 0])
    return torch.stack(G, dim=-3), torch.stack(pos, dim=-2)


# --------------------------------------------------------------------------------------------
# Gaze angles (Gaze360 convention)
# --------------------------------------------------------------------------------------------
def pitch_yaw_to_vector(pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """(...,), (...,) radians -> (..., 3) unit gaze g = (cos p sin y, sin p, -cos p cos y).

    Eye frame: +x to the subject's image-left, +y up, +z away from the camera, so pitch = yaw = 0
    looks into the camera. Why: Gaze360 networks output (yaw, pitch); losses need vectors.
    """
    check_tensor(pitch, "pitch")
    check_tensor(yaw, "yaw", tuple(pitch.shape))
    cp = torch.cos(pitch)
    return torch.stack([cp * torch.sin(yaw), torch.sin(pitch), -cp * torch.cos(yaw)], dim=-1)


def vector_to_pitch_yaw(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 3) gaze vectors (any length > 0) -> (pitch, yaw), each (...,), radians.

    yaw = atan2(g_x, -g_z) in (-pi, pi], pitch = atan2(g_y, sqrt(g_x^2 + g_z^2)) in [-pi/2, pi/2]
    (= asin of the unit vector's y, but accurate near the poles).
    """
    check_tensor(g, "g", ("...", 3))
    gx, gy, gz = g.unbind(-1)
    yaw = torch.atan2(gx, -gz)
    pitch = torch.atan2(gy, torch.sqrt(gx * gx + gz * gz))
    return pitch, yaw
