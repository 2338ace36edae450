"""Bad input to KAMA's verbs, config and API: one clear TenfoldError each, never a traceback or a silent answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tenfold.core.io import ConfigError, DataError, InputError
from tenfold.kama.articulate import articulate, fit, noise_prior_weights
from tenfold.kama.config import Config
from tenfold.kama.keypoints import regress_keypoints
from tenfold.kama.procedural import procedural_model, random_betas
from tenfold.kama.verbs import build, read_keypoints, synth

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model32():
    return procedural_model()


@pytest.fixture(scope="module")
def two_bodies(model32):
    b = random_betas(2, generator=torch.Generator().manual_seed(0))
    pose = torch.zeros(2, 24, 3)
    return regress_keypoints(model32, pose, b, torch.tensor([[0.0, 0.0, 3.0], [0.5, 0.0, 3.0]]))


# 1 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", [float("nan"), float("inf"), -1.0])
def test_synth_refuses_non_finite_or_negative_noise(tmp_path, noise):
    with pytest.raises(InputError, match="noise_mm"):
        synth(Config(), tmp_path, bodies=1, noise_mm=noise)
    assert not (tmp_path / "keypoints.npy").exists()


# 2 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("noise_mm", math.nan), ("noise_mm", math.inf), ("noise_mm", -1.0),
    ("w_pose", math.inf), ("w_pose", -1.0), ("w_betas", -1.0), ("w_betas", math.nan),
    ("pose_std", 0.0), ("pose_std", -0.5), ("pose_std", math.inf), ("betas_std", 0.0), ("betas_std", math.nan),
    ("refine_method", "newton"),
])
def test_config_refuses_bad_prior_settings(field, value):
    with pytest.raises(ConfigError, match=field if field != "refine_method" else "refine_method"):
        Config(**{field: value})


def test_config_overrides_go_through_the_checks():
    from tenfold.core.config import apply_overrides

    with pytest.raises(ConfigError, match="noise_mm"):
        apply_overrides(Config(), ["noise_mm=nan"])
    assert apply_overrides(Config(), ["noise_mm=5", "refine_method=lbfgs"]).noise_mm == 5.0


def test_api_refuses_non_finite_prior_settings():
    with pytest.raises(ConfigError, match="noise_mm"):
        noise_prior_weights(float("nan"))
    with pytest.raises(ConfigError, match="w_pose"):
        noise_prior_weights(1.0, w_pose=float("inf"))


# 3 ------------------------------------------------------------------------------------------------
def test_collapsed_keypoints_are_refused_naming_the_body(model32, two_bodies):
    X = two_bodies.clone()
    X[1] = 0.0                                          # every keypoint of body 1 at the origin
    with pytest.raises(InputError, match="body 1"):
        fit(model32, X)
    X[1] = two_bodies[1] * 0.01                         # a 2 cm body (centimetres taken for metres the other way)
    with pytest.raises(InputError, match="body 1"):
        fit(model32, X)
    c = torch.zeros(2, 26)
    c[:, :2] = 1.0                                      # two seen points: too few to judge, fitted as before
    assert torch.isfinite(fit(model32, torch.zeros(2, 26, 3), c)["vertices"]).all()


# 4 ------------------------------------------------------------------------------------------------
def _write(p: Path, data) -> str:
    if p.suffix == ".npy":
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            np.save(p, data)
    else:
        p.write_text(json.dumps(data))
    return str(p)


@pytest.mark.parametrize("name, data, match", [
    ("empty.npy", b"", "keypoint file"),
    ("none.npy", np.zeros((0, 26, 3)), "no bodies"),
    ("str.npy", np.full((26, 3), "a"), "keypoint file"),
    ("conf.json", {"keypoints": np.zeros((26, 3)).tolist(), "confidence": "high"}, "keypoint file"),
    ("ragged.json", [[1, 2], [3]], "keypoint file"),
    ("ragged_kp.json", {"keypoints": [[1, 2, 3], [4, 5]]}, "keypoint file"),
])
def test_bad_keypoint_files_are_one_error_naming_the_file(tmp_path, name, data, match):
    path = _write(tmp_path / name, data)
    with pytest.raises((DataError, InputError), match=match) as e:
        read_keypoints(path)
    assert str(tmp_path / name) in str(e.value)


def test_a_directory_is_called_a_directory(tmp_path):
    d = tmp_path / "kp.npy"
    d.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_keypoints(str(d))
    from tenfold.kama.mocap import bvh_keypoints

    b = tmp_path / "walk.bvh"
    b.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        bvh_keypoints(b)
    from tenfold.kama.body_model import load_body_model

    m = tmp_path / "smpl.npz"
    m.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_body_model(m)


# 5 ------------------------------------------------------------------------------------------------
def test_bvh_without_frames_is_refused(tmp_path):
    from tenfold.kama.mocap import bvh_keypoints

    p = tmp_path / "none.bvh"
    p.write_text("HIERARCHY\nROOT root\n{\n OFFSET 0 0 0\n CHANNELS 3 Xposition Yposition Zposition\n JOINT arm\n {\n"
                 "  OFFSET 1 0 0\n  CHANNELS 3 Zrotation Xrotation Yrotation\n  End Site\n  {\n   OFFSET 0 1 0\n  }\n"
                 " }\n}\nMOTION\nFrames: 0\nFrame Time: 0.5\n")
    with pytest.raises(DataError, match="no frames"):
        bvh_keypoints(p, mapping={"pelvis": "root", "left_hip": "arm", "right_hip": "arm_End"})


# 6 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbagePK\x03\x04garbage"])
def test_unreadable_body_model_npz_is_one_error(tmp_path, content):
    from tenfold.kama.body_model import load_body_model

    p = tmp_path / "smpl.npz"
    p.write_bytes(content)
    with pytest.raises(DataError, match="body model") as e:
        load_body_model(p)
    assert str(p) in str(e.value)


# 7 ------------------------------------------------------------------------------------------------
def test_device_is_checked_before_use():
    with pytest.raises(ConfigError, match="bad device 'foo'"):
        build(Config(device="foo"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            build(Config(device="cuda"))


# 8 ------------------------------------------------------------------------------------------------
def test_api_refuses_an_empty_batch(model32, two_bodies):
    with pytest.raises(InputError, match="no bodies"):
        fit(model32, two_bodies[:0])


@pytest.mark.parametrize("betas, match", [
    (torch.zeros(2, 5), r"betas must have shape \(2, 10\)"),
    (torch.zeros(1, 10), r"betas must have shape \(2, 10\)"),
    (torch.full((2, 10), float("nan")), "betas holds 20 NaN"),
])
def test_api_checks_given_betas(model32, two_bodies, betas, match):
    with pytest.raises(InputError, match=match):
        fit(model32, two_bodies, betas=betas)
    with pytest.raises(InputError, match=match):
        articulate(model32, two_bodies, betas=betas)


def test_fit_without_a_body_model_is_one_line():
    """fit_keypoints(None, X) raised an AttributeError deep inside."""
    from tenfold.core.io import InputError
    from tenfold.kama import fit_keypoints

    with pytest.raises(InputError, match="body model"):
        fit_keypoints(None, torch.zeros(1, 26, 3))


@pytest.mark.parametrize("value", [True, 1.0, "12", None])
def test_a_landmark_override_takes_integer_vertex_ids_only(tmp_path, value):
    """JSON `true` is an int to Python: it tied the nose to vertex 1 without a word."""
    from tenfold.kama.keypoints import load_landmark_override

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"nose": 7}))
    assert load_landmark_override(good) == {"nose": 7}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nose": value}))
    with pytest.raises(DataError, match="expected {name: vertex id}"):
        load_landmark_override(bad)


@pytest.mark.parametrize("w", [float("nan"), -1.0, float("inf")])
def test_the_refinement_anchor_weight_is_checked_by_the_api(model32, two_bodies, w):
    """fit(w_anchor=nan) rejected every LM step and returned the analytic answer without a word; -1 was a raw complex
    jacfwd error (LM) or ignored (L-BFGS)."""
    for method in ("lm", "lbfgs"):
        with pytest.raises(ConfigError, match="w_anchor must be finite and >= 0"):
            fit(model32, two_bodies, refine_iters=2, refine_method=method, w_anchor=w)
