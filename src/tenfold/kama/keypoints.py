"""KAMA's 26 body keypoints and their regressor from an SMPL-layout body model.

The 26 points are the first 26 of NVIDIA's 34-keypoint body format (spec 2.1, [S] strong inference).
15 are SMPL joints (torso -> spine1 is our choice [O]); 11 are *landmark vertices* (toes, heels, nose,
eyes, ears) picked from the loaded model by geometric rules [O] (never smplx's vertex ids), with a
JSON override.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from tenfold.core.io import DataError, InputError, check_tensor

__all__ = ["JOINT_OF_KEYPOINT", "KEYPOINT_NAMES", "LANDMARK_NAMES", "NUM_KEYPOINTS", "facing_backwards",
           "landmark_ids", "load_landmark_override", "regress_keypoints", "select_landmarks"]

KEYPOINT_NAMES: list[str] = [
    "pelvis", "left_hip", "right_hip", "torso", "left_knee", "right_knee", "neck", "left_ankle", "right_ankle",
    "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe", "left_heel", "right_heel",
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
]
NUM_KEYPOINTS = 26
K = {n: i for i, n in enumerate(KEYPOINT_NAMES)}

#: keypoint index -> SMPL joint index, for the 15 keypoints that are joints (torso -> spine1 [O]).
JOINT_OF_KEYPOINT: dict[int, int] = {
    K["pelvis"]: 0, K["left_hip"]: 1, K["right_hip"]: 2, K["torso"]: 3, K["left_knee"]: 4, K["right_knee"]: 5,
    K["neck"]: 12, K["left_ankle"]: 7, K["right_ankle"]: 8, K["left_shoulder"]: 16, K["right_shoulder"]: 17,
    K["left_elbow"]: 18, K["right_elbow"]: 19, K["left_wrist"]: 20, K["right_wrist"]: 21,
}
LANDMARK_NAMES: list[str] = [n for i, n in enumerate(KEYPOINT_NAMES) if i not in JOINT_OF_KEYPOINT]


def facing_backwards(X: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: the nose lies behind the neck in the body's own frame (left = left hip - right hip, up = neck -
    pelvis, front = left x up), which no body does: keypoints whose left and right are swapped, or given in a
    mirrored (left-handed) frame. The fit still runs on them and its residual can look fine while the body is
    turned around. On 1,000 random in-limit poses with 25 mm keypoint noise 0.1 % read backwards, and 99.9 % of the
    same bodies swapped or mirrored (``tools/session22_review_figures.py``). False where any of the five keypoints is
    unseen (confidence 0 or not finite).
    """
    idx = [K["pelvis"], K["left_hip"], K["right_hip"], K["neck"], K["nose"]]
    P = X[..., idx, :].double()
    seen = torch.isfinite(P).all(-1).all(-1)
    if conf is not None:
        seen &= (conf[..., idx] > 0).all(-1)
    P = torch.nan_to_num(P, nan=0.0, posinf=0.0, neginf=0.0)
    front = torch.cross(P[..., 1, :] - P[..., 2, :], P[..., 3, :] - P[..., 0, :], dim=-1)
    return seen & (((P[..., 4, :] - P[..., 3, :]) * front).sum(-1) < 0)

# which SMPL joint's skinning weight must dominate each landmark's vertex (spec 2.1)
_HEAD, _L_ANKLE, _R_ANKLE, _L_FOOT, _R_FOOT = 15, 7, 8, 10, 11


def _dominated(model, joint: int) -> torch.Tensor:
    """Ids of vertices whose largest skinning weight is ``joint``'s."""
    ids = (model.weights.argmax(1) == joint).nonzero()[:, 0]
    if ids.numel() == 0:
        raise DataError(f"no vertex is dominated by joint {joint}; pass landmark vertex ids with --landmarks")
    return ids


def select_landmarks(model) -> dict[str, int]:
    """Landmark vertex ids by rules on the rest template (y up, x = body left, z = forward) [O]:
    nose = most forward head vertex; ears = most lateral head vertices within 3 cm of nose height;
    eyes = head vertex nearest nose + (+-3.2, +3.5, -2) cm; heel = most backward among the ankle's
    vertices within 2 cm of its lowest; big/small toe = most forward foot vertex in the medial/lateral
    third of the foot's width."""
    T = model.v_template.double()
    out: dict[str, int] = {}
    head = _dominated(model, _HEAD)
    nose = int(head[T[head, 2].argmax()])
    out["nose"] = nose
    near = head[(T[head, 1] - T[nose, 1]).abs() < 0.03]
    near = near if near.numel() else head
    out["left_ear"] = int(near[T[near, 0].argmax()])
    out["right_ear"] = int(near[T[near, 0].argmin()])
    for side, sx in (("left", 1.0), ("right", -1.0)):
        target = T[nose] + torch.tensor([sx * 0.032, 0.035, -0.02], dtype=T.dtype, device=T.device)
        out[f"{side}_eye"] = int(head[(T[head] - target).norm(dim=1).argmin()])
    for side, ankle, foot, sx in (("left", _L_ANKLE, _L_FOOT, 1.0), ("right", _R_ANKLE, _R_FOOT, -1.0)):
        a = _dominated(model, ankle)
        low = a[T[a, 1] <= T[a, 1].min() + 0.02]
        out[f"{side}_heel"] = int(low[T[low, 2].argmin()])
        f = _dominated(model, foot)
        lat = T[f, 0] * sx                       # grows towards the body's outside
        lo, hi = lat.min(), lat.max()
        third = (hi - lo) / 3
        med = f[lat <= lo + third]
        side_ = f[lat >= hi - third]
        out[f"{side}_big_toe"] = int(med[T[med, 2].argmax()])
        out[f"{side}_small_toe"] = int(side_[T[side_, 2].argmax()])
    return {n: out[n] for n in LANDMARK_NAMES}


def load_landmark_override(path: str | os.PathLike) -> dict[str, int]:
    """A JSON object ``{"nose": 331, ...}`` naming landmark vertex ids (any subset of the 11)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read landmark override {path}: {e}") from None
    # (bool is an int to Python: `true` tied the nose to vertex 1 without a word)
    if not isinstance(data, dict) or not all(k in LANDMARK_NAMES and isinstance(v, int) and not isinstance(v, bool)
                                             for k, v in data.items()):
        raise DataError(f"{path}: expected {{name: vertex id}} with names from {', '.join(LANDMARK_NAMES)}")
    return data


def landmark_ids(model) -> torch.Tensor:
    """(11,) vertex ids of the landmark keypoints, in :data:`LANDMARK_NAMES` order."""
    missing = [n for n in LANDMARK_NAMES if n not in model.landmarks]
    if missing:
        raise DataError(f"body model lacks landmark vertices: {', '.join(missing)}")
    ids = torch.tensor([model.landmarks[n] for n in LANDMARK_NAMES], device=model.v_template.device)
    if int(ids.max()) >= model.num_vertices or int(ids.min()) < 0:
        raise DataError(f"landmark vertex ids must be in [0, {model.num_vertices})")
    return ids


_JOINT_SLOTS = torch.tensor(sorted(JOINT_OF_KEYPOINT))
_JOINT_IDS = torch.tensor([JOINT_OF_KEYPOINT[i] for i in sorted(JOINT_OF_KEYPOINT)])
_LM_SLOTS = torch.tensor([K[n] for n in LANDMARK_NAMES])


def assemble(joints: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """joints (B, 24, 3) and landmark vertices (B, 11, 3) -> the 26 keypoints (B, 26, 3)."""
    out = joints.new_zeros(joints.shape[0], NUM_KEYPOINTS, 3)
    out[:, _JOINT_SLOTS] = joints[:, _JOINT_IDS]
    out[:, _LM_SLOTS] = landmarks
    return out


def regress_keypoints(model, pose: torch.Tensor, betas: torch.Tensor,
                      transl: torch.Tensor | None = None) -> torch.Tensor:
    """The 26 keypoints of a posed body (B, 26, 3): joints from FK, landmarks by skinning only their
    vertices (pose blend shapes included)."""
    out = model(pose, betas, transl, vertex_ids=landmark_ids(model))
    return assemble(out["joints"], out["vertices"])


def rest_keypoints(model, betas: torch.Tensor) -> torch.Tensor:
    """The 26 keypoints on the shaped rest mesh (B, 26, 3), linear in beta."""
    return assemble(model.rest_joints(betas), model.shaped_vertices(betas, landmark_ids(model)))


MAX_SPAN_M = 5.0  # the largest plausible extent of one body's keypoints, in metres
MIN_SPAN_M = 0.05  # the smallest: the largest distance between two seen keypoints of a body (>= 3 seen)


def check_keypoints(keypoints: torch.Tensor, confidence: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary check of user keypoints (B, 26, 3) metres and confidence (B, 26) in [0, 1]."""
    check_tensor(keypoints, "keypoints", ("B", NUM_KEYPOINTS, 3), finite=False)
    if keypoints.shape[0] == 0:  # reached a max() over nothing (a RuntimeError)
        raise InputError("keypoints hold no bodies (shape (0, 26, 3)); pass at least one")
    if not keypoints.is_floating_point():  # integer metres reached torch's norm as a raw dtype error
        keypoints = keypoints.to(torch.get_default_dtype())
    if confidence is None:
        confidence = torch.ones(keypoints.shape[:2], dtype=keypoints.dtype, device=keypoints.device)
    check_tensor(confidence, "confidence", tuple(keypoints.shape[:2]))
    if not confidence.is_floating_point():  # a bool or 0/1 mask
        confidence = confidence.to(keypoints.dtype)
    bad = ~torch.isfinite(keypoints).all(-1) & (confidence > 0)
    if bad.any():  # named: in a 10,000-frame file a count alone does not say where to look
        b, k = (int(i) for i in bad.nonzero()[0])
        raise InputError(f"keypoints hold NaN/Inf at {int(bad.sum())} point(s) with confidence > 0 (first: body "
                         f"{b}, {KEYPOINT_NAMES[k]}); set their confidence to 0 (a (B, 26, 4) .npy carries it "
                         "as a fourth column)")
    if (confidence < 0).any() or (confidence > 1).any():
        raise InputError("confidence must lie in [0, 1]")
    empty = (confidence <= 0).all(-1)
    if empty.any():  # nothing to fit: the shape solve would be singular
        raise InputError(f"body {int(empty.nonzero()[0])} has no keypoint with confidence > 0")
    # unseen points count as 0 (an Inf there, which the message above allows, overflowed the bone lengths to NaN)
    seen = (confidence > 0)[..., None]
    keypoints = torch.where(seen, keypoints, torch.zeros((), dtype=keypoints.dtype, device=keypoints.device))
    big = torch.where(seen, keypoints, float("-inf")).amax(1) - torch.where(seen, keypoints, float("inf")).amin(1)
    span = float(big.clamp_min(0).norm(dim=-1).max())  # the largest body's bounding-box diagonal
    if span > MAX_SPAN_M:  # a person spans about 2 m; centimetres or millimetres fitted "fine" to absurd shapes
        b = int(big.clamp_min(0).norm(dim=-1).argmax())
        # the point farthest from the body's median: one stray point, or every point in the wrong units
        med = torch.where(seen[b], keypoints[b], float("nan")).nanmedian(0).values
        far = torch.where(seen[b, :, 0], (keypoints[b] - med).norm(dim=-1), float("-inf"))
        raise InputError(f"the keypoints of body {b} span {span:.4g} m ({KEYPOINT_NAMES[int(far.argmax())]} lies "
                         f"{float(far.max()):.3g} m from its median point); KAMA takes metres (divide centimetres by "
                         "100, millimetres by 1000), and a stray point needs confidence 0")
    # collapsed bodies (all keypoints at one point, or metres given as kilometres) were fitted silently to a
    # body millimetres tall; with fewer than 3 seen points there is too little to judge
    pair = seen[:, :, None, 0] & seen[:, None, :, 0]                              # (B, 26, 26)
    dist = torch.where(pair, (keypoints[:, :, None] - keypoints[:, None]).norm(dim=-1), 0.0).amax((1, 2))
    small = (dist < MIN_SPAN_M) & (seen[..., 0].sum(1) >= 3)
    if small.any():
        i = int(small.nonzero()[0])
        raise InputError(f"the seen keypoints of body {i} lie within {float(dist[i]) * 100:.2g} cm of each other "
                         f"(a body spans about 1.7 m); they look collapsed or in the wrong units (KAMA takes metres)")
    return keypoints, confidence


def _levels(parents: list[int]) -> list[list[int]]:
    """Joints grouped by depth in the tree (root first), so FK runs one batched step per level."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def _rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3): R = cos(t) I + sin(t) K + (1 - cos(t)) k k^T, k = aa / t, t = sqrt(|aa|^2 + 1e-16)
    (smooth at 0; equal to I + sin(t) K + (1 - cos(t)) K^2 up to O(1e-16)).

    Written so that no tensor constant is added to, or multiplied into, a tensor that carries the pose: the eps
    enters by padding and I through diag_embed. Under forward-mode AD (refine_lm's dual-number Jacobian) each such
    op takes a Python path in this torch (the constant's zero tangent is shaped by a Python meta kernel, and the
    first one imports torch._dynamo: 2.5 s); tests/kama/test_articulate.py checks that a refined fit avoids it."""
    t = F.pad(aa, (0, 1), value=1e-8).pow(2).sum(-1, keepdim=True).sqrt()
    k = aa / t
    z = torch.zeros_like(k[..., 0])
    K = torch.stack([z, -k[..., 2], k[..., 1], k[..., 2], z, -k[..., 0], -k[..., 1], k[..., 0], z], -1)
    K = K.reshape(*aa.shape[:-1], 3, 3)
    c = torch.cos(t)
    kkT = k[..., :, None] * k[..., None, :]
    return torch.diag_embed(c.expand(k.shape)) + torch.sin(t)[..., None] * K + (1 - c)[..., None] * kkT


class KeypointRegressor:
    """The 26 keypoints of a posed body, fast enough to sit inside per-sample optimisers: FK one tree
    level at a time and skinning of the 11 landmark vertices only (same maths as ``BodyModel.forward``)."""

    def __init__(self, model) -> None:
        ids = landmark_ids(model)
        self.parents = model.parents
        self.levels = _levels(model.parents)
        self.order = torch.tensor([j for lev in self.levels for j in lev], device=model.v_template.device)
        self.inv = torch.argsort(self.order)
        self.T, self.S = model.v_template[ids], model.shapedirs[ids]                 # (11, 3), (11, 3, NB)
        cols = (ids[:, None] * 3 + torch.arange(3, device=ids.device)).reshape(-1)
        self.Pd = model.posedirs[:, cols]                                             # (207, 33)
        self.W = model.weights[ids]                                                   # (11, 24)
        # affine in beta, as one product with [beta, 1]: the templates ride in a last column of the shape bases (and
        # the rest pose's blend-shape offset, -vec(I)^T Pd, in the landmarks'), so no constant is added to a tensor
        # that carries beta or the pose (see _rodrigues: forward-mode AD is slow on such adds)
        rest = torch.eye(3, dtype=self.Pd.dtype, device=self.Pd.device).reshape(-1).repeat(self.Pd.shape[0] // 9)
        self.J_aug = torch.cat([model.J_shapedirs, model.J_template[..., None]], -1)  # (24, 3, NB + 1)
        self.S_aug = torch.cat([self.S, (self.T - (rest @ self.Pd).reshape(-1, 3))[..., None]], -1)  # (11, 3, NB+1)

    def __call__(self, aa: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
        """aa (B, 24, 3) axis-angle, betas (B, NB), transl (B, 3) -> keypoints (B, 26, 3)."""
        B = aa.shape[0]
        R = _rodrigues(aa)                                                            # (B, 24, 3, 3)
        b1 = F.pad(betas, (0, 1), value=1.0)                                          # (B, NB + 1): [beta, 1]
        Jr = torch.einsum("jcn,bn->bjc", self.J_aug, b1)                              # (B, 24, 3)
        Gs, ps = [R[:, :1]], [Jr[:, :1]]
        Gfull: dict[int, torch.Tensor] = {0: R[:, 0]}
        pfull: dict[int, torch.Tensor] = {0: Jr[:, 0]}
        for lev in self.levels[1:]:
            par = [self.parents[j] for j in lev]
            Gp = torch.stack([Gfull[q] for q in par], 1)                              # (B, L, 3, 3)
            pp = torch.stack([pfull[q] for q in par], 1)
            G = Gp @ R[:, lev]
            pos = pp + (Gp @ (Jr[:, lev] - Jr[:, par])[..., None])[..., 0]
            for i, j in enumerate(lev):
                Gfull[j], pfull[j] = G[:, i], pos[:, i]
            Gs.append(G)
            ps.append(pos)
        G = torch.cat(Gs, 1)[:, self.inv]                                             # (B, 24, 3, 3)
        p = torch.cat(ps, 1)[:, self.inv]                                             # (B, 24, 3)
        # shaped landmarks + pose blend shapes (R - I) Pd, the -I part folded into S_aug's last column
        v = torch.einsum("vcn,bn->bvc", self.S_aug, b1) + (R[:, 1:].reshape(B, -1) @ self.Pd).reshape(B, -1, 3)
        # v_i = sum_j w_ij (G_j (v_i - J_j) + p_j)
        Gv = torch.einsum("bjrc,bvc->bvjr", G, v) - (G @ Jr[..., None])[..., 0][:, None] + p[:, None]
        lm = torch.einsum("vj,bvjr->bvr", self.W, Gv)
        return assemble(p, lm) + transl[:, None]
