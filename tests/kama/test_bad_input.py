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


# session 27: a new user's walkthrough --------------------------------------------------------------------------
def test_walkthrough_files_run_dirs_and_seeds_are_one_line_errors_or_work(tmp_path, two_bodies):
    """An .npz under a .npy name, a JSON with both a fourth column and a confidence entry, and a negative seed were
    a traceback or a silently dropped entry; a verb called with a str run_dir that does not exist yet crashed."""
    X = two_bodies.numpy()
    np.savez(tmp_path / "z.npz", X)
    (tmp_path / "z.npy").write_bytes((tmp_path / "z.npz").read_bytes())
    with pytest.raises(DataError, match=r"z.npy is an .npz archive, not one .npy array"):
        read_keypoints(str(tmp_path / "z.npy"))
    four = np.concatenate([X, np.ones(X.shape[:2] + (1,))], -1)
    both = {"keypoints": four.tolist(), "confidence": np.ones(X.shape[:2]).tolist()}
    (tmp_path / "k.json").write_text(json.dumps(both))
    with pytest.raises(InputError, match="a fourth \\(confidence\\) column and a 'confidence' entry too"):
        read_keypoints(str(tmp_path / "k.json"))
    for seed in (-1, 2**64):
        with pytest.raises(ConfigError, match="seed must be a whole number"):
            Config(seed=seed)
    np.save(tmp_path / "k.npy", X)
    from tenfold.kama.verbs import fit as fit_verb

    out = fit_verb(Config(refine_iters=0), str(tmp_path / "new" / "run"), keypoints=str(tmp_path / "k.npy"))
    assert out["bodies"] == 2 and (tmp_path / "new" / "run" / "params.npz").is_file()


def test_synth_uses_the_configs_body_model_and_says_how_to_fit_it(tmp_path):
    """synth drew procedural bodies whatever --set body_model named: its truth then belonged to another model."""
    from tenfold.kama.body_model import load_body_model
    from tenfold.kama.procedural import procedural_arrays, write_model_file

    arrays, _ = procedural_arrays(seed=3)
    path = write_model_file(tmp_path / "other.npz", arrays)
    out = synth(Config(body_model=str(path)), tmp_path / "s", bodies=2)
    truth = np.load(tmp_path / "s" / "truth.npz")
    kp = regress_keypoints(load_body_model(path), *(torch.as_tensor(truth[k]) for k in ("pose", "betas", "transl")))
    np.testing.assert_allclose(np.load(tmp_path / "s" / "keypoints.npy"), kp.numpy(), atol=1e-6)
    assert str(truth["body_model"]) == str(path) and out["fit_with"].endswith(f"--set body_model={path}")
    out = synth(Config(seed=5), tmp_path / "p", bodies=1)
    assert out["fit_with"].endswith("--set seed=5") and int(np.load(tmp_path / "p" / "truth.npz")["seed"]) == 5
    if not torch.cuda.is_available():  # the paper preset's device: synth draws on the CPU whatever it names
        assert synth(Config(device="cuda"), tmp_path / "c", bodies=1)["bodies"] == 1


def test_faces_out_of_range_or_fractional_are_refused():
    """A face table with vertex ids past the mesh, negative or fractional was written into the OBJ files."""
    from tenfold.kama.body_model import arrays_to_model
    from tenfold.kama.procedural import procedural_arrays

    arrays, _ = procedural_arrays()
    V = arrays["v_template"].shape[0]
    for bad in (V, -5, 0.5):
        f = arrays["f"].astype(np.float64)
        f[0, 0] = bad
        with pytest.raises(DataError, match=f"faces must be whole vertex indices in \\[0, {V}\\)"):
            arrays_to_model({**arrays, "f": f})
    assert arrays_to_model(arrays).faces.shape == arrays["f"].shape


def test_keypoint_checks_name_the_body_and_point_and_take_integer_masks(model32, two_bodies):
    """The NaN and span errors named neither body nor keypoint; integer keypoints and bool masks were raw torch
    errors; two seen keypoints at the very same point (a missing one written as zeros) passed without a word."""
    import warnings

    from tenfold.core.io import TenfoldWarning
    from tenfold.kama.keypoints import KEYPOINT_NAMES, check_keypoints

    X = two_bodies.clone()
    X[1, 7] = float("nan")
    with pytest.raises(InputError, match=f"first: body 1, {KEYPOINT_NAMES[7]}\\); set their confidence to 0"):
        check_keypoints(X, None)
    X = two_bodies.clone()
    X[1, 4, 0] += 6.0  # one stray point 6 m off
    with pytest.raises(InputError, match=f"keypoints of body 1 span .*\\({KEYPOINT_NAMES[4]} lies 6"):
        check_keypoints(X, None)
    with pytest.raises(InputError, match="span .* m .*millimetres by 1000"):
        check_keypoints((two_bodies * 1000).long(), None)  # integer millimetres: the units, not a dtype error
    grid = torch.randint(0, 3, (1, 26, 3), generator=torch.Generator().manual_seed(0))  # whole metres, 3.5 m span
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TenfoldWarning)  # some grid points coincide
        k, _ = check_keypoints(grid, None)
    assert k.dtype == torch.get_default_dtype() and torch.equal(k, grid.to(k.dtype))
    _, c = check_keypoints(two_bodies, torch.ones(2, 26, dtype=torch.bool))
    assert c.dtype == two_bodies.dtype and bool((c == 1).all())
    X = two_bodies.clone()
    X[1, 20] = X[1, 0]  # a missing point at the pelvis
    names = f"{KEYPOINT_NAMES[0]} and {KEYPOINT_NAMES[20]}"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fit(model32, X)
    same = [str(w.message) for w in said if "very same point" in str(w.message)]
    assert len(same) == 1 and f"1 of 2 bodies have two seen keypoints at the very same point (first: body 1, " \
        f"{names}): a missing point" in same[0]  # once per fit (it was once per internal check, 5 times)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        fit(model32, two_bodies)
        c = torch.ones(2, 26)
        c[1, 20] = 0
        fit(model32, X, c)  # unseen: not compared


def test_a_scaled_skeleton_fits_with_a_warning_of_its_shape(model32, two_bodies):
    """Keypoints scaled about the pelvis by 0.5 fit with a 1 mm error and betas near 9, without a word until now;
    the real-size bodies fit without the warning."""
    import warnings

    from tenfold.core.io import TenfoldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        fit(model32, two_bodies)
    half = (two_bodies - two_bodies[:, :1]) * 0.5 + two_bodies[:, :1]
    with pytest.warns(TenfoldWarning, match=r"2 of 2 bodies fit with shape coefficients beyond \+-8 prior"):
        fit(model32, half)


def test_keypoint_files_upper_case_bom_and_messages_in_the_files_shapes(tmp_path, two_bodies):
    """KEYS.NPY was refused as not .npy; a JSON with a byte-order mark was "not valid JSON"; a (26,) confidence for
    two bodies read "got (1, 26)", a shape the user never wrote."""
    X = two_bodies.numpy()
    np.save(tmp_path / "k.npy", X)
    (tmp_path / "k.npy").rename(tmp_path / "KEYS.NPY")
    got, _ = read_keypoints(str(tmp_path / "KEYS.NPY"))
    np.testing.assert_array_equal(got.numpy(), X)
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"keypoints": X.tolist()}).encode())
    np.testing.assert_array_equal(read_keypoints(str(tmp_path / "bom.json"))[0].numpy(), X)
    (tmp_path / "c.json").write_text(json.dumps({"keypoints": X.tolist(), "confidence": [1.0] * 26}))
    with pytest.raises(InputError, match=r"like the keypoints \(\(2, 26\) here\), got \(26,\)"):
        read_keypoints(str(tmp_path / "c.json"))
    np.save(tmp_path / "t.npy", X[0].T)
    with pytest.raises(InputError, match=r"got \(3, 26\)$"):
        read_keypoints(str(tmp_path / "t.npy"))


def test_a_bvh_with_an_infinite_frame_time_is_refused(tmp_path):
    """'Frame Time: 1e400' reads as inf: the fit ran with an fps of 0."""
    from tenfold.core.data import load_bvh

    text = ("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0 0\n  CHANNELS 3 Xposition Yposition Zposition\n"
            "  End Site\n  {\n    OFFSET 0 1 0\n  }\n}\nMOTION\nFrames: 1\nFrame Time: 1e400\n0 0 0\n")
    (tmp_path / "inf.bvh").write_text(text)
    with pytest.raises(DataError, match="non-positive or infinite frame time"):
        load_bvh(tmp_path / "inf.bvh")
    (tmp_path / "ok.bvh").write_text(text.replace("1e400", "0.04"))
    assert load_bvh(tmp_path / "ok.bvh").fps == pytest.approx(25.0)
