"""SYNTHETIC: a procedural SMPL-layout body model for tests and the demo (spec 2.2 [O]).

Not a scan and not SMPL: a seeded stick-figure mesh with SMPL's array names, shapes and 24-joint
tree. Each joint has a ring of 8 vertices whose mean is the joint (so ``J_regressor`` is exact), each
bone a tube of 3 rings skinned to its parent joint (the joint ring is blended 50/50 with the parent),
leaf tubes for the head top, hand tips and toes, and 11 explicit landmark vertices (toes, heels,
nose, eyes, ears) placed so that the landmark rules of :mod:`tenfold.kama.keypoints` pick them.
Ten readable shape directions: 0 size, 1 leg length, 2 arm length, 3 torso length, 4 shoulder width,
5 hip width, 6 girth, 7-9 random bone-length changes. Pose blend shapes are small and random.
Every vertex is an affine function of the joints and radii, both linear in beta, so ``shapedirs``
are exact. About 1k vertices, built in milliseconds from a seed.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from tenfold.kama.body_model import SMPL_PARENTS, BodyModel, arrays_to_model

__all__ = ["procedural_arrays", "procedural_model", "random_betas", "random_pose", "write_model_file"]

# rest joints, metres; y up, x = body left, z = forward (SMPL's frame)
_J0 = np.array([
    [0.0, 0.0, 0.0], [0.08, -0.08, 0.0], [-0.08, -0.08, 0.0], [0.0, 0.11, -0.02],        # 0-3
    [0.08, -0.46, 0.005], [-0.08, -0.46, 0.005], [0.0, 0.24, -0.01],                      # 4-6
    [0.08, -0.87, -0.02], [-0.08, -0.87, -0.02], [0.0, 0.30, 0.0],                        # 7-9
    [0.09, -0.92, 0.10], [-0.09, -0.92, 0.10], [0.0, 0.52, -0.02],                        # 10-12
    [0.07, 0.43, -0.02], [-0.07, 0.43, -0.02], [0.0, 0.60, 0.02],                         # 13-15
    [0.17, 0.45, -0.02], [-0.17, 0.45, -0.02], [0.43, 0.45, -0.03], [-0.43, 0.45, -0.03],  # 16-19
    [0.68, 0.45, -0.02], [-0.68, 0.45, -0.02], [0.77, 0.45, -0.02], [-0.77, 0.45, -0.02],  # 20-23
])
_R0 = np.array([0.12, 0.08, 0.08, 0.12, 0.055, 0.055, 0.13, 0.04, 0.04, 0.13, 0.03, 0.03, 0.05,
                0.05, 0.05, 0.09, 0.05, 0.05, 0.04, 0.04, 0.03, 0.03, 0.03, 0.03])
# leaf tubes: (anchor joint, offset of the tip from it)
_LEAVES = [(15, (0.0, 0.13, 0.0)), (22, (0.07, 0.0, 0.0)), (23, (-0.07, 0.0, 0.0)),
           (10, (0.0, -0.01, 0.05)), (11, (0.0, -0.01, 0.05))]
# landmarks: name -> (skinning joint, offset from it); toes/heels per side (sx = +1 left, -1 right)
_LANDMARKS: dict[str, tuple[int, tuple[float, float, float]]] = {
    "left_big_toe": (10, (-0.02, -0.015, 0.08)), "right_big_toe": (11, (0.02, -0.015, 0.08)),
    "left_small_toe": (10, (0.035, -0.015, 0.065)), "right_small_toe": (11, (-0.035, -0.015, 0.065)),
    "left_heel": (7, (0.0, -0.085, -0.06)), "right_heel": (8, (0.0, -0.085, -0.06)),
    "nose": (15, (0.0, 0.02, 0.12)),
    "left_eye": (15, (0.032, 0.055, 0.10)), "right_eye": (15, (-0.032, 0.055, 0.10)),
    "left_ear": (15, (0.10, 0.02, -0.01)), "right_ear": (15, (-0.10, 0.02, -0.01)),
}
NUM_BETAS = 10
_N_RING = 8
_SIZE, _GIRTH = 0.06, 0.15       # per unit beta: 6 % overall scale, 15 % girth


def _joint_shape_dirs(rng: np.random.Generator) -> np.ndarray:
    """dJ/dbeta (10, 24, 3): how each shape coefficient moves the rest joints."""
    P = SMPL_PARENTS
    D = np.zeros((NUM_BETAS, 24, 3))
    D[0] = _SIZE * _J0                                          # 0 size (about the pelvis at the origin)

    def lengthen(k: int, chain: list[int], rel: float) -> None:
        for j in chain:                                         # scale each bone of the chain by rel
            D[k, j] = D[k, P[j]] + rel * (_J0[j] - _J0[P[j]])
    for knee, ankle, foot in ((4, 7, 10), (5, 8, 11)):
        lengthen(1, [knee, ankle], 0.10)                        # 1 leg length
        D[1, foot] = D[1, ankle]
    for elbow, wrist, hand in ((18, 20, 22), (19, 21, 23)):
        lengthen(2, [elbow, wrist], 0.10)                       # 2 arm length
        D[2, hand] = D[2, wrist]
    up = {6: 0.02, 9: 0.03}                                     # 3 torso length: upper body moves up
    for j in range(24):
        if j in up:
            D[3, j, 1] = up[j]
        elif j >= 12 or j in (13, 14):
            D[3, j, 1] = 0.04
    for j, s in ((13, 0.01), (14, -0.01)):                      # 4 shoulder width
        D[4, j, 0] = s
    for j in (16, 18, 20, 22):
        D[4, j, 0] = 0.03
    for j in (17, 19, 21, 23):
        D[4, j, 0] = -0.03
    for j in (1, 4, 7, 10):                                     # 5 hip width: the whole leg moves out
        D[5, j, 0] = 0.02
    for j in (2, 5, 8, 11):
        D[5, j, 0] = -0.02
    # 6 girth moves no joint; 7-9: random bone-length changes (bones keep their directions)
    for k in (7, 8, 9):
        rel = rng.normal(0.0, 0.04, 24)
        for j in range(1, 24):
            D[k, j] = D[k, P[j]] + rel[j] * (_J0[j] - _J0[P[j]])
    return D


def _ring_dirs(d: np.ndarray) -> np.ndarray:
    """(8, 3) unit vectors around direction d (they sum to zero)."""
    d = d / np.linalg.norm(d)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    ang = 2 * math.pi * np.arange(_N_RING) / _N_RING
    return np.cos(ang)[:, None] * e1 + np.sin(ang)[:, None] * e2


def procedural_arrays(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """SYNTHETIC SMPL-layout arrays (v_template, shapedirs, posedirs, J_regressor, weights,
    kintree_table, f) and the landmark vertex ids, from a seed."""
    rng = np.random.default_rng(seed)
    P = SMPL_PARENTS
    DJ = _joint_shape_dirs(rng)                                  # (10, 24, 3)
    # every vertex: v(beta) = sum_j c_j J_j(beta) + r(beta) * rho, r(beta) = r0 (1 + size b0 + girth b6)
    combos: list[tuple[dict[int, float], float, np.ndarray, dict[int, float], dict[int, float] | None]] = []
    # (joint coefficients, radius, radial unit vector, skinning weights, landmark offset-anchor)
    ring_of: dict[int, list[int]] = {}

    def add(coef: dict[int, float], r: float, rho: np.ndarray, w: dict[int, float]) -> int:
        combos.append((coef, r, rho, w, None))
        return len(combos) - 1

    bone_dir = {j: _J0[j] - _J0[P[j]] for j in range(1, 24)}
    bone_dir[0] = _J0[3] - _J0[0]
    for j in range(24):                                          # joint rings, mean = joint
        w = {j: 1.0} if j == 0 else {P[j]: 0.5, j: 0.5}
        ring_of[j] = [add({j: 1.0}, _R0[j], rho, w) for rho in _ring_dirs(bone_dir[j])]
    faces: list[tuple[int, int, int]] = []

    def strip(a: list[int], b: list[int]) -> None:
        for k in range(_N_RING):
            k2 = (k + 1) % _N_RING
            faces.extend([(a[k], b[k], b[k2]), (a[k], b[k2], a[k2])])
    for c in range(1, 24):                                       # bone tubes, skinned to the parent
        p = P[c]
        prev = ring_of[p]
        for a in (0.25, 0.5, 0.75):
            r = (1 - a) * _R0[p] + a * _R0[c]
            sec = [add({p: 1 - a, c: a}, r, rho, {p: 1.0}) for rho in _ring_dirs(bone_dir[c])]
            strip(prev, sec)
            prev = sec
        strip(prev, ring_of[c])
    landmark_combos: list[tuple[int, np.ndarray, int]] = []      # (vertex, offset, joint)
    verts_extra: list[tuple[int, np.ndarray, float, np.ndarray, int]] = []  # leaves: anchor, tip, r, rho, idx
    for anchor, off in _LEAVES:                                  # leaf tubes (tip moves with the anchor)
        off = np.array(off)
        prev = ring_of[anchor]
        for a in (1 / 3, 2 / 3, 1.0):
            r = _R0[anchor] * (1 - 0.5 * a)
            sec = []
            for rho in _ring_dirs(off):
                sec.append(add({anchor: 1.0}, r, rho, {anchor: 1.0}))
                verts_extra.append((anchor, a * off, r, rho, sec[-1]))
            strip(prev, sec)
            prev = sec
    landmarks: dict[str, int] = {}
    for name, (joint, off) in _LANDMARKS.items():
        idx = add({joint: 1.0}, 0.0, np.zeros(3), {joint: 1.0})
        landmark_combos.append((idx, np.array(off), joint))
        landmarks[name] = idx
    V = len(combos)
    offset = np.zeros((V, 3))                                    # size-scaled offsets (leaves, landmarks)
    for _anchor, off, _r, _rho, idx in verts_extra:
        offset[idx] = off
    for idx, off, _j in landmark_combos:
        offset[idx] = off

    def vertices(Jb: np.ndarray, size: float, girth: float) -> np.ndarray:
        v = np.zeros((V, 3))
        for i, (coef, r, rho, _w, _) in enumerate(combos):
            v[i] = sum(c * Jb[j] for j, c in coef.items()) + r * (1 + size * _SIZE + girth * _GIRTH) * rho
        return v + offset * (1 + size * _SIZE)

    T = vertices(_J0, 0.0, 0.0)
    shapedirs = np.zeros((V, 3, NUM_BETAS))
    for k in range(NUM_BETAS):                                   # exact: v is linear in beta
        shapedirs[:, :, k] = vertices(_J0 + DJ[k], float(k == 0), float(k == 6)) - T
    weights = np.zeros((V, 24))
    for i, (_c, _r, _rho, w, _) in enumerate(combos):
        for j, val in w.items():
            weights[i, j] = val
    J_regressor = np.zeros((24, V))
    for j, ids in ring_of.items():
        J_regressor[j, ids] = 1.0 / _N_RING
    posedirs = rng.normal(0.0, 1e-3, (V, 3, 207))                # small random pose blend shapes (metres)
    kintree = np.array([[4294967295] + P[1:], list(range(24))], dtype=np.int64)
    arrays = {"v_template": T, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": J_regressor,
              "weights": weights, "kintree_table": kintree, "f": np.array(faces, dtype=np.int64)}
    return arrays, landmarks


def procedural_model(seed: int = 0, dtype: torch.dtype = torch.float32, pose_blendshapes: bool = True) -> BodyModel:
    """SYNTHETIC: the procedural SMPL-layout :class:`BodyModel` (landmarks set), from a seed."""
    arrays, landmarks = procedural_arrays(seed)
    if not pose_blendshapes:
        arrays["posedirs"] = np.zeros_like(arrays["posedirs"])
    return arrays_to_model(arrays, landmarks, dtype, source=f"procedural(seed={seed})")


def write_model_file(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, chumpy: bool = False) -> Path:
    """Write SMPL-layout arrays as ``.npz`` or as an SMPL-style ``.pkl`` (Python-2 protocol 2,
    ``J_regressor`` as scipy csc; ``chumpy=True`` wraps ``shapedirs`` in a fake ``chumpy.ch.Ch``, as
    the official files do, through a throw-away module that is removed again)."""
    import scipy.sparse

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".npz":
        np.savez(p, **arrays)
        return p
    data = dict(arrays)
    data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    data["kintree_table"] = arrays["kintree_table"].astype(np.uint32)
    if not chumpy:
        p.write_bytes(pickle.dumps(data, protocol=2))
        return p
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch, pkg.ch = Ch, mod
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        data["shapedirs"] = Ch(arrays["shapedirs"])
        p.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for k, v in saved.items():
            if v is None:
                del sys.modules[k]
            else:
                sys.modules[k] = v
    return p


# --------------------------------------------------------------------------------------------
# Random in-limits poses and shapes (SYNTHETIC test and benchmark bodies)
# --------------------------------------------------------------------------------------------
# per-joint axis-angle box (radians) in the joint's local frame; knees/elbows are hinges (below)
_BOX = {1: (1.0, 0.4, 0.5), 2: (1.0, 0.4, 0.5), 3: (0.25, 0.2, 0.15), 6: (0.2, 0.15, 0.1), 9: (0.2, 0.15, 0.1),
        7: (0.4, 0.25, 0.25), 8: (0.4, 0.25, 0.25), 12: (0.3, 0.3, 0.15), 15: (0.3, 0.3, 0.15),
        13: (0.1, 0.15, 0.15), 14: (0.1, 0.15, 0.15), 16: (0.8, 0.9, 0.8), 17: (0.8, 0.9, 0.8),
        20: (0.5, 0.4, 0.4), 21: (0.5, 0.4, 0.4)}
_HIP_FLEX = -0.6      # hips centred on a forward flexion (negative x rotation lifts the thigh forward)


def random_pose(n: int, hinge_axes: torch.Tensor, generator: torch.Generator | None = None,
                matched: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SYNTHETIC: (n, 24, 3) axis-angle poses within simple joint limits: a random root rotation,
    per-joint boxes, knees and elbows flexing 0-2 rad about their hinge axes ``hinge_axes`` (4, 3)
    (L knee, R knee, L elbow, R elbow), feet and hands at rest. ``matched=True`` makes the pose obey
    the analytic fit's assumptions (spine and neck/head rotations split evenly, collars and wrists
    at rest), so a noise-free fit is exact."""
    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1
    pose = torch.zeros(n, 24, 3, dtype=dtype)
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    from tenfold.core.geometry import matrix_to_axis_angle, quaternion_to_matrix
    pose[:, 0] = matrix_to_axis_angle(quaternion_to_matrix(q))
    for j, box in _BOX.items():
        pose[:, j] = u(n, 3) * torch.tensor(box, dtype=dtype)
    pose[:, [1, 2], 0] += _HIP_FLEX
    for k, j in enumerate((4, 5, 18, 19)):
        pose[:, j] = (torch.rand(n, 1, generator=generator, dtype=dtype) * 2.0) * hinge_axes[k].to(dtype)
    if matched:
        pose[:, 6] = pose[:, 3]
        pose[:, 9] = pose[:, 3]
        pose[:, 15] = pose[:, 12]
        pose[:, [13, 14, 20, 21]] = 0.0
    return pose


def random_betas(n: int, num_betas: int = NUM_BETAS, generator: torch.Generator | None = None,
                 scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SYNTHETIC: shape coefficients uniform in [-scale, scale]^num_betas."""
    return (torch.rand(n, num_betas, generator=generator, dtype=dtype) * 2 - 1) * scale
