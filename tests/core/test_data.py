"""Tests for tenfold.core.data: IDX, image zips, PF-WILLOW, BVH forward kinematics, synthetic data.

Real-data tests use ../shared/data (skipped when absent); each is checked against something
computed independently here (zipfile + PIL, the BVH text, hand-derived positions)."""

from __future__ import annotations

import gzip
import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tenfold.core import data as D
from tenfold.core.io import DataError, InputError

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep decode caches of this module in a temporary folder, never in ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENFOLD_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _root() -> Path:
    root = D.data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set TENFOLD_DATA)")
    return root


@pytest.fixture(scope="module")
def cifar_test() -> D.ImageDataset:
    _root()
    return D.load_dataset("cifar10-test")


@pytest.fixture(scope="module")
def bvh_path() -> Path:
    return _root() / "mocap" / "cmu_131_01_scaled.bvh"


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------
def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_read_idx_tiny_raw_and_gz(tmp_path: Path) -> None:
    imgs = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 7
    (tmp_path / "a.idx").write_bytes(_idx_bytes(imgs, 0x08))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(imgs, 0x08)))
    ints = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "b.idx").write_bytes(_idx_bytes(ints, 0x0C))
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.idx"), imgs)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.idx.gz"), imgs)
    got = D.read_idx(tmp_path / "b.idx")
    assert got.dtype == np.int32 and got.tolist() == [1, -2, 70000]


@pytest.mark.parametrize("payload,match", [
    (b"\x08\x03\x00\x00\x00\x01", "not an IDX"),                               # bad magic
    (bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 4, "truncated"),   # 4 of 10 bytes
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),                               # gz magic, bad stream
])
def test_read_idx_corrupt(tmp_path: Path, payload: bytes, match: str) -> None:
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(payload)
    with pytest.raises(DataError, match=match) as e:
        D.read_idx(p)
    assert str(p) in str(e.value)


def test_mnist_from_tiny_directory(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    labs = np.array([3, 1, 3, 0], dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(imgs, 0x08)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(labs, 0x08))   # raw, no .gz
    ds = D.load_dataset(f"mnist-test:{tmp_path}")
    assert ds.images.shape == (4, 1, 5, 6) and ds.labels.tolist() == [3, 1, 3, 0]
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), imgs)


def test_mnist_real(shared_data: Path) -> None:
    ds = D.load_dataset("mnist-test")
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.counts() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]   # the published counts
    assert ds.labels[:5].tolist() == [7, 2, 1, 0, 4]
    raw = gzip.decompress((shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, 28 * 28, offset=16).reshape(28, 28)
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), first)


# --------------------------------------------------------------------------------------------
# CIFAR-10 zips
# --------------------------------------------------------------------------------------------
def test_cifar10_test_order_and_counts(cifar_test: D.ImageDataset) -> None:
    ds = cifar_test
    assert ds.classes == CIFAR and ds.name == "cifar10-test"
    assert len(ds) == 5000 and ds.images.shape == (5000, 3, 32, 32)
    assert ds.counts() == [500] * 10
    keys = [(CIFAR.index(i.split("/")[1]), int(Path(i).stem)) for i in ds.ids]
    assert keys == sorted(keys)                                       # by class, then number
    assert all(CIFAR[y] == i.split("/")[1] for y, i in zip(ds.labels.tolist(), ds.ids))


def test_cifar10_pixels_match_pil(cifar_test: D.ImageDataset) -> None:
    k = 1234
    with zipfile.ZipFile(_root() / "cifar10" / "cifar10-test-even-jpg.zip") as zf:
        ref = np.asarray(Image.open(io.BytesIO(zf.read(cifar_test.ids[k]))).convert("RGB"))
    np.testing.assert_array_equal(cifar_test.images[k].permute(1, 2, 0).numpy(), ref)
    x, y = cifar_test[k]
    assert x.dtype == torch.float32 and torch.allclose(x * 255, torch.tensor(ref).permute(2, 0, 1).float())
    assert y == CIFAR.index(cifar_test.ids[k].split("/")[1])


def test_limit_is_balanced_prefix_and_matches_full(cifar_test: D.ImageDataset, monkeypatch) -> None:
    monkeypatch.setenv("TENFOLD_CACHE", "off")                        # force the decode-only-these path
    small = D.load_dataset("cifar10-test", limit=25)
    assert small.counts() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    pos = {i: n for n, i in enumerate(cifar_test.ids)}
    idx = [pos[i] for i in small.ids]
    assert torch.equal(small.images, cifar_test.images[idx]) and torch.equal(small.labels, cifar_test.labels[idx])
    assert small.ids[:3] == ["test/airplane/0000.jpg", "test/airplane/0002.jpg", "test/airplane/0004.jpg"]


def test_balanced_prefix_against_naive() -> None:
    lab = np.random.default_rng(1).integers(0, 4, 57)
    for limit in (1, 5, 13, 40, 57, 100):
        want, taken, r = [], {c: 0 for c in range(4)}, 0
        while len(want) < min(limit, lab.size):
            for c in range(4):
                members = np.flatnonzero(lab == c)
                if r < members.size and len(want) < limit:
                    want.append(int(members[r]))
                    taken[c] += 1
            r += 1
        assert D.balanced_prefix(lab, limit).tolist() == sorted(want)


def test_cache_is_used_and_stale_cache_ignored(cifar_test: D.ImageDataset, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    mini = D.load_dataset("cifar10-mini")
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.zeros((3, 3, 32, 32), np.uint8))            # wrong shape: must be ignored
    again = D.load_dataset("cifar10-mini")
    assert torch.equal(again.images, mini.images)


def test_cifar10_mini_without_shared_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TENFOLD_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    ds = D.load_dataset("cifar10-mini")
    assert len(ds) == 500 and ds.counts() == [50] * 10 and ds.classes == CIFAR
    assert Path(ds.source) == D.asset_path("cifar10-mini.zip")
    with pytest.raises(DataError, match="TENFOLD_DATA"):
        D.load_dataset("cifar10-test")


def test_cifar10_mini_is_a_subset_of_test(cifar_test: D.ImageDataset) -> None:
    mini = D.load_dataset("cifar10-mini")
    pos = {i: n for n, i in enumerate(cifar_test.ids)}
    idx = [pos[i] for i in mini.ids]
    assert torch.equal(mini.images, cifar_test.images[idx]) and torch.equal(mini.labels, cifar_test.labels[idx])


def test_spec_with_path() -> None:
    asset = D.asset_path("cifar10-mini.zip")
    ds = D.load_dataset(f"cifar10-test:{asset}", limit=20)
    assert ds.source == str(asset) and ds.name == "cifar10-test" and ds.counts() == [2] * 10


def test_bundled_weights_match_shared_copy(shared_data: Path) -> None:
    a = D.asset_path("weights/cifar10-resnet20-12fca82f.th").read_bytes()
    assert a == (shared_data / "weights" / "cifar10-resnet20-12fca82f.th").read_bytes()
    assert D.weights_file("resnet20").is_file()


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
def test_missing_file_names_path(tmp_path: Path) -> None:
    p = tmp_path / "absent.zip"
    with pytest.raises(DataError) as e:
        D.load_dataset(f"cifar10-test:{p}")
    assert str(p) in str(e.value) and "TENFOLD_DATA" in str(e.value)


def test_corrupt_zip(tmp_path: Path) -> None:
    p = tmp_path / "garbage.zip"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="corrupt zip") as e:
        D.load_dataset(f"cifar10-test:{p}")
    assert str(p) in str(e.value)


def test_corrupt_member_and_wrong_layout(tmp_path: Path) -> None:
    bad = tmp_path / "badjpeg.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for c in CIFAR:
            zf.writestr(f"test/{c}/0000.jpg", b"not a jpeg")
    with pytest.raises(DataError, match="corrupt member test/airplane/0000.jpg"):
        D.load_dataset(f"cifar10-test:{bad}")
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as zf:
        for k, c in enumerate(CIFAR):
            buf = io.BytesIO()
            Image.new("RGB", (32, 32 if k < 9 else 16)).save(buf, format="JPEG")
            zf.writestr(f"test/{c}/0000.jpg", buf.getvalue())
    with pytest.raises(DataError, match="expected 32x32x3"):
        D.load_dataset(f"cifar10-test:{mixed}")
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("train/airplane/0000.jpg", b"x")
    with pytest.raises(DataError, match="no 'test/<class>/"):
        D.load_dataset(f"cifar10-test:{wrong}")


def test_unknown_name_lists_valid() -> None:
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as e:
        D.load_dataset("imagenet")
    assert all(n in str(e.value) for n in ("cifar10-test", "mnist-test", "omniglot-small1", "digits"))


def test_asset_path_missing() -> None:
    with pytest.raises(DataError, match="bundled asset not found"):
        D.asset_path("no-such-asset.bin")


# --------------------------------------------------------------------------------------------
# OMNIGLOT, digits
# --------------------------------------------------------------------------------------------
def test_omniglot_counts(shared_data: Path) -> None:
    zpath = shared_data / "omniglot" / "images_background_small1.zip"
    with zipfile.ZipFile(zpath) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
    chars = {n.rsplit("/", 1)[0].split("/", 1)[1] for n in pngs}
    ds = D.load_dataset("omniglot-small1")
    assert len(ds) == len(pngs) and ds.classes == sorted(chars)
    assert ds.images.shape[1:] == (1, 105, 105)
    assert torch.bincount(ds.images.flatten(), minlength=256).nonzero().flatten().tolist() == [0, 255]
    assert sum(ds.counts()) == len(pngs) and min(ds.counts()) >= 1
    assert all(i.split("/", 1)[1].startswith(ds.classes[y] + "/") for y, i in zip(ds.labels.tolist(), ds.ids))
    assert re.fullmatch(r"[A-Za-z_()\-]+/character\d\d", ds.classes[0])


def test_digits() -> None:
    from sklearn.datasets import load_digits

    ds = D.load_dataset("digits")
    ref = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and int(ds.images.max()) == 255
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), np.rint(ref.images * 255 / 16).astype(np.uint8))
    assert ds.labels.tolist() == ref.target.tolist()


# --------------------------------------------------------------------------------------------
# folder:PATH (a user's own images)
# --------------------------------------------------------------------------------------------
def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_classes_order_pixels_and_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    want = {}
    for cls, names in {"zebra": ["2", "10", "1"], "ant/queen": ["a"]}.items():
        for n in names:
            want[f"{cls}/{n}.png"] = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
            _write(tmp_path / cls / f"{n}.png", want[f"{cls}/{n}.png"])
    _write(tmp_path / ".thumbs" / "x.png", np.zeros((1, 1), np.uint8))  # hidden: skipped
    (tmp_path / "readme.txt").write_text("not an image")
    ds = D.load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["ant", "zebra"]  # a class is PATH's sub-folder, nested ones included (ImageFolder's rule)
    assert ds.ids == ["ant/queen/a.png", "zebra/1.png", "zebra/2.png", "zebra/10.png"]  # numeric stems by value
    assert ds.labels.tolist() == [0, 1, 1, 1] and ds.images.shape == (4, 3, 5, 7)
    for i, k in enumerate(ds.ids):
        np.testing.assert_array_equal(ds.images[i].permute(1, 2, 0).numpy(), want[k])
    assert D.load_dataset(f"folder:{tmp_path}", limit=2).ids == ["ant/queen/a.png", "zebra/1.png"]


def test_folder_follows_links_refuses_empty_classes_and_reads_colour_from_every_image(tmp_path: Path) -> None:
    """Session 21's review: a linked class folder was dropped (rglob does not follow links); an empty class folder
    was dropped and shifted every later label; `limit` decided grey or RGB from the chosen images only, so the
    channel count changed with it; loose images and a sub-folder of PATH's own name were merged."""
    import os

    for c in ("a", "b"):
        for i in range(2):
            _write(tmp_path / "src" / c / f"{i}.png", np.full((4, 4, 3), 40 * i, np.uint8))
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "src" / "a", tmp_path / "root" / "a")
    os.symlink(tmp_path / "src" / "b", tmp_path / "root" / "b")
    os.symlink(tmp_path / "root", tmp_path / "src" / "a" / "loop")  # a cycle: walked once
    ds = D.load_dataset(f"folder:{tmp_path / 'root'}")
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 0, 1, 1]
    (tmp_path / "root" / "c_empty").mkdir()
    with pytest.raises(DataError, match="class folder c_empty holds no image files"):
        D.load_dataset(f"folder:{tmp_path / 'root'}")
    _write(tmp_path / "mix" / "a" / "0.png", np.zeros((4, 4), np.uint8))  # grey, first of its class
    _write(tmp_path / "mix" / "a" / "1.png", np.dstack([np.zeros((4, 4), np.uint8)] * 2 + [np.ones((4, 4), np.uint8)]))
    assert D.load_dataset(f"folder:{tmp_path / 'mix'}", limit=1).images.shape[1] == 3
    _write(tmp_path / "cats" / "loose.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "cats" / "cats" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="images directly and a sub-folder also named 'cats'"):
        D.load_dataset(f"folder:{tmp_path / 'cats'}")


def test_folder_flat_grey_and_colour_mix(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _write(tmp_path / "pics" / "a.png", grey)
    ds = D.load_dataset(f"folder:{tmp_path / 'pics'}")
    assert ds.classes == ["pics"] and ds.images.shape == (1, 1, 3, 4)  # all grey: one channel
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), grey)
    _write(tmp_path / "pics" / "b.png", np.full((3, 4, 3), 7, np.uint8))  # an RGB file (grey content, R = G = B)
    ds = D.load_dataset(f"folder:{tmp_path / 'pics'}")
    # one colour-mode image: every image RGB (grey repeated per channel); a 3-channel model reads RGB-stored grey
    # photos as they are (session 22 briefly read them as grey, and CIFAR models refused such folders)
    assert ds.images.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(ds.images[0].numpy(), np.stack([grey] * 3))


def test_folder_warns_of_transparent_images(tmp_path: Path) -> None:
    """Session 22 review: an RGBA image's alpha was dropped without a word."""
    from PIL import Image

    from tenfold.core.io import TenfoldWarning

    d = tmp_path / "g"
    _write(d / "a.png", np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
    rgba = np.dstack([np.full((3, 4), 50, np.uint8)] * 3 + [np.full((3, 4), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "c.png")
    with pytest.warns(TenfoldWarning, match=r"1 image\(s\) in .* have transparent pixels \(first: c\.png\)"):
        ds = D.load_dataset(f"folder:{d}")
    assert ds.images.shape == (2, 3, 3, 4)


def test_folder_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a path"):
        D.load_dataset("folder")
    with pytest.raises(DataError, match="not found"):
        D.load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        D.load_dataset(f"folder:{tmp_path}")
    _write(tmp_path / "c" / "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "c" / "b.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match=r"differ in size \(c/a.png is 4x4, c/b.png is 5x4\)"):
        D.load_dataset(f"folder:{tmp_path}")
    (tmp_path / "c" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="corrupt or unreadable image .*b.png"):
        D.load_dataset(f"folder:{tmp_path}")
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 4), dtype=np.uint8)).save(good, format="PNG")
    (tmp_path / "c" / "b.png").write_bytes(good.getvalue()[:45])  # a valid header, pixels cut off
    with pytest.raises(DataError, match="corrupt or unreadable image .*b.png"):
        D.load_dataset(f"folder:{tmp_path}")


# --------------------------------------------------------------------------------------------
# PF-WILLOW
# --------------------------------------------------------------------------------------------
def test_pfwillow_tiny_fixture_orientation(tmp_path: Path) -> None:
    import scipy.io

    (tmp_path / "cat(A)").mkdir()
    for k in range(3):
        Image.fromarray(np.full((10, 20, 3), k, np.uint8)).save(tmp_path / "cat(A)" / f"im{k}.png")  # H=10, W=20
        scipy.io.savemat(tmp_path / "cat(A)" / f"im{k}.mat", {"pts_coord": np.array([[15.0, 2.0], [5.0, 9.0]])})
    recs = D.load_pfwillow(tmp_path)
    assert [r["name"] for r in recs] == ["im0", "im1", "im2"] and recs[0]["image"].shape == (10, 20, 3)
    np.testing.assert_array_equal(recs[0]["keypoints"], [[15.0, 5.0], [2.0, 9.0]])   # (x, y) rows
    pairs = D.pfwillow_pairs(recs)
    assert [(a["name"], b["name"]) for a, b in pairs] == [
        ("im0", "im1"), ("im0", "im2"), ("im1", "im0"), ("im1", "im2"), ("im2", "im0"), ("im2", "im1")]
    assert len(D.pfwillow_pairs(recs, limit=4)) == 4


def test_pfwillow_real(shared_data: Path) -> None:
    root = shared_data / "pfwillow"
    recs = D.load_pfwillow(root)
    n_png = len(list(root.glob("*/*.png")))
    assert len(recs) == n_png
    for r in recs:
        h, w, c = r["image"].shape
        kp = r["keypoints"]
        assert c == 3 and r["image"].dtype == np.uint8 and kp.shape == (10, 2)
        assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= w).all() and (kp[:, 1] >= 0).all() and (kp[:, 1] <= h).all()
    per_cat: dict[str, int] = {}
    for r in recs:
        per_cat[r["category"]] = per_cat.get(r["category"], 0) + 1
    pairs = D.pfwillow_pairs(recs)
    assert len(pairs) == sum(n * (n - 1) for n in per_cat.values())
    assert all(a["category"] == b["category"] and a["path"] != b["path"] for a, b in pairs)
    assert len(D.pfwillow_pairs(recs, per_category=3)) == 3 * len(per_cat)


# --------------------------------------------------------------------------------------------
# BVH
# --------------------------------------------------------------------------------------------
def test_bvh_real_counts_and_bone_lengths(bvh_path: Path) -> None:
    text = bvh_path.read_text()
    n_joints = len(re.findall(r"^\s*(?:ROOT|JOINT)\s", text, flags=re.MULTILINE))
    n_end = len(re.findall(r"^\s*End Site", text, flags=re.MULTILINE))
    n_frames = int(re.search(r"Frames:\s*(\d+)", text).group(1))
    n_chan = sum(int(n) for n in re.findall(r"CHANNELS\s+(\d+)", text))
    m = D.load_bvh(bvh_path)
    assert m.num_joints == n_joints and m.num_frames == n_frames and m.motion.shape == (n_frames, n_chan)
    assert m.parents[0] == -1 and all(p < j for j, p in enumerate(m.parents) if j)
    assert m.frame_time == pytest.approx(0.008333)
    pos = m.positions()
    assert pos.shape == (n_frames, n_joints, 3) and np.isfinite(pos).all()
    par = np.array(m.parents[1:])
    lengths = np.linalg.norm(pos[:, 1:] - pos[:, par], axis=-1)                       # (F, J-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(lengths[0], lengths.shape), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(lengths[0], np.linalg.norm(m.offsets[1:], axis=-1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pos[:, 0], m.motion[:, :3] + m.offsets[0])                # root translation
    with_ends = D.load_bvh(bvh_path, include_end_sites=True)
    assert with_ends.num_joints == n_joints + n_end and sum(with_ends.is_end_site) == n_end
    keep = [k for k, e in enumerate(with_ends.is_end_site) if not e]
    np.testing.assert_allclose(with_ends.positions()[:, keep], pos)


TINY_BVH = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT arm
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 1 0
    }
  }
}
MOTION
Frames: 3
Frame Time: 0.5
1 2 3 0 0 0 0 0 0
1 2 3 90 0 0 90 90 0
0 0 0 0 0 0 0 0 90
"""


def test_bvh_tiny_hand_computed(tmp_path: Path) -> None:
    p = tmp_path / "tiny.bvh"
    p.write_text(TINY_BVH)
    m = D.load_bvh(p, include_end_sites=True)
    assert m.joint_names == ["root", "arm", "arm_End"] and m.parents == [-1, 0, 1] and m.fps == 2.0
    pos = m.positions()
    # frame 0: no rotation; root at (1,2,3), arm at +x, tip at +y from arm.
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [2, 2, 3], [2, 3, 3]], atol=1e-12)
    # frame 1: root Rz(90) maps x->y, y->-x. arm = (1,2,3) + Rz90 (1,0,0) = (1,3,3).
    # arm world R = Rz90 @ (Rz90 @ Rx90); Rx90 (0,1,0) = (0,0,1); Rz90 Rz90 keep z: tip = (1,3,4).
    # (with the wrong, extrinsic order Rx90 @ Rz90 the tip would be at (1,2,3) instead.)
    np.testing.assert_allclose(pos[1], [[1, 2, 3], [1, 3, 3], [1, 3, 4]], atol=1e-12)
    # frame 2: only the arm's Yrotation 90; Ry90 (0,1,0) = (0,1,0): tip straight above the arm.
    np.testing.assert_allclose(pos[2], [[0, 0, 0], [1, 0, 0], [1, 1, 0]], atol=1e-12)
    assert D.load_bvh(p).num_joints == 2


def test_bvh_truncated(tmp_path: Path) -> None:
    p = tmp_path / "cut.bvh"
    p.write_text(TINY_BVH[:-10])
    with pytest.raises(DataError, match="truncated") as e:
        D.load_bvh(p)
    assert str(p) in str(e.value)
    q = tmp_path / "nohier.bvh"
    q.write_text("hello world")
    with pytest.raises(DataError, match="not a BVH"):
        D.load_bvh(q)


# --------------------------------------------------------------------------------------------
# Synthetic data, ImageDataset, locations
# --------------------------------------------------------------------------------------------
def test_synthetic_images_deterministic() -> None:
    a = D.synthetic_images(6, 16, 3, seed=5)
    assert a.shape == (6, 3, 16, 16) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, D.synthetic_images(6, 16, 3, seed=5))
    assert not torch.equal(a, D.synthetic_images(6, 16, 3, seed=6))
    assert a.std() > 0.05                                                  # not blank


def _nearest_mean_accuracy(ds: D.ImageDataset) -> float:
    x, y = ds.tensors()
    x = x.flatten(1)
    half = len(ds) // 2
    means = torch.stack([x[:half][y[:half] == c].mean(0) for c in range(ds.num_classes)])
    pred = torch.cdist(x[half:], means).argmin(1)
    return float((pred == y[half:]).float().mean())


def test_synthetic_classification_planted_signal() -> None:
    ds = D.synthetic_classification(400, 4, 16, seed=3)
    again = D.synthetic_classification(400, 4, 16, seed=3)
    assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)
    assert ds.counts() == [100] * 4 and ds.images.dtype == torch.uint8
    assert _nearest_mean_accuracy(ds) > 0.9
    assert _nearest_mean_accuracy(D.synthetic_classification(400, 4, 16, seed=3, strength=0.0)) < 0.45


def test_image_dataset_api() -> None:
    imgs = torch.arange(4 * 1 * 2 * 2, dtype=torch.uint8).reshape(4, 1, 2, 2) * 15
    ds = D.ImageDataset(imgs, torch.tensor([0, 1, 1, 0]), ["a", "b"], "toy", "mem")
    x, y = ds[3]
    assert x.dtype == torch.float32 and torch.allclose(x, imgs[3].float() / 255) and y == 0
    sub = ds.subset([2, 0])
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0] and torch.equal(sub.images[1], imgs[0])
    xs, ys = ds.tensors()
    assert torch.equal(ys, ds.labels)
    assert xs.shape == (4, 1, 2, 2) and float(xs.max()) == pytest.approx(225 / 255)
    with pytest.raises(InputError):
        D.ImageDataset(imgs.float(), torch.tensor([0, 1, 1, 0]), ["a", "b"], "toy", "mem")
    with pytest.raises(InputError):
        D.ImageDataset(imgs, torch.tensor([0, 1, 2, 0]), ["a", "b"], "toy", "mem")


def test_data_root_env_and_list_data(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "cifar10-resnet20-12fca82f.th").write_bytes(b"12345")
    monkeypatch.setenv("TENFOLD_DATA", str(tmp_path))
    assert D.data_root() == tmp_path
    rows = {r["name"]: r for r in D.list_data()}
    for need in ("mnist-test-images", "cifar10-train", "cifar10-test", "omniglot-small1", "pfwillow",
                 "mocap-cmu-131-01", "weights-resnet20", "weights-resnet56"):
        assert need in rows
    assert rows["weights-resnet20"]["exists"] and rows["weights-resnet20"]["size_bytes"] == 5
    assert not rows["cifar10-test"]["exists"] and rows["cifar10-test"]["size_bytes"] == 0
    assert rows["asset-cifar10-mini"]["exists"]


def test_folder_rescales_16_bit_grey_and_refuses_32_bit(tmp_path: Path) -> None:
    """PIL's convert("L") clips 16-bit values at 255, so a 0..60000 depth image read almost all white; 16-bit grey
    is rescaled to 8 bits now, and 32-bit integer / float images (no fixed range) are refused."""
    from PIL import Image

    (tmp_path / "d" / "a").mkdir(parents=True)
    a = np.array([[0, 257, 30000, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "d" / "a" / "x.png")
    x, _ = D.load_dataset(f"folder:{tmp_path / 'd'}").tensors()
    assert torch.allclose(x[0, 0, 0], torch.tensor([0, 1, round(30000 / 257), 255]) / 255.0)
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.ones((4, 4), np.float32) * 0.5, mode="F").save(tmp_path / "f" / "a" / "x.tif")
    with pytest.raises(DataError, match="32-bit float image with no fixed range"):
        D.load_dataset(f"folder:{tmp_path / 'f'}")


def test_bvh_without_frames_or_cut_mid_number(tmp_path: Path) -> None:
    """`Frames: 0` reached a max() over nothing in the callers; a file cut after a '-' was 'non-numeric'."""
    p = tmp_path / "none.bvh"
    p.write_text(TINY_BVH.split("MOTION")[0] + "MOTION\nFrames: 0\nFrame Time: 0.5\n")
    with pytest.raises(DataError, match="has no frames") as e:
        D.load_bvh(p)
    assert str(p) in str(e.value)
    q = tmp_path / "cut.bvh"
    q.write_text(TINY_BVH.rstrip()[:-2] + " -")
    with pytest.raises(DataError, match="looks truncated"):
        D.load_bvh(q)
    r = tmp_path / "word.bvh"
    r.write_text(TINY_BVH.replace("90 90 0", "90 x 0"))
    with pytest.raises(DataError, match="non-numeric motion data"):
        D.load_bvh(r)


def test_mnist_images_file_path_finds_the_labels_beside_it(tmp_path: Path) -> None:
    """mnist-test:PATH naming the images file (not the folder) reads the labels file next to it."""
    imgs = np.random.default_rng(1).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(imgs, 0x08))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([9, 0, 4], np.uint8), 0x08))
    ds = D.load_dataset(f"mnist-test:{tmp_path / 't10k-images-idx3-ubyte'}")
    assert ds.labels.tolist() == [9, 0, 4]
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), imgs)


def test_loader_details_found_by_the_session21_review(tmp_path: Path) -> None:
    """A '²' file name was a raw ValueError in the numeric sort; macOS '._' members in an image zip failed the whole
    load; a BVH with a byte-order mark or 'Frame  Time:' was refused; MNIST's dotted file names were not found;
    PF-WILLOW's limit -1 dropped each category's last image."""
    _write(tmp_path / "u" / "a" / "².png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "u" / "a" / "3.png", np.zeros((4, 4), np.uint8))
    assert D.load_dataset(f"folder:{tmp_path / 'u'}").ids == ["a/3.png", "a/².png"]
    bvh = ("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 3 Zrotation Xrotation Yrotation\n End Site\n {\n"
           "  OFFSET 0 1 0\n }\n}\nMOTION\nFrames: 1\nFrame  Time: 0.0333333\n0 0 0\n")
    (tmp_path / "a.bvh").write_text("\ufeff" + bvh, encoding="utf-8")
    assert D.load_bvh(tmp_path / "a.bvh").fps == pytest.approx(30.0, rel=1e-5)
    mn = tmp_path / "mn"
    mn.mkdir()
    (mn / "t10k-images.idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, 2, 2, 2) + bytes(8))
    (mn / "t10k-labels.idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 2) + bytes([3, 4]))
    assert D.load_dataset(f"mnist-test:{mn}").labels.tolist() == [3, 4]
    assert D.load_dataset(f"mnist-test:{mn / 't10k-images.idx3-ubyte'}").labels.tolist() == [3, 4]
    with pytest.raises(DataError, match="limit must be a positive integer"):
        D.load_pfwillow(tmp_path, limit=-1)
    buf = io.BytesIO()
    Image.fromarray(np.full((2, 2, 3), 9, np.uint8)).save(buf, format="JPEG")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        for c in CIFAR:
            zf.writestr(f"test/{c}/0000.jpg", buf.getvalue())
            zf.writestr(f"test/{c}/._0000.jpg", b"\x00\x05\x16\x07 AppleDouble")
        zf.writestr("__MACOSX/test/cat/._0000.jpg", b"junk")
    assert len(D.load_dataset(f"cifar10-test:{tmp_path / 'c.zip'}")) == 10


def test_an_image_over_pillows_pixel_limit_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """Session 22 review: a 15000 x 15000 PNG in a folder was PIL's DecompressionBombError as a traceback."""
    from PIL import Image

    _write(tmp_path / "big" / "a.png", np.zeros((40, 40), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels: twice the limit, a "bomb" to Pillow
    with pytest.raises(DataError, match=r"corrupt or unreadable image .*a\.png: DecompressionBombError"):
        D.load_dataset(f"folder:{tmp_path / 'big'}")


def test_subset_takes_masks_and_refuses_fractional_or_outside_indices_and_limit_takes_numpy_ints():
    """A boolean mask was cast to long and picked image 1 once per True; 0.5 was truncated to image 0; an index
    past the end was a raw IndexError; limit=np.int64(2) was refused as not an integer."""
    ds = D.synthetic_classification(7, num_classes=3, size=4, seed=0)
    mask = torch.tensor([True, False, True, False, False, True, False])
    sub = ds.subset(mask)
    assert torch.equal(sub.images, ds.images[[0, 2, 5]]) and torch.equal(sub.labels, ds.labels[[0, 2, 5]])
    assert torch.equal(ds.subset(torch.tensor([2.0, 4.0])).images, ds.images[[2, 4]])
    with pytest.raises(InputError, match="one entry per image \\(7\\)"):
        ds.subset(torch.tensor([True, False]))
    with pytest.raises(InputError, match="fractional indices"):
        ds.subset([0.5])
    with pytest.raises(InputError, match=r"must lie in \[-7, 7\), got 0 to 100"):
        ds.subset([0, 100])
    assert len(D.load_dataset("digits", limit=np.int64(5))) == 5
    for bad in (True, 2.5, 0):
        with pytest.raises(DataError, match="limit must be a positive integer"):
            D.load_dataset("digits", limit=bad)
