"""core.io: checkpoints round-trip without pickle, corrupt files fail in one line, the restricted
unpickler refuses code, run directories are never overwritten, boundary checks catch bad tensors."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    DataError,
    InputError,
    check_device,
    check_tensor,
    load_checkpoint,
    new_run_dir,
    restricted_load,
    restricted_loads,
    save_checkpoint,
)


def _nested_state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7,
            "rng": torch.get_rng_state(), "pair": (1, 2.5), "none": None, "arr": np.arange(3)}


def test_checkpoint_roundtrip_preserves_structure_and_values(tmp_path):
    state = _nested_state()
    path = save_checkpoint(tmp_path / "ckpt", state, method="unit", config={"lr": 0.1})
    loaded, header = load_checkpoint(path, method="unit")
    assert header["config"] == {"lr": 0.1}
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    # optimizer state dicts use int keys: they must come back as ints so load_state_dict works
    assert set(loaded["optimizer"]["state"]) == set(state["optimizer"]["state"])
    opt = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt.load_state_dict(loaded["optimizer"])
    assert torch.equal(loaded["rng"], state["rng"])
    assert loaded["pair"] == (1, 2.5) and loaded["step"] == 7 and loaded["none"] is None
    assert torch.equal(loaded["arr"], torch.arange(3))


def test_checkpoint_files_are_not_pickles(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": torch.ones(2)}, method="unit")
    json.loads((tmp_path / "c.json").read_text())  # plain JSON
    raw = (tmp_path / "c.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")  # safetensors: 8-byte header length + JSON header
    assert json.loads(raw[8:8 + n])["w"]["dtype"] == "F32"
    assert not raw.startswith(b"\x80")  # no pickle protocol marker
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("damage", ["truncate_tensors", "garbage_json", "missing", "other_method", "not_ours"])
def test_bad_checkpoint_is_one_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "c", {"w": torch.ones(100)}, method="unit")
    st = tmp_path / "c.safetensors"
    method = "unit"
    if damage == "truncate_tensors":
        st.write_bytes(st.read_bytes()[:50])
    elif damage == "garbage_json":
        path.write_text("{not json")
    elif damage == "missing":
        st.unlink()
    elif damage == "other_method":
        method = "lsgm"
    elif damage == "not_ours":
        path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, method=method)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value) or damage == "other_method"
    # only damaged files are "corrupt" (a resume may skip those); a missing or foreign checkpoint never is
    assert isinstance(e.value, CorruptCheckpointError) == (damage in ("truncate_tensors", "garbage_json"))


def test_foreign_checkpoint_file_is_named_not_misreported(tmp_path):
    """A torch ``.pt`` handed to a tenfold loader is called what it is, not 'x.json not found'."""
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, pt)
    with pytest.raises(CheckpointError, match=r"model\.pt is not a tenfold checkpoint"):
        load_checkpoint(pt)


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="bad device 'gpu0'"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda:0")
    # session 27 walkthrough: meta failed at a run's first .item(), xpu at torch's own assert
    with pytest.raises(ConfigError, match="'meta' holds no data"):
        check_device("meta")
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        with pytest.raises(ConfigError, match="'xpu' asked for but this torch has no xpu device available"):
            check_device("xpu")


def test_new_run_dir_never_overwrites(tmp_path, monkeypatch):
    a = new_run_dir(tmp_path / "run")
    (a / "result.txt").write_text("keep")
    b = new_run_dir(tmp_path / "run")
    assert a != b and (a / "result.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    assert new_run_dir(tmp_path / "empty") == tmp_path / "empty"  # an empty folder a user made is used
    # session 22 review: two runs started in the same second (the default --out changes once a second) both got
    # one folder and mixed their files; the first one's claim marker sends the second to -1 before it writes
    assert new_run_dir(tmp_path / "race") == tmp_path / "race" and new_run_dir(tmp_path / "race") == tmp_path / "race-1"
    (tmp_path / "afile").write_text("x")
    assert new_run_dir(tmp_path / "afile") == tmp_path / "afile-1"  # a file at --out is left alone
    with pytest.raises(ConfigError, match="cannot create the run directory .*afile/run"):
        new_run_dir(tmp_path / "afile" / "run")  # parent is a file: one line, not NotADirectoryError
    # session 27 walkthrough: --out . (or "") in a folder holding files was a raw ValueError (a path with no name)
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("x")
    monkeypatch.chdir(work)
    assert new_run_dir(".") == tmp_path / "work-1" and new_run_dir("") == tmp_path / "work-2"
    (work / "sub").mkdir()
    assert new_run_dir("sub/..") == tmp_path / "work-3"  # the folder itself, resolved: not a marker inside it
    with pytest.raises(ConfigError, match="give a folder name"):
        new_run_dir("/")


def test_restricted_unpickler_accepts_arrays_python2_style(tmp_path):
    data = {"v_template": np.random.rand(5, 3), "f": np.arange(6, dtype=np.uint32).reshape(2, 3),
            "kintree_table": np.array([[-1, 0], [0, 1]])}
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps(data, protocol=2))
    out = restricted_load(p)
    for k, v in data.items():
        np.testing.assert_array_equal(out[k], v)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"x": np.zeros(2), "y": _Evil()})
    with pytest.raises(DataError, match="refusing"):
        restricted_loads(payload)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_restricted_load_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        restricted_load(tmp_path / "nope.pkl")


def test_check_tensor():
    x = torch.zeros(2, 3, 4, 4)
    assert check_tensor(x, "x", ("B", 3, "H", "H")) is x
    assert check_tensor(x, "x", ("...", 4, 4)) is x
    with pytest.raises(InputError, match=r"x must have shape \(B, 1, H, W\), got \(2, 3, 4, 4\)"):
        check_tensor(x, "x", ("B", 1, "H", "W"))
    with pytest.raises(InputError, match="shape"):
        check_tensor(torch.zeros(2, 3, 4, 5), "x", ("B", 3, "H", "H"))
    with pytest.raises(InputError, match=r"x must have shape \(B, 3, \*, \*\), got \(2, 2, 4, 4\)"):
        check_tensor(torch.zeros(2, 2, 4, 4), "x", ("B", 3, None, None))  # None reads as *, not 'None'

    with pytest.raises(InputError, match="NaN"):
        check_tensor(torch.tensor([1.0, float("nan")]), "x")
    with pytest.raises(InputError, match="dtype"):
        check_tensor(torch.zeros(2, dtype=torch.int64), "x", dtype=torch.float32)
    with pytest.raises(InputError, match="torch.Tensor"):
        check_tensor(np.zeros(2), "x")


def test_tied_weights_roundtrip_stays_tied(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied, as in language-model heads
    state = {"emb": emb.state_dict(), "head": head.state_dict(), "part": emb.weight[1:3]}
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "t", state, method="unit"))
    assert loaded["emb"]["weight"] is loaded["head"]["weight"]
    assert torch.equal(loaded["part"], emb.weight[1:3])
    # a transposed view of a stored tensor is copied, contiguous (safetensors refused its strides: a raw ValueError)
    a = torch.arange(12.0).reshape(3, 4)
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "v", {"w": a, "wt": a.T}, method="unit"))
    assert torch.equal(loaded["wt"], a.T) and torch.equal(loaded["w"], a)


def test_mismatched_pair_from_two_saves_is_detected(tmp_path):
    save_checkpoint(tmp_path / "a", {"w": torch.ones(3)}, method="unit")
    save_checkpoint(tmp_path / "b", {"w": torch.zeros(3)}, method="unit")
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "b.safetensors").read_bytes())
    with pytest.raises(CorruptCheckpointError, match="different saves"):
        load_checkpoint(tmp_path / "a")


def test_atomic_write_gives_usual_permissions(tmp_path):
    from tenfold.core.io import write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_checkpoint_keeps_non_finite_floats_dotted_names_and_refuses_slash_keys(tmp_path):
    """inf came back as the string 'inf' and NaN as None (a ReduceLROnPlateau state then failed to step); names
    with a dot overwrote each other ("lr0.001" and "lr0.003" were both "lr0"); a "/" in a key collided with a
    nested key of the same path and lost a tensor."""
    import math

    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    state = {"sched": sched.state_dict(), "best": float("inf"), "worst": float("-inf"), "nan": float("nan"),
             "np_inf": np.float64("inf")}
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "c", state, method="unit"))
    assert loaded["best"] == math.inf and loaded["worst"] == -math.inf and math.isnan(loaded["nan"])
    assert loaded["np_inf"] == math.inf and loaded["sched"]["best"] == math.inf
    again = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    again.load_state_dict(loaded["sched"])
    again.step(1.0)  # failed: can't multiply sequence by non-int of type 'float'
    for lr in ("0.001", "0.003"):
        save_checkpoint(tmp_path / f"model-lr{lr}", {"w": torch.full((2,), float(lr), dtype=torch.float64)},
                        method="unit")
    assert sorted(p.name for p in tmp_path.glob("model-lr*")) == [
        "model-lr0.001.json", "model-lr0.001.safetensors", "model-lr0.003.json", "model-lr0.003.safetensors"]
    assert float(load_checkpoint(tmp_path / "model-lr0.001")[0]["w"][0]) == 0.001
    assert float(load_checkpoint(tmp_path / "model-lr0.001.json")[0]["w"][0]) == 0.001
    with pytest.raises(CheckpointError, match="cannot contain '/'"):
        save_checkpoint(tmp_path / "s", {"a/b": torch.zeros(1), "a": {"b": torch.ones(1)}}, method="unit")


def test_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    """A write that fails half way (here the fsync) leaves the previous content and no stray .tmp file behind."""
    from tenfold.core import io as tio

    p = tio.atomic_write_bytes(tmp_path / "r.bin", b"old")

    def broken(fd):
        raise OSError("disk full")

    monkeypatch.setattr(tio.os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        tio.atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["r.bin"]


def test_damaged_tensor_bytes_under_an_intact_header_are_a_corrupt_checkpoint(tmp_path):
    """Bytes overwritten inside the tensor data (the safetensors header intact) loaded as other numbers, and a resume
    trained on from them without a word (or failed raw in set_rng_state): the digest saved with the JSON catches it,
    as CorruptCheckpointError, which the engine's resume skips for the checkpoint before."""
    from tenfold.core.io import CorruptCheckpointError

    w = torch.arange(64, dtype=torch.float32)
    base = save_checkpoint(tmp_path / "c", {"w": w}, method="unit")
    assert torch.equal(load_checkpoint(base)[0]["w"], w)
    tpath = tmp_path / "c.safetensors"
    raw = bytearray(tpath.read_bytes())
    raw[-8:] = bytes(8)  # the last two floats zeroed: still a valid safetensors file
    tpath.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="digest mismatch"):
        load_checkpoint(base)


def test_a_resume_refuses_inputs_changed_since_the_run_started(tmp_path, monkeypatch):
    """Session 22 review: a resume reloaded --weights, teacher.json or a data folder from their paths, so a file
    replaced in between was mixed into the run without a word. The fresh run records digests; a resume checks them.
    What counts is what the verbs read: a folder's images (not a notes file beside them), a run directory's model
    files (not its checkpoints and logs, which a run inside it changes), NAME:PATH data, never a bare built-in name."""
    from tenfold.core.io import INPUTS_FILE, check_inputs, input_files

    run = tmp_path / "run"
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"\x00" * 10)
    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "1.png").write_bytes(b"png")
    (tmp_path / "m.json").write_text("{}")
    (tmp_path / "m.safetensors").write_bytes(b"t")
    prune = tmp_path / "prune"
    (prune / "checkpoints").mkdir(parents=True)
    (prune / "pruned.json").write_text("{}")
    (prune / "pruned.safetensors").write_bytes(b"p")
    (tmp_path / "mn").mkdir()
    (tmp_path / "mn" / "t10k-images-idx3-ubyte").write_bytes(b"idx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vit").mkdir()  # a folder named like a built-in model: never read, never recorded
    files = input_files({"--weights": str(weights), "data": f"folder:{folder}", "--model": str(tmp_path / "m.json"),
                         "--prune": str(prune), "eval data": f"mnist-test:{tmp_path / 'mn'}", "builtin": "vit",
                         "named": "mnist-test", "none": "", "timm": "timm:vit_tiny_patch16_224"},
                        data=("data", "eval data"))
    assert files == {"--weights": f"file:{weights}", "data": f"images:{folder}",
                     "--model": f"file:{tmp_path / 'm.json'}",
                     "--model (tensors)": f"file:{tmp_path / 'm.safetensors'}",
                     "--prune (pruned.json)": f"file:{prune / 'pruned.json'}",
                     "--prune (pruned.safetensors)": f"file:{prune / 'pruned.safetensors'}",
                     "eval data": f"tree:{tmp_path / 'mn'}"}
    check_inputs(run, files, resume=False)
    assert set(json.loads((run / INPUTS_FILE).read_text())) == set(files)
    (folder / "NOTES.txt").write_text("a note")  # not an image: the data did not change
    (prune / "checkpoints" / "step-1.json").write_text("{}")  # a run's own progress: not what the verb reads
    check_inputs(run, files, resume=True)  # unchanged: silent
    weights.write_bytes(b"\x01" + b"\x00" * 9)  # same size, other bytes
    with pytest.raises(InputError, match=r"^--weights .*w\.bin has changed since the run started .*inputs\.json.*"
                                         r"resume with the input it started from"):
        check_inputs(run, files, resume=True)
    weights.write_bytes(b"\x00" * 10)
    (folder / "a" / "2.png").write_bytes(b"new")  # an image added: the seeded split moves
    with pytest.raises(InputError, match="^data .*imgs has changed"):
        check_inputs(run, files, resume=True)
    (folder / "a" / "2.png").unlink()
    (folder / "b").mkdir()
    (folder / "a" / "1.png").rename(folder / "b" / "1.png")  # the same bytes in another class: another label
    with pytest.raises(InputError, match="^data .*imgs has changed"):
        check_inputs(run, files, resume=True)
    (folder / "b" / "1.png").rename(folder / "a" / "1.png")
    (folder / "b").rmdir()
    (tmp_path / "mn" / "t10k-images-idx3-ubyte").write_bytes(b"IDX")
    with pytest.raises(InputError, match="^eval data .*mn has changed"):
        check_inputs(run, files, resume=True)
    (tmp_path / "mn" / "t10k-images-idx3-ubyte").write_bytes(b"idx")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(InputError, match=r"^--model \(tensors\) .* is gone"):
        check_inputs(run, files, resume=True)
    check_inputs(run, {"data": f"images:{folder}"}, resume=True, record=run / INPUTS_FILE, what="evaluate",
                 since="the model was trained")  # another run's record, read only


def test_checkpoint_keys_that_would_not_come_back_are_refused(tmp_path):
    """{1: a, "1": b} came back as {1: b}; {"": a, "_": b} as both b; tuple / float / None keys as strings; a bool
    key or the format's own markers saved without a word and then read as a corrupt file."""
    a, b = torch.ones(2), torch.zeros(2)
    for state, match in (({1: a, "1": b}, r"keys '1' \(str\) and 1 \(int\)"),
                         ({"x": {"": a, "_": b}}, "non-empty str or Python int .* got '' at 'x'"),
                         ({(1, 2): a}, r"got \(1, 2\) at '\(top\)'"), ({1.5: a}, "got 1.5"), ({None: a}, "got None"),
                         ({True: a}, "got True"), ({"m": {"__tensor__": "w"}}, "got '__tensor__' at 'm'")):
        with pytest.raises(CheckpointError, match=match):
            save_checkpoint(tmp_path / "c", state, method="t")
    save_checkpoint(tmp_path / "ok", {1: a, "two": b, "nested": {3: a}}, method="t")
    back, _ = load_checkpoint(tmp_path / "ok")
    assert set(back) == {1, "two", "nested"} and torch.equal(back[1], a) and set(back["nested"]) == {3}


def test_a_json_that_is_no_checkpoint_is_named_as_such(tmp_path):
    """`tenfold eval --weights metrics.json` said "checkpoint file not found: metrics.safetensors", a file the user
    never named."""
    (tmp_path / "metrics.json").write_text('{"top1": 0.8}')
    with pytest.raises(CheckpointError, match=r"metrics.json is not a tenfold checkpoint \(no 'tenfold_checkpoint'"):
        load_checkpoint(tmp_path / "metrics.json")
    save_checkpoint(tmp_path / "ck", {"w": torch.ones(1)}, method="t")
    (tmp_path / "ck.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint file not found: .*ck.safetensors"):
        load_checkpoint(tmp_path / "ck.json")
