"""Geometry kernels against independent references: SciPy rotations, closed forms, naive loops,
planted transforms and float64 gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from tenfold.core import geometry as G
from tenfold.core.io import InputError

D64 = torch.float64


def _assert_so3(R: torch.Tensor, atol: float = 1e-10) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=R.dtype), atol=atol, rtol=0)


# ---------------------------------------------------------------- conversions
def test_axis_angle_matches_scipy_and_roundtrips():
    aa = torch.randn(4, 5, 3, dtype=D64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(4, 5, 1, dtype=D64) * 3.0
    R = G.axis_angle_to_matrix(aa)
    ref = Rotation.from_rotvec(aa.reshape(-1, 3).numpy()).as_matrix().reshape(4, 5, 3, 3)
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-12)
    _assert_so3(R)
    torch.testing.assert_close(G.matrix_to_axis_angle(R), aa, atol=1e-9, rtol=0)
    assert torch.equal(G.batch_rodrigues(aa), R)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-6, 1e-3, math.pi - 1e-3, math.pi - 1e-7])
def test_axis_angle_roundtrip_near_zero_and_pi(angle):
    axes = torch.tensor([[1.0, 0, 0], [0, 0.6, 0.8], [-0.48, 0.6, 0.64]], dtype=D64)
    aa = axes * angle
    back = G.matrix_to_axis_angle(G.axis_angle_to_matrix(aa))
    torch.testing.assert_close(back, aa, atol=1e-12, rtol=0)
    back32 = G.matrix_to_axis_angle(G.axis_angle_to_matrix(aa.float()))
    torch.testing.assert_close(back32, aa.float(), atol=1e-5, rtol=0)


def test_axis_angle_at_pi_gives_same_rotation():
    aa = torch.tensor([[0.6, 0.0, 0.8]], dtype=D64) * math.pi
    R = G.axis_angle_to_matrix(aa)
    back = G.matrix_to_axis_angle(R)  # +axis*pi or -axis*pi: both are the same rotation
    torch.testing.assert_close(back.norm(dim=-1), torch.tensor([math.pi], dtype=D64))
    torch.testing.assert_close(G.axis_angle_to_matrix(back), R, atol=1e-12, rtol=0)


def test_quaternion_convention_against_scipy():
    rot = Rotation.random(50, random_state=1)
    xyzw = torch.from_numpy(rot.as_quat())  # SciPy: scalar last
    wxyz = xyzw[:, [3, 0, 1, 2]]
    Rref = torch.from_numpy(rot.as_matrix())
    torch.testing.assert_close(G.quaternion_to_matrix(wxyz), Rref, atol=1e-12, rtol=0)
    torch.testing.assert_close(G.quaternion_to_matrix(xyzw, order="xyzw"), Rref, atol=1e-12, rtol=0)
    torch.testing.assert_close(G.quaternion_to_matrix(-3.0 * wxyz), Rref, atol=1e-12, rtol=0)  # sign/scale free
    q = G.matrix_to_quaternion(Rref)
    assert (q[:, 0] >= 0).all()
    canon = torch.where(wxyz[:, :1] < 0, -wxyz, wxyz)
    torch.testing.assert_close(q, canon, atol=1e-10, rtol=0)
    torch.testing.assert_close(G.matrix_to_quaternion(Rref, order="xyzw"), canon[:, [1, 2, 3, 0]], atol=1e-10, rtol=0)
    with pytest.raises(InputError):
        G.quaternion_to_matrix(torch.zeros(2, 4))
    with pytest.raises(InputError):
        G.quaternion_to_matrix(wxyz, order="xwyz")


def test_rotation_6d_roundtrip_and_columns():
    R = G.random_rotation(3, 7, dtype=D64)
    x = G.matrix_to_rotation_6d(R)
    torch.testing.assert_close(x[..., :3], R[..., :, 0])  # Zhou et al.: first two columns
    torch.testing.assert_close(G.rotation_6d_to_matrix(x), R, atol=1e-12, rtol=0)
    y = torch.randn(10, 6, dtype=D64)  # arbitrary 6D -> valid rotation whose first column is a1^
    Ry = G.rotation_6d_to_matrix(y)
    _assert_so3(Ry)
    torch.testing.assert_close(Ry[:, :, 0], y[:, :3] / y[:, :3].norm(dim=-1, keepdim=True))


def test_rotation_6d_gradcheck():
    x = torch.randn(4, 6, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(G.rotation_6d_to_matrix, (x,))


@pytest.mark.parametrize("order", ["ZYX", "XYZ", "YXZ", "zyx", "xyz", "ZXZ"])
def test_euler_against_scipy(order):
    ang = torch.rand(20, 3, dtype=D64) * 2 - 1
    R = G.euler_to_matrix(ang, order)
    ref = Rotation.from_euler(order, ang.numpy()).as_matrix()
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-12)
    torch.testing.assert_close(G.euler_to_matrix(G.matrix_to_euler(R, order), order), R, atol=1e-12, rtol=0)
    deg = torch.rad2deg(ang)
    torch.testing.assert_close(G.euler_to_matrix(deg, order, degrees=True), R)


def test_euler_bvh_order_is_rz_ry_rx():
    a = torch.tensor([0.3, -0.2, 0.5], dtype=D64)
    Rz = G.axis_angle_to_matrix(torch.tensor([0, 0, 0.3], dtype=D64))
    Ry = G.axis_angle_to_matrix(torch.tensor([0, -0.2, 0], dtype=D64))
    Rx = G.axis_angle_to_matrix(torch.tensor([0.5, 0, 0], dtype=D64))
    torch.testing.assert_close(G.euler_to_matrix(a, "ZYX"), Rz @ Ry @ Rx)
    with pytest.raises(InputError):
        G.euler_to_matrix(a, "ZZX")


def test_random_rotation_is_so3():
    _assert_so3(G.random_rotation(100, dtype=D64))


def test_boundary_checks():
    with pytest.raises(InputError, match="shape"):
        G.axis_angle_to_matrix(torch.zeros(4, 2))
    with pytest.raises(InputError, match="NaN"):
        G.matrix_to_axis_angle(torch.full((3, 3), float("nan")))
    with pytest.raises(InputError):
        G.matrix_to_quaternion(torch.eye(3, dtype=torch.int64))


# ---------------------------------------------------------------- Kabsch / Umeyama
def _planted(B=6, N=12, scale=True):
    P = torch.randn(B, N, 3, dtype=D64)
    R = G.random_rotation(B, dtype=D64)
    t = torch.randn(B, 3, dtype=D64)
    s = torch.rand(B, dtype=D64) + 0.5 if scale else torch.ones(B, dtype=D64)
    Q = s[:, None, None] * P @ R.transpose(-1, -2) + t[:, None]
    return P, Q, R, t, s


def test_kabsch_recovers_planted_rigid_and_similarity():
    P, Q, R, t, _ = _planted(scale=False)
    Rh, th, sh = G.kabsch(P, Q)
    torch.testing.assert_close(Rh, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(th, t, atol=1e-10, rtol=0)
    assert torch.equal(sh, torch.ones_like(sh))
    P, Q, R, t, s = _planted(scale=True)
    Rh, th, sh = G.kabsch(P, Q, allow_scale=True)
    torch.testing.assert_close(Rh, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(th, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(sh, s, atol=1e-10, rtol=0)


def test_kabsch_weights_ignore_outliers_and_match_subset():
    P, Q, R, t, s = _planted(B=3, N=10)
    Q = Q.clone()
    Q[:, :3] += 5.0 * torch.randn(3, 3, 3, dtype=D64)  # corrupt three points ...
    w = torch.ones(3, 10, dtype=D64)
    w[:, :3] = 0.0  # ... and give them zero weight
    Rh, th, sh = G.kabsch(P, Q, w, allow_scale=True)
    torch.testing.assert_close(Rh, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(th, t, atol=1e-10, rtol=0)
    torch.testing.assert_close(sh, s, atol=1e-10, rtol=0)
    # integer weights == repeated points
    w2 = torch.randint(1, 4, (1, 10)).to(D64)
    Pn, Qn = torch.randn(1, 10, 3, dtype=D64), torch.randn(1, 10, 3, dtype=D64)
    rep = w2[0].long()
    Pr, Qr = Pn[0].repeat_interleave(rep, 0)[None], Qn[0].repeat_interleave(rep, 0)[None]
    for a, b in zip(G.kabsch(Pn, Qn, w2, allow_scale=True), G.kabsch(Pr, Qr, allow_scale=True)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_kabsch_reflection_gives_proper_rotation():
    P = torch.randn(4, 8, 3, dtype=D64)
    Q = P * torch.tensor([1.0, 1.0, -1.0], dtype=D64)  # mirror image: best orthogonal map is a reflection
    R, _, _ = G.kabsch(P, Q)
    _assert_so3(R)
    # and it is the best proper rotation: no random rotation fits better
    Pc, Qc = P - P.mean(1, keepdim=True), Q - Q.mean(1, keepdim=True)
    best = (Pc @ R.transpose(-1, -2) - Qc).pow(2).sum((-1, -2))
    Rr = G.random_rotation(500, 4, dtype=D64)
    others = (Pc @ Rr.transpose(-1, -2) - Qc).pow(2).sum((-1, -2))
    assert (others >= best - 1e-9).all()


def test_kabsch_gradcheck():
    P = torch.randn(2, 6, 3, dtype=D64, requires_grad=True)
    Q = torch.randn(2, 6, 3, dtype=D64, requires_grad=True)
    w = (torch.rand(2, 6, dtype=D64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q, w: G.kabsch(p, q, w, allow_scale=True), (P, Q, w))


def test_kabsch_2d_and_bad_weights():
    theta = 0.7
    R2 = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=D64)
    P = torch.randn(9, 2, dtype=D64)
    Rh, th, _ = G.kabsch(P, P @ R2.T + 1.0)
    torch.testing.assert_close(Rh, R2)
    torch.testing.assert_close(th, torch.ones(2, dtype=D64))
    with pytest.raises(InputError, match="non-negative"):
        G.kabsch(P, P, -torch.ones(9, dtype=D64))
    with pytest.raises(InputError, match="zero"):
        G.kabsch(P, P, torch.zeros(9, dtype=D64))
    with pytest.raises(InputError, match="shape"):
        G.kabsch(P, P[:5])


# ---------------------------------------------------------------- swing, twist, two-vector align
def test_swing_rotation_takes_a_to_b_including_antiparallel():
    a = torch.randn(50, 3, dtype=D64)
    b = torch.randn(50, 3, dtype=D64)
    b[0] = -2.5 * a[0]  # antiparallel
    b[1] = 3.0 * a[1]  # parallel
    a[2] = torch.tensor([0, 0, 1.0], dtype=D64)
    b[2] = torch.tensor([0, 0, -1.0], dtype=D64)  # antiparallel along a coordinate axis
    R = G.swing_rotation(a, b)
    _assert_so3(R)
    au, bu = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    torch.testing.assert_close((R @ au[..., None])[..., 0], bu, atol=1e-10, rtol=0)
    # minimal: the rotation angle equals the angle between a and b (pi when antiparallel)
    ang = G.matrix_to_axis_angle(R).norm(dim=-1)
    ref = torch.atan2(torch.linalg.cross(au, bu, dim=-1).norm(dim=-1), (au * bu).sum(-1))
    torch.testing.assert_close(ang, ref, atol=1e-7, rtol=0)
    torch.testing.assert_close(R[1], torch.eye(3, dtype=D64))


def test_swing_twist_decomposition():
    R = G.random_rotation(40, dtype=D64)
    axis = torch.randn(40, 3, dtype=D64)
    swing, twist = G.swing_twist(R, axis)
    u = axis / axis.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(swing @ twist, R, atol=1e-10, rtol=0)
    _assert_so3(swing)
    _assert_so3(twist)
    torch.testing.assert_close((twist @ u[..., None])[..., 0], u, atol=1e-10, rtol=0)  # twist fixes the axis
    sw_axis = G.matrix_to_axis_angle(swing)
    torch.testing.assert_close((sw_axis * u).sum(-1), torch.zeros(40, dtype=D64), atol=1e-9, rtol=0)
    # swing is the minimal rotation taking the axis to R @ axis
    torch.testing.assert_close(swing, G.swing_rotation(u, (R @ u[..., None])[..., 0]), atol=1e-8, rtol=0)


def test_swing_twist_planted_and_degenerate():
    u = torch.tensor([0.0, 1.0, 0.0], dtype=D64)
    tw = G.axis_angle_to_matrix(u * 0.8)
    sw = G.axis_angle_to_matrix(torch.tensor([0.3, 0.0, -0.5], dtype=D64))
    swing, twist = G.swing_twist(sw @ tw, u)
    torch.testing.assert_close(twist, tw, atol=1e-12, rtol=0)
    torch.testing.assert_close(swing, sw, atol=1e-12, rtol=0)
    half = G.axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0], dtype=D64))  # swing by pi: twist undefined
    swing, twist = G.swing_twist(half, u)
    assert torch.isfinite(swing).all() and torch.isfinite(twist).all()
    torch.testing.assert_close(swing @ twist, half)


def test_two_vector_align():
    R = G.random_rotation(20, dtype=D64)
    a1, a2 = torch.randn(20, 3, dtype=D64), torch.randn(20, 3, dtype=D64)
    b1, b2 = (R @ a1[..., None])[..., 0] * 2.0, (R @ a2[..., None])[..., 0] + 0.3 * (R @ a1[..., None])[..., 0]
    Rh = G.two_vector_align(a1, a2, b1, b2)
    torch.testing.assert_close(Rh, R, atol=1e-10, rtol=0)  # b2 stays in the same half-plane


# ---------------------------------------------------------------- cameras
def test_project_hand_computed():
    K = torch.tensor([[500.0, 0, 320], [0, 400.0, 240], [0, 0, 1]], dtype=D64)
    X = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 0.0, 2.0]]], dtype=D64)
    uv = G.project(X, K)
    # u = 500*1/4 + 320 = 445, v = 400*2/4 + 240 = 440
    torch.testing.assert_close(uv, torch.tensor([[[445.0, 440.0], [320.0, 240.0]]], dtype=D64))
    R = G.axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 2], dtype=D64))  # x -> y, y -> -x
    t = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
    uv2 = G.project(torch.tensor([[1.0, 0.0, 3.0]], dtype=D64), K, R, t)  # camera point (0, 1, 4)
    torch.testing.assert_close(uv2, torch.tensor([[320.0, 340.0]], dtype=D64))


def test_project_unproject_roundtrip_and_look_at():
    eye = torch.tensor([[2.0, 1.0, -3.0], [0.0, 0.0, 5.0]], dtype=D64)
    target = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=D64)
    R, t = G.look_at(eye, target)
    _assert_so3(R)
    cam_target = (R @ target[..., None])[..., 0] + t
    torch.testing.assert_close(cam_target[:, :2], torch.zeros(2, 2, dtype=D64), atol=1e-12, rtol=0)
    assert (cam_target[:, 2] > 0).all()
    # world up (+y) appears as image up (camera -y) for the camera on the +z axis looking back
    up_cam = (R[1] @ torch.tensor([0.0, 1.0, 0.0], dtype=D64))
    assert up_cam[1] < 0
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]], dtype=D64)
    pts = torch.randn(2, 30, 3, dtype=D64) * 0.5 + target[:, None]
    uv = G.project(pts, K, R, t)
    depth = ((pts @ R.transpose(-1, -2)) + t[:, None])[..., 2]
    torch.testing.assert_close(G.unproject(uv, depth, K, R, t), pts, atol=1e-10, rtol=0)
    with pytest.raises(InputError, match="parallel"):
        G.look_at(torch.tensor([0.0, 5.0, 0.0]), torch.zeros(3))


def test_lift_2p5d_recovers_planted_points():
    K = torch.tensor([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]], dtype=D64)
    P = torch.randn(5, 21, 3, dtype=D64) * 0.05 + torch.tensor([0.1, -0.05, 0.6], dtype=D64)
    uv = G.project(P, K)
    z_rel = P[..., 2] - P[..., :1, 2]
    bone = (9, 0)
    C = (P[:, 9] - P[:, 0]).norm(dim=-1)
    lifted = G.lift_2p5d(uv, z_rel, K, bone, C)
    torch.testing.assert_close(lifted, P, atol=1e-9, rtol=0)
    # bone units: everything divides by C
    torch.testing.assert_close(G.lift_2p5d(uv, z_rel / C[:, None], K, bone), P / C[:, None, None], atol=1e-9, rtol=0)
    with pytest.raises(InputError, match="bone"):
        G.lift_2p5d(uv, z_rel, K, (0, 0))


def test_lift_2p5d_invariants_hold_for_either_root():
    """Both roots reproduce the pixels, the relative depths and the bone length; the larger is chosen."""
    K = torch.tensor([[400.0, 0, 100], [0, 420.0, 90], [0, 0, 1]], dtype=D64)
    P = torch.randn(500, 6, 3, dtype=D64) * 0.1 + torch.tensor([0.0, 0.0, 0.8], dtype=D64)
    uv = G.project(P, K)
    z_rel = P[..., 2] - P[..., :1, 2]
    C = (P[:, 3] - P[:, 1]).norm(dim=-1)
    lifted = G.lift_2p5d(uv, z_rel, K, (3, 1), C)
    torch.testing.assert_close(G.project(lifted, K), uv, atol=1e-8, rtol=0)
    torch.testing.assert_close(lifted[..., 2] - lifted[..., :1, 2], z_rel, atol=1e-12, rtol=0)
    torch.testing.assert_close((lifted[:, 3] - lifted[:, 1]).norm(dim=-1), C, atol=1e-10, rtol=0)
    exact = (lifted - P).abs().amax((1, 2)) < 1e-8
    assert exact.float().mean() > 0.95  # the other samples had the true root the smaller one
    assert (lifted[~exact, 0, 2] > P[~exact, 0, 2]).all()


# ---------------------------------------------------------------- forward kinematics
def _naive_fk(local_rot: np.ndarray, rest: np.ndarray, parents: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous 4x4 transforms, one joint at a time (SMPL's formulation)."""
    J = len(parents)
    T = [None] * J
    for j in range(J):
        A = np.eye(4)
        A[:3, :3] = local_rot[j]
        A[:3, 3] = rest[j] - (rest[parents[j]] if parents[j] >= 0 else 0.0)
        T[j] = A if parents[j] < 0 else T[parents[j]] @ A
    return np.stack([t[:3, :3] for t in T]), np.stack([t[:3, 3] for t in T])


def test_forward_kinematics_against_naive_loop():
    parents = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 8]
    J = len(parents)
    rest = torch.randn(J, 3, dtype=D64)
    rot = G.random_rotation(3, J, dtype=D64)
    Gr, pos = G.forward_kinematics(rot, rest, parents)
    for b in range(3):
        Gn, pn = _naive_fk(rot[b].numpy(), rest.numpy(), parents)
        np.testing.assert_allclose(Gr[b].numpy(), Gn, atol=1e-12)
        np.testing.assert_allclose(pos[b].numpy(), pn, atol=1e-12)
    # offsets form gives the same answer, root translation shifts everything
    off = rest.clone()
    off[1:] = rest[1:] - rest[parents[1:]]
    tr = torch.randn(3, 3, dtype=D64)
    G2, pos2 = G.forward_kinematics(rot, off, torch.tensor(parents), offsets=True, root_translation=tr)
    torch.testing.assert_close(G2, Gr)
    torch.testing.assert_close(pos2, pos + tr[:, None])


def test_forward_kinematics_identity_pose_and_bone_lengths():
    parents = [-1, 0, 1, 1]
    rest = torch.randn(4, 3, dtype=D64)
    eye = torch.eye(3, dtype=D64).expand(4, 3, 3)
    _, pos = G.forward_kinematics(eye, rest, parents)
    torch.testing.assert_close(pos, rest)
    rot = G.random_rotation(4, dtype=D64)
    _, pos = G.forward_kinematics(rot, rest, parents)
    for j in range(1, 4):
        p = parents[j]
        torch.testing.assert_close((pos[j] - pos[p]).norm(), (rest[j] - rest[p]).norm())
    with pytest.raises(InputError, match="topologically"):
        G.forward_kinematics(eye, rest, [-1, 2, 0, 1])
    with pytest.raises(InputError, match="one entry per joint"):
        G.forward_kinematics(eye, rest, [-1, 0, 1])


# ---------------------------------------------------------------- gaze angles
def test_pitch_yaw_vector_conventions():
    z = torch.zeros(1, dtype=D64)
    torch.testing.assert_close(G.pitch_yaw_to_vector(z, z), torch.tensor([[0.0, 0.0, -1.0]], dtype=D64))
    g = G.pitch_yaw_to_vector(z, torch.full((1,), math.pi / 2, dtype=D64))
    torch.testing.assert_close(g, torch.tensor([[1.0, 0.0, 0.0]], dtype=D64))  # yaw +90: +x
    g = G.pitch_yaw_to_vector(torch.full((1,), math.pi / 2, dtype=D64), z)
    torch.testing.assert_close(g, torch.tensor([[0.0, 1.0, 0.0]], dtype=D64), atol=1e-15, rtol=0)
    pitch = (torch.rand(100, dtype=D64) - 0.5) * 3.0
    yaw = (torch.rand(100, dtype=D64) - 0.5) * 6.2
    v = G.pitch_yaw_to_vector(pitch, yaw)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(100, dtype=D64))
    p2, y2 = G.vector_to_pitch_yaw(3.0 * v)
    torch.testing.assert_close(p2, pitch)
    torch.testing.assert_close(y2, yaw)
    # horizontal flip: (gx, gy, gz) -> (-gx, gy, gz) is yaw -> -yaw
    _, yf = G.vector_to_pitch_yaw(v * torch.tensor([-1.0, 1, 1], dtype=D64))
    torch.testing.assert_close(yf, -yaw)


def test_swing_rotation_stays_a_rotation_near_antiparallel_in_float32():
    """In float32 the old I + [v]x + [v]x^2 / (1 + c) divided by a cancelling 1 + c: 0.002 rad from antiparallel,
    R was far from orthogonal. Rodrigues with a unit axis keeps R orthogonal at every angle."""
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=torch.float64), dim=-1)
    perp = torch.nn.functional.normalize(torch.linalg.cross(a, torch.randn(200, 3, generator=g, dtype=torch.float64),
                                                            dim=-1), dim=-1)
    for off in (1e-2, 2e-3, 1e-4, 0.0):
        b = -a * math.cos(off) + perp * math.sin(off)  # off radians from antiparallel
        R = G.swing_rotation(a.float(), b.float())
        eye = torch.eye(3).expand(R.shape)
        assert float((R.transpose(-1, -2) @ R - eye).abs().max()) < 1e-5, off
        assert float((torch.linalg.det(R) - 1).abs().max()) < 1e-5, off
        assert float(((R @ a.float()[..., None])[..., 0] - b.float()).abs().max()) < 1e-3, off


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_swing_rotation_hits_b_just_outside_the_half_turn_branch(dtype):
    """70 to 10^4 machine epsilons from antiparallel the axis a x b was mostly rounding: R a missed b by far more than
    rounding in float32 and float64 alike (this test fails on that code). The axis from a x (a + b) keeps R a = b to
    rounding."""
    eps = torch.finfo(dtype).eps
    g = torch.Generator().manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=dtype), dim=-1)
    perp = torch.nn.functional.normalize(torch.linalg.cross(a, torch.randn(500, 3, generator=g, dtype=dtype),
                                                            dim=-1), dim=-1)
    for k in (70, 300, 1000, 1e4):
        b = torch.nn.functional.normalize(-a + k * eps * perp, dim=-1)
        R = G.swing_rotation(a, b)
        assert float(((R @ a[..., None])[..., 0] - b).norm(dim=-1).max()) < 50 * eps, k


def test_forward_kinematics_with_integer_rotations_keeps_fractional_rest_positions():
    """Integer local rotations (identity as ints) cast the rest pose to int64: positions silently truncated."""
    rest = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.25, 0.75, 0.0]])
    R = torch.eye(3, dtype=torch.long).expand(3, 3, 3)
    _, pos = G.forward_kinematics(R, rest, [-1, 0, 1])
    _, ref = G.forward_kinematics(R.float(), rest, [-1, 0, 1])
    assert pos.is_floating_point()
    torch.testing.assert_close(pos, ref)
    torch.testing.assert_close(pos, rest)  # identity rotations: the rest pose itself
