"""Body-model layer: LBS against a naive per-vertex loop, the fast keypoint path, safe file loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tenfold.core.geometry import axis_angle_to_matrix
from tenfold.core.io import DataError
from tenfold.kama.body_model import SMPL_PARENTS, load_body_model
from tenfold.kama.keypoints import KeypointRegressor, regress_keypoints, select_landmarks
from tenfold.kama.procedural import procedural_arrays, procedural_model, write_model_file


@pytest.fixture(scope="module")
def model64():
    return procedural_model(dtype=torch.float64)


def naive_lbs(arr: dict, pose: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """The SMPL equations, one vertex and one joint at a time (float64 numpy)."""
    T, S, Pd, Jreg, W = arr["v_template"], arr["shapedirs"], arr["posedirs"], arr["J_regressor"], arr["weights"]
    V = T.shape[0]
    R = axis_angle_to_matrix(torch.as_tensor(pose)).numpy()
    v_shaped = np.array([T[i] + S[i] @ betas for i in range(V)])
    J = Jreg @ v_shaped
    feat = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, 24)])
    v_posed = np.array([v_shaped[i] + Pd[i] @ feat for i in range(V)])
    G = [None] * 24
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = J[j] if j == 0 else J[j] - J[SMPL_PARENTS[j]]
        G[j] = local if j == 0 else G[SMPL_PARENTS[j]] @ local
    A = []
    for j in range(24):
        off = np.eye(4)
        off[:3, 3] = -J[j]
        A.append(G[j] @ off)
    out = np.zeros((V, 3))
    for i in range(V):
        M = sum(W[i, j] * A[j] for j in range(24))
        out[i] = (M @ np.append(v_posed[i], 1.0))[:3] + transl
    return out


def test_lbs_matches_naive_loop():
    arr, _ = procedural_arrays(0)
    model = procedural_model(dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    pose = torch.randn(2, 24, 3, generator=g, dtype=torch.float64) * 0.5
    betas = torch.randn(2, 10, generator=g, dtype=torch.float64)
    transl = torch.randn(2, 3, generator=g, dtype=torch.float64)
    out = model(pose, betas, transl)["vertices"]
    for b in range(2):
        ref = naive_lbs(arr, pose[b].numpy(), betas[b].numpy(), transl[b].numpy())
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-10)


def test_joints_are_ring_means_and_rest_pose_is_template(model64):
    betas = torch.randn(3, 10, dtype=torch.float64)
    out = model64(torch.zeros(3, 24, 3, dtype=torch.float64), betas)
    torch.testing.assert_close(out["vertices"], model64.shaped_vertices(betas))
    torch.testing.assert_close(out["joints"], model64.rest_joints(betas))


def test_fast_keypoints_match_full_model(model64):
    g = torch.Generator().manual_seed(1)
    pose = torch.randn(4, 24, 3, generator=g, dtype=torch.float64)
    betas = torch.randn(4, 10, generator=g, dtype=torch.float64)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    full = model64(pose, betas, t)
    kp = regress_keypoints(model64, pose, betas, t)
    torch.testing.assert_close(KeypointRegressor(model64)(pose, betas, t), kp, atol=1e-12, rtol=0)
    assert torch.allclose(kp[:, 0], full["joints"][:, 0]) and torch.allclose(kp[:, 15], full["vertices"][:,
                          model64.landmarks["nose"]])


def test_fast_keypoints_gradcheck(model64):
    f = KeypointRegressor(model64)
    aa = (torch.randn(1, 24, 3, dtype=torch.float64) * 0.4).requires_grad_(True)
    b = torch.randn(1, 10, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, bb, tt: f(a, bb, tt)[:, [0, 7, 15, 24]], (aa, b, t))


def test_landmark_rules_pick_the_planted_vertices(model64):
    assert select_landmarks(model64) == model64.landmarks


@pytest.mark.parametrize("suffix,chumpy", [(".npz", False), (".pkl", False), (".pkl", True)])
def test_files_round_trip(tmp_path, model64, suffix, chumpy):
    arr, _ = procedural_arrays(0)
    path = write_model_file(tmp_path / f"model{suffix}", arr, chumpy=chumpy)
    loaded = load_body_model(path, dtype=torch.float64)
    pose = torch.randn(2, 24, 3, dtype=torch.float64) * 0.3
    betas = torch.randn(2, 10, dtype=torch.float64)
    torch.testing.assert_close(loaded(pose, betas)["vertices"], model64(pose, betas)["vertices"])
    assert loaded.landmarks == model64.landmarks      # chosen again by the rules


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_SMPL_PICKLE",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    import pickle

    monkeypatch.chdir(tmp_path)
    arr, _ = procedural_arrays(0)
    data = dict(arr, bs_style=_Evil())
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(DataError, match="refusing"):
        load_body_model(tmp_path / "evil.pkl")
    assert not (tmp_path / "PWNED_BY_SMPL_PICKLE").exists()


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_body_model(tmp_path / "nope.npz")
    arr, _ = procedural_arrays(0)
    del arr["weights"]
    np.savez(tmp_path / "partial.npz", **arr)
    with pytest.raises(DataError, match="missing weights"):
        load_body_model(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_body_model(tmp_path / "junk.npz")


def test_a_model_with_another_joint_tree_is_refused(tmp_path):
    """KAMA's steps name SMPL's 24 joints: a 52-joint (SMPL-H-like) tree failed later with an IndexError, and a
    24-joint tree in another order would have been fitted with the wrong joint meanings; both are refused."""
    arr, _ = procedural_arrays(0)
    kt = arr["kintree_table"]
    extra = 28  # hand joints hanging off the wrists, as SMPL-H adds them
    parents = np.concatenate([kt[0], np.repeat([20, 21], extra // 2)])
    big = dict(arr, kintree_table=np.stack([parents, np.arange(24 + extra)]),
               J_regressor=np.concatenate([arr["J_regressor"], arr["J_regressor"][:extra]]),
               weights=np.concatenate([arr["weights"], np.zeros((arr["weights"].shape[0], extra))], 1))
    np.savez(tmp_path / "smplh.npz", **big)
    with pytest.raises(DataError, match="SMPL's 24-joint tree; this model has 52 joints"):
        load_body_model(tmp_path / "smplh.npz")
    swapped = kt.copy()
    swapped[0, 13] = 6  # collar hangs off spine2 instead of spine3: a 24-joint tree, not SMPL's
    np.savez(tmp_path / "other.npz", **dict(arr, kintree_table=swapped))
    with pytest.raises(DataError, match="24 joints in another order"):
        load_body_model(tmp_path / "other.npz")
    assert load_body_model(write_model_file(tmp_path / "ok.npz", arr)).num_joints == 24
