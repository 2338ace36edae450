"""Our own SMPL-layout body model: linear blend skinning with shape and pose blend shapes
(Loper et al., SMPL, SIGGRAPH Asia 2015, Eq. 1-10), written from the equations (no smplx code).

    v_shaped = T + S beta                      (V, 3)      shape blend shapes
    J        = Jreg v_shaped                   (24, 3)     joints from the *shaped* rest mesh
    P(theta) = concat_{j=1..23} vec(R_j - I)   (207,)      pose feature
    v_posed  = v_shaped + Pdirs P(theta)       (V, 3)      pose blend shapes
    G_0 = [R_0 | J_0],  G_j = G_parent(j) [R_j | J_j - J_parent(j)],  G'_j = G_j [I | -J_j]
    v_i      = sum_j w_ij G'_j [v_posed_i; 1] + t

Files: SMPL-layout ``.npz`` (``allow_pickle=False``, only the needed keys) or ``.pkl`` through the
restricted unpickler (arrays, scipy sparse -> dense, ``chumpy.ch.Ch`` -> its array; no code runs).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from tenfold.core.geometry import axis_angle_to_matrix
from tenfold.core.io import DataError, InputError, check_tensor, require_file, restricted_load

__all__ = ["BodyModel", "SMPL_PARENTS", "load_body_model"]

#: SMPL's 24-joint kinematic tree (parent of each joint; the root's is -1).
SMPL_PARENTS: list[int] = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class BodyModel(torch.nn.Module):
    """SMPL-layout linear blend skinning. Buffers keep SMPL's names; ``landmarks`` maps keypoint names
    to vertex ids (the KAMA keypoints that are surface points)."""

    def __init__(self, v_template: torch.Tensor, shapedirs: torch.Tensor, posedirs: torch.Tensor,
                 J_regressor: torch.Tensor, weights: torch.Tensor, parents: list[int], faces: torch.Tensor,
                 landmarks: dict[str, int] | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        V = v_template.shape[0]
        J = len(parents)
        check_tensor(v_template, "v_template", (V, 3))
        check_tensor(shapedirs, "shapedirs", (V, 3, None))
        check_tensor(posedirs, "posedirs", (V, 3, 9 * (J - 1)))
        check_tensor(J_regressor, "J_regressor", (J, V))
        check_tensor(weights, "weights", (V, J))
        check_tensor(faces, "faces", (None, 3))
        if faces.numel() and (faces.is_floating_point() and not bool((faces == faces.round()).all())
                              or int(faces.min()) < 0 or int(faces.max()) >= V):  # were written into OBJ files
            raise InputError(f"faces must be whole vertex indices in [0, {V}), got values from "
                             f"{float(faces.min()):g} to {float(faces.max()):g}")
        if parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents) if j):
            raise DataError("kinematic tree must have root 0 and parents before children (kintree_table)")
        self.parents = list(parents)
        self.landmarks = dict(landmarks or {})
        self.register_buffer("v_template", v_template.to(dtype))                    # (V, 3)
        self.register_buffer("shapedirs", shapedirs.to(dtype))                      # (V, 3, NB)
        self.register_buffer("posedirs", posedirs.to(dtype).reshape(V * 3, -1).T.contiguous())  # (207, 3V)
        self.register_buffer("J_regressor", J_regressor.to(dtype))                  # (J, V)
        self.register_buffer("weights", weights.to(dtype))                          # (V, J)
        self.register_buffer("faces", faces.long())                                 # (F, 3)
        # joints are linear in beta: J(beta) = J_template + J_shapedirs beta
        self.register_buffer("J_template", self.J_regressor @ self.v_template)      # (J, 3)
        self.register_buffer("J_shapedirs", torch.einsum("jv,vcb->jcb", self.J_regressor, self.shapedirs))

    @property
    def num_betas(self) -> int:
        """NB, the number of shape coefficients."""
        return int(self.shapedirs.shape[-1])

    @property
    def num_joints(self) -> int:
        """J (24 for SMPL)."""
        return len(self.parents)

    @property
    def num_vertices(self) -> int:
        """V."""
        return int(self.v_template.shape[0])

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """J(beta) = Jreg (T + S beta): betas (B, NB) -> (B, J, 3)."""
        return self.J_template + torch.einsum("jcb,nb->njc", self.J_shapedirs, betas)

    def shaped_vertices(self, betas: torch.Tensor, vertex_ids: torch.Tensor | None = None) -> torch.Tensor:
        """v_shaped = T + S beta: betas (B, NB) -> (B, V', 3) (all vertices, or ``vertex_ids``)."""
        T, S = self.v_template, self.shapedirs
        if vertex_ids is not None:
            T, S = T[vertex_ids], S[vertex_ids]
        return T + torch.einsum("vcb,nb->nvc", S, betas)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor | None = None,
                vertex_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Posed mesh. pose (B, J, 3) axis-angle or (B, J, 3, 3) local rotations; betas (B, NB);
        transl (B, 3). ``vertex_ids`` (K,) skins only those vertices (cheap keypoint evaluation).
        Returns vertices (B, V', 3), joints (B, J, 3) posed, G (B, J, 4, 4) global transforms."""
        R = self._rotations(pose)                                      # (B, J, 3, 3)
        B = R.shape[0]
        check_tensor(betas, "betas", (B, self.num_betas))
        dt = self.v_template.dtype
        R, betas = R.to(dt), betas.to(dt)
        Jr = self.rest_joints(betas)                                   # (B, J, 3)
        v_shaped = self.shaped_vertices(betas, vertex_ids)             # (B, V', 3)
        eye = torch.eye(3, dtype=dt, device=R.device)
        P = (R[:, 1:] - eye).reshape(B, -1)                            # (B, 207)  P(theta)
        pdirs = self.posedirs
        if vertex_ids is not None:
            cols = (vertex_ids[:, None] * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
            pdirs = pdirs[:, cols]
        v_posed = v_shaped + (P @ pdirs).reshape(B, -1, 3)             # (B, V', 3)
        G = self.global_transforms(R, Jr)                              # (B, J, 4, 4)
        # G'_j = G_j [I | -J_j]: translation part becomes p_j - G_j^R J_j
        A = G.clone()
        A[..., :3, 3] = G[..., :3, 3] - (G[..., :3, :3] @ Jr[..., None])[..., 0]
        w = self.weights if vertex_ids is None else self.weights[vertex_ids]    # (V', J)
        T = torch.einsum("vj,bjrc->bvrc", w, A)                        # (B, V', 4, 4) blended transforms
        verts = (T[..., :3, :3] @ v_posed[..., None])[..., 0] + T[..., :3, 3]
        joints = G[..., :3, 3]
        if transl is not None:
            check_tensor(transl, "transl", (B, 3))
            verts = verts + transl.to(dt)[:, None]
            joints = joints + transl.to(dt)[:, None]
        return {"vertices": verts, "joints": joints, "G": G}

    def global_transforms(self, R: torch.Tensor, Jr: torch.Tensor) -> torch.Tensor:
        """G_j = G_parent [R_j | J_j - J_parent] (Eq. 4): R (B, J, 3, 3), Jr (B, J, 3) -> (B, J, 4, 4)."""
        B, J = R.shape[:2]
        G_rot = [R[:, 0]]
        G_pos = [Jr[:, 0]]
        for j in range(1, J):
            p = self.parents[j]
            G_rot.append(G_rot[p] @ R[:, j])
            G_pos.append(G_pos[p] + (G_rot[p] @ (Jr[:, j] - Jr[:, p])[..., None])[..., 0])
        G = torch.zeros(B, J, 4, 4, dtype=R.dtype, device=R.device)
        G[..., :3, :3] = torch.stack(G_rot, 1)
        G[..., :3, 3] = torch.stack(G_pos, 1)
        G[..., 3, 3] = 1.0
        return G

    def _rotations(self, pose: torch.Tensor) -> torch.Tensor:
        J = self.num_joints
        if pose.dim() == 3:
            check_tensor(pose, "pose", ("B", J, 3))
            return axis_angle_to_matrix(pose)
        check_tensor(pose, "pose", ("B", J, 3, 3))
        return pose


def _dense(a: object, key: str) -> np.ndarray:
    """scipy sparse (J_regressor in SMPL pickles) or array-like -> dense float/int ndarray."""
    if hasattr(a, "toarray"):
        a = a.toarray()
    arr = np.asarray(a)
    if arr.dtype == object:
        raise DataError(f"SMPL array '{key}' holds Python objects, not numbers; convert the file to .npz")
    return arr


def arrays_to_model(arrays: dict[str, np.ndarray], landmarks: dict[str, int] | None = None,
                    dtype: torch.dtype = torch.float32, source: str = "arrays") -> BodyModel:
    """Build a :class:`BodyModel` from SMPL-named arrays (checks keys, shapes and the tree)."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{source} is not an SMPL-layout model: missing {', '.join(missing)}")
    a = {k: _dense(arrays[k], k) for k in REQUIRED_KEYS}
    kt = a["kintree_table"].astype(np.int64)
    if kt.ndim != 2 or kt.shape[0] != 2:
        raise DataError(f"{source}: kintree_table must be (2, J), got {kt.shape}")
    ids = kt[1].tolist()
    pos = {j: i for i, j in enumerate(ids)}
    parents = [-1 if i == 0 else pos.get(int(kt[0, i]) if kt[0, i] < 2**31 else -1, -2) for i in range(kt.shape[1])]
    if ids != list(range(len(ids))) or -2 in parents:
        raise DataError(f"{source}: kintree_table has unexpected joint ids")
    if parents != SMPL_PARENTS:  # SMPL-H / SMPL-X (52 / 55 joints) failed later with an IndexError, and a
        # 24-joint tree in another order would have been fitted with the wrong joint meanings
        raise DataError(f"{source}: KAMA articulates SMPL's 24-joint tree; this model has {len(parents)} joints"
                        + ("" if len(parents) != 24 else " in another order")
                        + " (for SMPL-H / SMPL-X, export the SMPL body joints first)")
    shapedirs = a["shapedirs"]
    if shapedirs.ndim == 2:
        shapedirs = shapedirs[:, :, None]
    try:
        return BodyModel(*(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64)) for x in (
            a["v_template"], shapedirs, a["posedirs"], a["J_regressor"], a["weights"])),
            parents=parents, faces=torch.as_tensor(a["f"].astype(np.float64)), landmarks=landmarks, dtype=dtype)
    except InputError as e:
        raise DataError(f"{source}: {e}") from None


def load_body_model(path: str | os.PathLike, landmarks: dict[str, int] | None = None,
                    dtype: torch.dtype = torch.float32) -> BodyModel:
    """Load an SMPL-layout ``.npz`` or ``.pkl`` safely (no code execution). Landmark vertices are
    chosen by rules (see :mod:`tenfold.kama.keypoints`) unless ``landmarks`` overrides them."""
    from tenfold.kama.keypoints import LANDMARK_NAMES, select_landmarks

    p = require_file(path, "body model file",
                     "SMPL files do not ship; pass --body-model procedural for "
                     "the synthetic model")
    if p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in REQUIRED_KEYS if k in z.files}
                stored = {k: int(z[f"landmark_{k}"]) for k in LANDMARK_NAMES if f"landmark_{k}" in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # empty: EOFError; not a zip: BadZipFile
            raise DataError(f"corrupt body model {p}: {e or type(e).__name__}".splitlines()[0]) from None
    elif p.suffix == ".pkl":
        data = restricted_load(p, "body model pickle", allow_chumpy=True)
        if not isinstance(data, dict):
            raise DataError(f"{p} does not hold a dict of SMPL arrays")
        arrays, stored = data, {}
    else:
        raise DataError(f"body model must be .npz or .pkl, got {Path(p).name}")
    model = arrays_to_model(arrays, None, dtype, str(p))
    lm = select_landmarks(model)
    lm.update(stored)
    lm.update(landmarks or {})
    model.landmarks = lm
    return model
