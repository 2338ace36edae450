"""Real datasets, bundled assets and seeded synthetic generators shared by every method.

Where things live
    ``data_root()`` is ``$TENFOLD_DATA`` or ``../shared/data`` (see its docstring); ``list_data()``
    lists every file expected there. Small licensed assets (``cifar10-mini.zip``, the CIFAR-10
    ResNet-20 weights) ship inside the package under ``tenfold/assets`` so the demo runs from a
    bare clone; ``asset_path(name)`` finds them.

Image datasets
    ``load_dataset("NAME")`` or ``load_dataset("NAME:PATH")`` returns an :class:`ImageDataset`
    (uint8 ``(N, C, H, W)`` images + int64 labels). Names are in :data:`DATASETS`; ``folder:PATH``
    reads a user's own folder of images (one sub-folder per class). Samples are
    ordered by class, then by file number/name (IDX files keep their file order); ``limit=k``
    takes a class-balanced prefix (round-robin over classes, the first images of each class) and
    decodes only those. Full JPEG/PNG decodes are cached as ``.npy`` under ``$TENFOLD_CACHE``
    (default ``~/.cache/tenfold``; ``TENFOLD_CACHE=off`` disables), keyed by the source file's
    path, size and mtime, so nothing is ever written next to the read-only data.

Other formats
    PF-WILLOW (``load_pfwillow``, ``pfwillow_pairs``): PNG images with a ``.mat`` beside each that
    holds ``pts_coord``, a float64 ``(2, K)`` array (row 0 = x, row 1 = y, pixels as stored, no
    shift applied; K = 10 in every file here). BVH motion capture (``load_bvh`` -> :class:`Motion`,
    ``Motion.positions()`` by forward kinematics). MNIST-style IDX files (``read_idx``).

Synthetic data (``synthetic_images``, ``synthetic_classification``) is generated, not real:
seeded smooth shapes, and a planted class signal for tests that must recover it.

Every missing, corrupt or malformed file raises :class:`~tenfold.core.io.DataError` naming it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tenfold.core.io import IMAGE_SUFFIXES, DataError, InputError, is_whole_number, require_file, walk_files

__all__ = [
    "CIFAR10_CLASSES", "DATASETS", "ImageDataset", "Motion", "asset_path", "data_root", "list_data",
    "load_bvh", "load_dataset", "load_pfwillow", "pfwillow_pairs", "read_idx", "synthetic_classification",
    "synthetic_images", "weights_file",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_HINT = "set TENFOLD_DATA to the folder holding the data (see ../shared/data/README.md) or pass NAME:PATH"
_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------
def data_root() -> Path:
    """The real-data folder: ``$TENFOLD_DATA``, else the first existing ``../shared/data`` (from the
    cwd, then from the repository holding this file); callers check ``.is_dir()``."""
    env = os.environ.get("TENFOLD_DATA")
    if env:
        return Path(env).expanduser()
    cands = [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return cands[0]


def asset_path(name: str, *, must_exist: bool = True) -> Path:
    """Path of a bundled asset under ``tenfold/assets`` (e.g. ``"cifar10-mini.zip"``); raises
    :class:`DataError` when it is missing, which means an incomplete install."""
    p = Path(__file__).resolve().parents[1] / "assets" / name
    if must_exist and not p.exists():
        raise DataError(f"bundled asset not found: {p}; reinstall tenfold or run tools/make_assets.py")
    return p


_WEIGHTS = {
    "resnet20": "cifar10-resnet20-12fca82f.th",
    "resnet32": "cifar10-resnet32-d509ac18.th",
    "resnet44": "cifar10-resnet44-014dd654.th",
    "resnet56": "cifar10-resnet56-4bfd9763.th",
}


def weights_file(arch: str) -> Path:
    """The CIFAR-10 ResNet weights for ``arch`` (``resnet20``..``resnet56``): ``data_root()/weights``
    first, then the bundled copy (ResNet-20 only); :class:`DataError` when neither exists."""
    if arch not in _WEIGHTS:
        raise DataError(f"no pretrained weights for '{arch}'; known: {', '.join(_WEIGHTS)}")
    fname = _WEIGHTS[arch]
    p = data_root() / "weights" / fname
    if p.is_file():
        return p
    a = asset_path(f"weights/{fname}", must_exist=False)
    if a.is_file():
        return a
    raise DataError(f"weights file not found: {p}; {_HINT}")


def _expected_files() -> list[tuple[str, str, str]]:
    """(name, path relative to data_root, kind) of everything data/README.md promises."""
    rows = [
        ("mnist-test-images", "mnist/t10k-images-idx3-ubyte.gz", "dataset"),
        ("mnist-test-labels", "mnist/t10k-labels-idx1-ubyte.gz", "dataset"),
        ("cifar10-train", "cifar10/cifar10-train-jpg.zip", "dataset"),
        ("cifar10-test", "cifar10/cifar10-test-even-jpg.zip", "dataset"),
        ("omniglot-small1", "omniglot/images_background_small1.zip", "dataset"),
        ("omniglot-license", "omniglot/LICENSE", "licence"),
        ("pfwillow", "pfwillow", "dataset"),
        ("mocap-cmu-131-01", "mocap/cmu_131_01_scaled.bvh", "dataset"),
        ("mocap-source", "mocap/SOURCE-README.md", "licence"),
    ]
    rows += [(f"weights-{a}", f"weights/{f}", "weights") for a, f in _WEIGHTS.items()]
    rows.append(("weights-license", "weights/LICENSE-cifar10-resnets.txt", "licence"))
    return rows


def list_data() -> list[dict[str, Any]]:
    """Every dataset, weight and licence file expected under ``data_root()`` plus the bundled
    assets, each as ``{name, path, kind, exists, size_bytes}`` (folders: total size); for ``tenfold data``."""
    root = data_root()
    out = []
    items = [(n, root / rel, k) for n, rel, k in _expected_files()]
    items += [("asset-cifar10-mini", asset_path("cifar10-mini.zip", must_exist=False), "asset"),
              ("asset-weights-resnet20", asset_path(f"weights/{_WEIGHTS['resnet20']}", must_exist=False), "asset")]
    for name, p, kind in items:
        if p.is_dir():
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        else:
            size = p.stat().st_size if p.is_file() else 0
        out.append({"name": name, "path": str(p), "kind": kind, "exists": p.exists(), "size_bytes": size})
    return out


# --------------------------------------------------------------------------------------------
# ImageDataset
# --------------------------------------------------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """Images kept as one uint8 ``(N, C, H, W)`` tensor (compact) with int64 labels; items are
    float32 in [0, 1] so any model can consume them without knowing the source format."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str,
                 source: str, ids: Sequence[str] | None = None) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise InputError(f"images must be a uint8 tensor (N, C, H, W), got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            raise InputError(f"labels must be an int64 tensor ({images.shape[0]},), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
            raise InputError(f"labels must lie in [0, {len(classes)}), got [{int(labels.min())}, {int(labels.max())}]")
        if ids is not None and len(ids) != images.shape[0]:
            raise InputError(f"ids must have {images.shape[0]} entries, got {len(ids)}")
        self.images = images
        self.labels = labels
        self.classes = list(classes)
        self.name = name
        self.source = source
        self.ids = list(ids) if ids is not None else None

    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """``(float32 image in [0, 1] (C, H, W), int label)``."""
        return self.images[i].float().div_(255.0), int(self.labels[i])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``), whether or not each occurs in this subset."""
        return len(self.classes)

    def tensors(self, device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole set as ``(float32 images in [0, 1] (N, C, H, W), int64 labels (N,))`` for batch use."""
        x = self.images.to(device) if device is not None else self.images
        y = self.labels.to(device) if device is not None else self.labels
        return x.float().div_(255.0), y

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """A new dataset holding the images at ``indices`` (same classes, name and source)."""
        raw = torch.as_tensor(indices)
        if raw.dtype == torch.bool:  # a mask: cast to long it picked image 1 once per True (and 0 per False)
            if raw.shape != (len(self),):
                raise InputError(f"a boolean mask must have one entry per image ({len(self)}), got {tuple(raw.shape)}")
            raw = raw.nonzero().flatten()
        elif raw.is_floating_point() and not bool((raw == raw.round()).all()):  # 0.5 was truncated to image 0
            raise InputError("subset takes whole image indices or a boolean mask, got fractional indices")
        idx = raw.to(torch.long).reshape(-1)
        if idx.numel() and not (-len(self) <= int(idx.min()) and int(idx.max()) < len(self)):
            raise InputError(f"subset indices must lie in [-{len(self)}, {len(self)}), got {int(idx.min())} to "
                             f"{int(idx.max())}")
        ids = [self.ids[i] for i in idx.tolist()] if self.ids is not None else None
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name, self.source, ids)

    def counts(self) -> list[int]:
        """Images per class, in class order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def __repr__(self) -> str:
        """One line: name, size, shape and source."""
        c, h, w = tuple(self.images.shape[1:])
        return (f"ImageDataset({self.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
                f"classes={len(self.classes)}, source={self.source!r})")


def balanced_prefix(labels: Sequence[int] | np.ndarray, limit: int | None) -> np.ndarray:
    """Sorted indices of a class-balanced prefix of size ``limit``: round-robin over classes in
    index order, taking each class's earliest samples first (all indices when ``limit`` is None)."""
    lab = np.asarray(labels, dtype=np.int64)
    if limit is None or limit >= lab.size:
        return np.arange(lab.size)
    if limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    order = np.argsort(lab, kind="stable")               # grouped by class, original order within
    sorted_lab = lab[order]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    rank = np.arange(lab.size) - starts                   # position of each sample within its class
    key = rank * (int(lab.max()) + 1) + sorted_lab        # round r of class c sorts before round r+1
    take = order[np.argsort(key, kind="stable")[:limit]]
    return np.sort(take)


# --------------------------------------------------------------------------------------------
# Decode cache
# --------------------------------------------------------------------------------------------
def _cache_dir() -> Path | None:
    """``$TENFOLD_CACHE`` or ``~/.cache/tenfold``; None when caching is switched off."""
    env = os.environ.get("TENFOLD_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tenfold"


def _cache_file(src: Path, kind: str) -> Path | None:
    """Cache path for the decoded pixels of ``src``, keyed by resolved path, size and mtime."""
    d = _cache_dir()
    if d is None:
        return None
    st = src.stat()
    key = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{kind}|v{_CACHE_VERSION}"
    return d / f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"


def _cache_load(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array if present and of the expected shape, else None (stale files are ignored)."""
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


def _cache_save(path: Path | None, arr: np.ndarray) -> None:
    """Atomically store ``arr``; a read-only or full cache folder only costs the next load time."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# Image zips (CIFAR-10 JPEG export, OMNIGLOT)
# --------------------------------------------------------------------------------------------
def _num_key(stem: str) -> tuple[int, int | str]:
    """Sort key: numeric stems by value (``0010`` after ``0002``), others by name, after numbers."""
    return (0, int(stem)) if stem.isascii() and stem.isdigit() else (1, stem)  # ('²'.isdigit(), but not int)


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip, turning a corrupt or truncated file into :class:`DataError` naming it."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"corrupt zip file {path}: {e}") from None


def _load_image_zip(path: Path, *, name: str, root: str, depth: int, ext: str, mode: str,
                    classes: Sequence[str] | None, limit: int | None) -> ImageDataset:
    """Load ``<root>/<class (depth folders)>/<file><ext>`` members of a zip as an ImageDataset.

    ``classes`` fixes the class order (and must match the zip's folders); otherwise classes are the
    sorted folder paths. Only the selected members are decoded; full decodes go through the cache.
    """
    zf = _open_zip(path)
    with zf:
        members: list[tuple[str, str, str]] = []   # (class, stem, member name)
        tops: set[str] = set()
        for m in zf.namelist():
            parts = m.split("/")
            tops.add(parts[0])
            if any(q.startswith(".") or q == "__MACOSX" for q in parts):  # macOS's ._ copies are no images
                continue
            if len(parts) == depth + 2 and parts[0] == root and parts[-1].lower().endswith(ext):
                members.append(("/".join(parts[1:-1]), parts[-1][: -len(ext)], m))
        if not members:
            raise DataError(f"{path} holds no '{root}/{'<class>/' * depth}*{ext}' members "
                            f"(top-level entries: {', '.join(sorted(tops)[:5]) or 'none'}); is it the right file?")
        found = sorted({c for c, _, _ in members})
        if classes is None:
            classes = found
        elif sorted(classes) != found:
            raise DataError(f"{path} has class folders {found}, expected {sorted(classes)}")
        cidx = {c: i for i, c in enumerate(classes)}
        members.sort(key=lambda t: (cidx[t[0]], _num_key(t[1])))
        labels = np.array([cidx[c] for c, _, _ in members], dtype=np.int64)
        ids = [m for _, _, m in members]
        sel = balanced_prefix(labels, limit)
        full = sel.size == labels.size

        def decode(member: str) -> np.ndarray:
            from PIL import Image

            try:
                with Image.open(io.BytesIO(zf.read(member))) as im:
                    a = np.asarray(im.convert(mode))
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, SyntaxError,
                    Image.DecompressionBombError) as e:  # a bomb: Pillow's pixel limit, one line
                raise DataError(f"corrupt member {member} in {path}: {e}") from None
            return a[:, :, None] if a.ndim == 2 else a

        first = decode(ids[int(sel[0])]) if sel.size else decode(ids[0])
        h, w, c = first.shape
        cache = _cache_file(path, f"{name}-{root}")
        arr = _cache_load(cache, (labels.size, c, h, w))
        if arr is not None:
            arr = arr[sel]
        else:
            arr = np.empty((sel.size, c, h, w), dtype=np.uint8)
            for k, i in enumerate(sel.tolist()):
                a = decode(ids[i])
                if a.shape != (h, w, c):
                    raise DataError(f"{ids[i]} in {path} is {a.shape[1]}x{a.shape[0]}x{a.shape[2]}, "
                                    f"expected {w}x{h}x{c} like the others")
                arr[k] = a.transpose(2, 0, 1)
            if full:
                _cache_save(cache, arr)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(labels[sel]),
                        list(classes), name, str(path), [ids[i] for i in sel.tolist()])


# --------------------------------------------------------------------------------------------
# IDX (MNIST)
# --------------------------------------------------------------------------------------------
_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST format; gzip-compressed or raw, detected by its magic) into a native
    numpy array; bad magic, an unknown type code or a size mismatch raise :class:`DataError`."""
    p = require_file(path, "IDX file", _HINT)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"corrupt gzip file {p}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{p} is not an IDX file (magic bytes {raw[:4].hex() or 'missing'}; expected 0000 08..0e NN)")
    dt, ndim = _IDX_TYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"truncated IDX file {p}: header needs {head} bytes, file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(raw) - head != need:
        what = "truncated" if len(raw) - head < need else "oversized"
        raise DataError(f"{what} IDX file {p}: shape {dims} needs {need} data bytes, file has {len(raw) - head}")
    return np.frombuffer(raw, dtype=dt, offset=head).reshape(dims).astype(dt.newbyteorder("="))


def _load_mnist(spec_path: Path | None, split: str, name: str, limit: int | None) -> ImageDataset:
    """MNIST from IDX files: ``spec_path`` is the folder or the images file (labels found beside it)."""
    prefix = "t10k" if split == "test" else "train"
    img_name, lab_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    base = spec_path if spec_path is not None else data_root() / "mnist"
    if base.is_dir():
        def pick(stem: str) -> Path:  # also the dotted names many copies use (train-images.idx3-ubyte)
            dotted = stem.replace("-idx", ".idx")
            for cand in (base / f"{stem}.gz", base / stem, base / f"{dotted}.gz", base / dotted):
                if cand.is_file():
                    return cand
            return base / f"{stem}.gz"
        ip, lp = pick(img_name), pick(lab_name)
    else:
        ip = base
        lp = base.with_name(base.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
        if lp == ip:  # a name without either pattern pointed the labels at the images file itself
            raise DataError(f"{ip}: cannot tell its labels file from the name (expected '...images-idx3...' or "
                            "'...images.idx3...'); give the folder that holds both")
    images = read_idx(require_file(ip, "MNIST images file", _HINT))
    labels = read_idx(require_file(lp, "MNIST labels file", _HINT))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{ip} must hold uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{lp} holds {labels.shape} labels for {images.shape[0]} images in {ip}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{lp} holds labels outside 0..9")
    labels = labels.astype(np.int64)
    sel = balanced_prefix(labels, limit)
    x = torch.from_numpy(np.ascontiguousarray(images[sel][:, None]))
    return ImageDataset(x, torch.from_numpy(labels[sel]), [str(d) for d in range(10)], name, str(ip),
                        [f"{i:05d}" for i in sel.tolist()])


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------
def _cifar(split: str, default: Callable[[], Path]) -> Callable[[str, Path | None, int | None], ImageDataset]:
    """A loader for a CIFAR-10 JPEG zip with members ``<split>/<class>/NNNN.jpg`` (standard class order)."""
    def load(name: str, path: Path | None, limit: int | None) -> ImageDataset:
        p = require_file(path if path is not None else default(), f"{name} zip", _HINT)
        return _load_image_zip(p, name=name, root=split, depth=1, ext=".jpg", mode="RGB",
                               classes=CIFAR10_CLASSES, limit=limit)
    return load


def _omniglot(name: str, path: Path | None, limit: int | None) -> ImageDataset:
    """OMNIGLOT zip ``<stem>/<alphabet>/<characterNN>/*.png``: classes ``Alphabet/characterNN`` in sorted
    order, images (1, 105, 105) uint8 with background 255 and strokes 0 (the binary PNGs, unscaled)."""
    p = require_file(path if path is not None else data_root() / "omniglot" / "images_background_small1.zip",
                     f"{name} zip", _HINT)
    return _load_image_zip(p, name=name, root=p.stem, depth=2, ext=".png", mode="L", classes=None, limit=limit)


def _digits(name: str, path: Path | None, limit: int | None) -> ImageDataset:
    """scikit-learn's 8x8 digits (real, bundled with sklearn), 0..16 rescaled to uint8 0..255."""
    if path is not None:
        raise DataError("'digits' comes from scikit-learn and takes no PATH")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    sel = balanced_prefix(y, limit)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(x[sel])), torch.from_numpy(y[sel]),
                        [str(i) for i in range(10)], name, "sklearn.datasets.load_digits",
                        [f"{i:04d}" for i in sel.tolist()])


_IMAGE_EXTS = IMAGE_SUFFIXES  # what the folder loader reads (core.io digests the same files for a resume)
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _as_uint8(im: Any, mode: str, f: Path) -> np.ndarray:
    """An image as 8-bit ``mode`` ("L" or "RGB"). 16-bit grey is rescaled (0..65535 -> 0..255); PIL's own
    convert("L") clipped it at 255, so nearly every pixel of a depth or medical image read white. 32-bit integer
    and float images have no fixed range to rescale from, so they are refused."""
    if im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
        a = np.rint(a).astype(np.uint8)
        return a if mode == "L" else np.repeat(a[..., None], 3, -1)
    if im.mode in ("I", "F"):
        raise DataError(f"{f} is a 32-bit {'float' if im.mode == 'F' else 'integer'} image with no fixed range "
                        "(Pillow also opens 16-bit PGM/PPM files so); convert it to 8-bit, or to 16-bit PNG or TIFF, "
                        "first")
    return np.asarray(im.convert(mode))


def _image_files(path: Path) -> list[Path]:
    """Every image file under ``path``, following symbolic links to folders (rglob skipped them, and with them whole
    classes) but never into a folder twice; hidden files and folders skipped."""
    return walk_files(path, lambda n: Path(n).suffix.lower() in _IMAGE_EXTS)


def _folder(name: str, path: Path | None, limit: int | None) -> ImageDataset:
    """Your own images, ``folder:PATH``: every image file under PATH (hidden files and folders skipped, linked
    folders followed), each sub-folder of PATH a class holding every image below it (images directly in PATH form
    one class named after it), as torchvision's ImageFolder; an empty class folder is an error, as there.
    Grey ("L") when every image is grey, else RGB; all must share one size (no silent resizing here: a method
    that needs another size says so and resizes itself). Not cached: a user's folder changes."""
    from PIL import Image, UnidentifiedImageError

    if path is None:
        raise DataError("'folder' needs a path: folder:/path/to/images (one sub-folder per class, or the images "
                        "directly inside)")
    if not path.is_dir():
        raise DataError(f"image folder not found: {path}")
    files = _image_files(path)
    if not files:
        raise DataError(f"{path} holds no image files ({', '.join(_IMAGE_EXTS)})")
    top = path.resolve().name or "images"

    def cls(f: Path) -> str:  # the first folder under PATH, as ImageFolder (nested folders were classes of their own)
        parts = f.relative_to(path).parts
        return top if len(parts) == 1 else parts[0]

    classes = sorted({cls(f) for f in files})
    subdirs = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if any(len(f.relative_to(path).parts) == 1 for f in files) and top in subdirs:  # the two were merged
        raise DataError(f"{path} holds images directly and a sub-folder also named '{top}': move the loose images "
                        "into a class folder")
    empty = [d for d in subdirs if d not in classes]
    if empty:  # it was dropped and every later class's label shifted by one (torchvision refuses it too)
        many = len(empty) > 1
        raise DataError(f"{path}: class folder{'s' if many else ''} {', '.join(empty)} hold{'' if many else 's'} no "
                        "image files; remove or fill them (each sub-folder is a class)")
    cidx = {c: i for i, c in enumerate(classes)}
    files.sort(key=lambda f: (cidx[cls(f)], _num_key(f.stem), f.relative_to(path).as_posix()))
    labels = np.array([cidx[cls(f)] for f in files], dtype=np.int64)
    sel = balanced_prefix(labels, limit)
    chosen = [files[i] for i in sel.tolist()]

    def bad(f: Path, e: Exception) -> DataError:
        return DataError(f"corrupt or unreadable image {f}: {type(e).__name__}: {e}")

    size: tuple[int, int] | None = None
    grey = True
    for f in files:  # headers only, of every file (the chosen ones alone made `limit` change the channel count):
        # one size and the colour mode before decoding anything (a method that needs grey reads grey content in
        # colour files itself: lsgm's binarised presets do)
        try:
            with Image.open(f) as im:
                here, grey = im.size, grey and im.mode in _GREY_MODES
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
            raise bad(f, e) from None
        if size is None:
            size, first = here, f
        elif here != size:
            raise DataError(f"images in {path} differ in size ({first.relative_to(path)} is {size[0]}x{size[1]}, "
                            f"{f.relative_to(path)} is {here[0]}x{here[1]}); resize them to one size first")
    mode = "L" if grey else "RGB"
    w, h = size
    arr = np.empty((len(chosen), 1 if grey else 3, h, w), dtype=np.uint8)
    transparent: list[Path] = []
    for k, f in enumerate(chosen):
        try:
            with Image.open(f) as im:
                a = _as_uint8(im, mode, f)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    alpha = np.asarray(im.convert("RGBA"))[..., 3]
                    if int(alpha.min()) < 255:
                        transparent.append(f)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
            raise bad(f, e) from None
        arr[k] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if transparent:  # the alpha channel was dropped without a word, a fully transparent image read as its colours
        import warnings

        from tenfold.core.io import TenfoldWarning

        warnings.warn(f"{len(transparent)} image(s) in {path} have transparent pixels (first: "
                      f"{transparent[0].relative_to(path)}); their alpha is dropped and the colour under it is read",
                      TenfoldWarning, stacklevel=3)
    ids = [f.relative_to(path).as_posix() for f in chosen]
    return ImageDataset(torch.from_numpy(arr), torch.from_numpy(labels[sel]), classes, name, str(path), ids)


DATASETS: dict[str, tuple[str, Callable[[str, Path | None, int | None], ImageDataset]]] = {
    "cifar10-test": ("CIFAR-10 test, even-numbered half (5,000 JPEG 32x32)",
                     _cifar("test", lambda: data_root() / "cifar10" / "cifar10-test-even-jpg.zip")),
    "cifar10-train": ("CIFAR-10 train (50,000 JPEG 32x32)",
                      _cifar("train", lambda: data_root() / "cifar10" / "cifar10-train-jpg.zip")),
    "cifar10-mini": ("bundled: 500 CIFAR-10 test images, 50 per class (works without ../shared/data)",
                     _cifar("test", lambda: asset_path("cifar10-mini.zip"))),
    "mnist-test": ("MNIST test (10,000 28x28, IDX)", lambda n, p, k: _load_mnist(p, "test", n, k)),
    "mnist-train": ("MNIST train (IDX; not in ../shared/data, pass mnist-train:PATH)",
                    lambda n, p, k: _load_mnist(p, "train", n, k)),
    "omniglot-small1": ("OMNIGLOT background small 1 (2,720 105x105 binary, 136 characters)", _omniglot),
    "digits": ("scikit-learn digits (1,797 8x8, 0..16 scaled to 0..255)", _digits),
    "folder": ("your own images, folder:PATH (one sub-folder per class, all one size; PNG, JPEG, ...)", _folder),
}


def absolute_spec(spec: str) -> str:
    """``NAME:PATH`` with PATH made absolute (``NAME`` kept): a run records this, so a later verb finds the same
    data from any directory (a relative folder was not found elsewhere, or another folder of that name was read)."""
    name, sep, path = spec.partition(":")
    return f"{name}:{Path(path.strip()).expanduser().resolve()}" if sep and path.strip() else spec


def load_dataset(spec: str, *, limit: int | None = None) -> ImageDataset:
    """Load ``NAME`` or ``NAME:PATH`` (PATH overrides the default file) as an :class:`ImageDataset`;
    ``limit`` keeps a class-balanced prefix and decodes only that."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset spec must be 'NAME' or 'NAME:PATH'; names: {', '.join(DATASETS)}")
    name, _, path = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    if limit is not None and (not is_whole_number(limit) or limit < 1):  # np.int64 is whole too
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    p = Path(path.strip()).expanduser() if path.strip() else None
    return DATASETS[name][1](name, p, limit)


# --------------------------------------------------------------------------------------------
# PF-WILLOW
# --------------------------------------------------------------------------------------------
def load_pfwillow(root: str | os.PathLike | None = None, *, categories: Iterable[str] | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """PF-WILLOW images with keypoints: one dict per image, ``{category, name, path, image (H, W, 3)
    uint8, keypoints (K, 2) float64 (x, y) pixels}``, ordered by category folder then file name.

    Each category is a folder of ``NAME.png`` + ``NAME.mat``; the .mat holds ``pts_coord`` (2, K),
    row 0 = x, row 1 = y, as stored (no 1-based shift applied). ``limit`` caps images per category.
    """
    import scipy.io
    from PIL import Image
    from scipy.io.matlab import MatReadError

    if limit is not None and (not is_whole_number(limit) or limit < 1):  # np.int64 is whole too
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    base = Path(root).expanduser() if root is not None else data_root() / "pfwillow"
    if not base.is_dir():
        raise DataError(f"PF-WILLOW folder not found: {base}; {_HINT}")
    cats = sorted(d.name for d in base.iterdir() if d.is_dir())
    if categories is not None:
        want = list(categories)
        bad = [c for c in want if c not in cats]
        if bad:
            raise DataError(f"PF-WILLOW has no categor{'y' if len(bad) == 1 else 'ies'} {bad}; found: {cats}")
        cats = want
    out: list[dict[str, Any]] = []
    for cat in cats:
        pngs = sorted((base / cat).glob("*.png"))[:limit]  # (limit checked above: -1 dropped each last image)
        for png in pngs:
            mat = require_file(png.with_suffix(".mat"), "PF-WILLOW keypoint file")
            try:
                pts = scipy.io.loadmat(str(mat))["pts_coord"]
            except KeyError:
                raise DataError(f"{mat} has no 'pts_coord' variable") from None
            except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as e:
                raise DataError(f"corrupt .mat file {mat}: {type(e).__name__}: {e}") from None
            pts = np.asarray(pts, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[0] != 2:
                raise DataError(f"{mat}: pts_coord must be (2, K), got {pts.shape}")
            try:
                with Image.open(png) as im:
                    img = np.asarray(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise DataError(f"corrupt image {png}: {e}") from None
            out.append({"category": cat, "name": png.stem, "path": str(png), "image": img,
                        "keypoints": np.ascontiguousarray(pts.T)})
    if not out:
        raise DataError(f"no PF-WILLOW images (<category>/*.png + .mat) under {base}")
    return out


def pfwillow_pairs(samples: list[dict[str, Any]] | None = None, *, root: str | os.PathLike | None = None,
                   per_category: int | None = None, limit: int | None = None
                   ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Ordered pairs ``(source, target)`` of distinct images of the same category, category by
    category in (i, j) order; ``per_category`` / ``limit`` keep the first N per category / overall."""
    if samples is None:
        samples = load_pfwillow(root)
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_cat.setdefault(s["category"], []).append(s)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for items in by_cat.values():
        cat_pairs = [(a, b) for i, a in enumerate(items) for j, b in enumerate(items) if i != j]
        pairs += cat_pairs[:per_category]
    return pairs[:limit]


# --------------------------------------------------------------------------------------------
# BVH motion capture
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Motion:
    """A BVH skeleton and its motion. Joints are in file (depth-first) order, so parents come first.

    ``offsets`` are the rest-pose offsets from the parent; ``channels[j]`` the channel names of joint
    ``j`` as written (end sites have none); ``channel_index[j]`` where they start in a ``motion`` row.
    """

    joint_names: list[str]
    parents: list[int]
    offsets: np.ndarray                 # (J, 3) float64
    channels: list[list[str]]
    frame_time: float
    motion: np.ndarray                  # (F, C) float64, raw channel values (rotations in degrees)
    is_end_site: list[bool]
    source: str = ""

    @property
    def channel_index(self) -> list[int]:
        """Column of each joint's first channel in ``motion``."""
        idx, k = [], 0
        for ch in self.channels:
            idx.append(k)
            k += len(ch)
        return idx

    @property
    def num_frames(self) -> int:
        """F."""
        return int(self.motion.shape[0])

    @property
    def num_joints(self) -> int:
        """J (including end sites if they were loaded)."""
        return len(self.joint_names)

    @property
    def fps(self) -> float:
        """Frames per second, ``1 / frame_time``."""
        return 1.0 / self.frame_time

    def local_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-joint local rotations (F, J, 3, 3) and translations (F, J, 3) from the channels.

        Rotation channels are applied in file order as intrinsic rotations, i.e. ``Zrotation
        Xrotation Yrotation`` gives ``R = Rz @ Rx @ Ry`` (the BVH convention); position channels
        are added to the joint's offset.
        """
        from scipy.spatial.transform import Rotation

        f, j = self.num_frames, self.num_joints
        rot = np.broadcast_to(np.eye(3), (f, j, 3, 3)).copy()
        trans = np.broadcast_to(self.offsets, (f, j, 3)).copy()
        for k, (chs, c0) in enumerate(zip(self.channels, self.channel_index)):
            axes, cols = "", []
            for n, ch in enumerate(chs):
                low = ch.lower()
                if low.endswith("rotation"):
                    axes += low[0].upper()
                    cols.append(c0 + n)
                elif low.endswith("position"):
                    trans[:, k, "xyz".index(low[0])] += self.motion[:, c0 + n]
            if axes:
                rot[:, k] = Rotation.from_euler(axes, self.motion[:, cols], degrees=True).as_matrix()
        return rot, trans

    def world_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """World joint rotations (F, J, 3, 3) and positions (F, J, 3) by forward kinematics:
        ``p_j = p_parent + R_parent @ t_j``, ``R_j = R_parent @ R_local_j``; roots start at their offset plus
        their position channels."""
        rot, trans = self.local_transforms()
        world_r = np.empty_like(rot)
        world_p = np.empty_like(trans)
        for j, par in enumerate(self.parents):
            if par < 0:
                world_r[:, j], world_p[:, j] = rot[:, j], trans[:, j]
            else:
                world_r[:, j] = world_r[:, par] @ rot[:, j]
                world_p[:, j] = world_p[:, par] + np.einsum("fab,fb->fa", world_r[:, par], trans[:, j])
        return world_r, world_p

    def positions(self) -> np.ndarray:
        """World joint positions (F, J, 3): see :meth:`world_transforms`."""
        return self.world_transforms()[1]


_CHANNEL_NAMES = {f"{a}{k}" for a in "XYZ" for k in ("position", "rotation")}


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def load_bvh(path: str | os.PathLike, *, include_end_sites: bool = False) -> Motion:
    """Parse a BVH file into a :class:`Motion`. By default End Sites are left out so the joints are
    exactly the file's ROOT/JOINT entries; ``include_end_sites=True`` adds them (named
    ``<parent>_End``, no channels) after their parent, in file order."""
    p = require_file(path, "BVH file", _HINT)
    try:
        text = p.read_text(encoding="utf-8-sig", errors="strict")  # (a byte-order mark read as "not a BVH")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"{p} is not a readable BVH text file: {e}") from None
    head, sep, body = text.partition("MOTION")
    if not sep:
        raise DataError(f"{p} is not a BVH file: no MOTION section")
    tok = head.split()
    if not tok or tok[0] != "HIERARCHY":
        raise DataError(f"{p} is not a BVH file: it does not start with HIERARCHY")

    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end: list[bool] = []
    stack: list[int] = []
    pending: int | None = None   # joint whose '{' we expect next
    i = 1

    def bad(msg: str) -> DataError:
        return DataError(f"malformed BVH hierarchy in {p}: {msg}")

    def floats(n: int) -> list[float]:
        nonlocal i
        try:
            vals = [float(t) for t in tok[i:i + n]]
        except ValueError:
            raise bad(f"expected {n} numbers near token {i}: {tok[i:i + n]}") from None
        if len(vals) != n:
            raise bad("file ends inside an OFFSET")
        i += n
        return vals

    try:
        while i < len(tok):
            t = tok[i]
            if t in ("ROOT", "JOINT") or (t == "End" and tok[i + 1] == "Site"):
                if t == "JOINT" and not stack:
                    raise bad("JOINT outside any ROOT")
                is_end = t == "End"
                name = f"{names[stack[-1]]}_End" if is_end else tok[i + 1]
                names.append(name)
                parents.append(stack[-1] if stack else -1)
                offsets.append([0.0, 0.0, 0.0])
                channels.append([])
                end.append(is_end)
                pending = len(names) - 1
                i += 2
            elif t == "{":
                if pending is None:
                    raise bad("'{' without a joint")
                stack.append(pending)
                pending = None
                i += 1
            elif t == "}":
                if not stack:
                    raise bad("unbalanced '}'")
                stack.pop()
                i += 1
            elif t == "OFFSET":
                if not stack:
                    raise bad("OFFSET outside a joint")
                i += 1
                offsets[stack[-1]] = floats(3)
            elif t == "CHANNELS":
                if not stack:
                    raise bad("CHANNELS outside a joint")
                n = int(tok[i + 1])
                chs = tok[i + 2:i + 2 + n]
                if len(chs) != n or any(c not in _CHANNEL_NAMES for c in chs):
                    raise bad(f"bad CHANNELS for joint {names[stack[-1]]}: {chs}")
                channels[stack[-1]] = chs
                i += 2 + n
            else:
                raise bad(f"unexpected token '{t}'")
    except (IndexError, ValueError) as e:
        raise bad(f"truncated or invalid ({e})") from None
    if stack or pending is not None or not names:
        raise bad("unbalanced braces or no joints")

    m = re.match(r"\s*Frames:\s*(\d+)\s*Frame\s+Time:\s*([0-9.eE+-]+)\s*", body)
    if not m:
        raise DataError(f"malformed BVH motion header in {p}: expected 'Frames: N' and 'Frame Time: T'")
    n_frames, frame_time = int(m.group(1)), float(m.group(2))
    n_ch = sum(len(c) for c in channels)
    if n_frames == 0:  # its callers reached a max() over nothing
        raise DataError(f"BVH {p} has no frames (Frames: 0)")
    tokens = body[m.end():].split()
    try:
        values = np.array(tokens, dtype=np.float64)
    except ValueError as e:
        if all(_is_float(t) for t in tokens[:-1]):  # only the last value is bad: cut off mid-number (after a '-')
            raise DataError(f"BVH {p} looks truncated: its motion data ends in '{tokens[-1]}'") from None
        raise DataError(f"non-numeric motion data in {p}: {e}") from None
    if values.size != n_frames * n_ch:
        raise DataError(f"BVH {p} declares {n_frames} frames x {n_ch} channels = {n_frames * n_ch} values "
                        f"but holds {values.size} (truncated?)")
    if not (0 < frame_time < np.inf) or not np.isfinite(values).all():  # 1e400 reads as inf: an fps of 0
        raise DataError(f"BVH {p} has a non-positive or infinite frame time, or NaN/Inf motion values")
    motion = values.reshape(n_frames, n_ch)

    mot = Motion(names, parents, np.array(offsets, dtype=np.float64), channels, frame_time, motion, end, str(p))
    if include_end_sites:
        return mot
    keep = [k for k, e in enumerate(end) if not e]
    remap = {old: new for new, old in enumerate(keep)}
    return Motion([names[k] for k in keep], [remap.get(parents[k], -1) for k in keep],
                  mot.offsets[keep], [channels[k] for k in keep], frame_time, motion, [False] * len(keep), str(p))


# --------------------------------------------------------------------------------------------
# Synthetic data (generated, not real)
# --------------------------------------------------------------------------------------------
def synthetic_images(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """SYNTHETIC: ``n`` smooth random images (float32 (n, C, size, size) in [0, 1]): a colour
    gradient background plus 3 soft-edged ellipses of random colour. Same seed, same images."""
    if n < 0 or size < 1 or channels < 1:
        raise InputError(f"need n >= 0, size >= 1, channels >= 1; got n={n}, size={size}, channels={channels}")
    g = torch.Generator().manual_seed(int(seed))

    def u(*s: int) -> torch.Tensor:
        return torch.rand(*s, generator=g)

    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")                   # (H, W)
    c0, c1, ang = u(n, channels, 1, 1), u(n, channels, 1, 1), u(n, 1, 1, 1) * 2 * torch.pi
    t = (torch.cos(ang) * (xx - 0.5) + torch.sin(ang) * (yy - 0.5) + 0.5).clamp(0, 1)  # (n, 1, H, W)
    img = c0 + (c1 - c0) * t
    soft = 1.5 / size                                                  # edge width ~1.5 pixels
    for _ in range(3):
        cx, cy = u(n, 1, 1, 1), u(n, 1, 1, 1)
        rx, ry = 0.08 + 0.25 * u(n, 1, 1, 1), 0.08 + 0.25 * u(n, 1, 1, 1)
        th = u(n, 1, 1, 1) * torch.pi
        dx, dy = xx - cx, yy - cy
        a = (torch.cos(th) * dx + torch.sin(th) * dy) / rx
        b = (-torch.sin(th) * dx + torch.cos(th) * dy) / ry
        r = torch.sqrt(a * a + b * b)
        mask = torch.sigmoid((1 - r) * torch.minimum(rx, ry) / soft)  # (n, 1, H, W)
        img = img + (u(n, channels, 1, 1) - img) * mask
    return img.clamp_(0, 1).contiguous()


def synthetic_classification(n: int, num_classes: int = 10, size: int = 32, seed: int = 0, *,
                             channels: int = 3, strength: float = 0.5) -> ImageDataset:
    """SYNTHETIC: a labelled set with a planted class signal: image = (1 - s) * random shapes + s *
    the class's fixed smooth colour grating (classes differ in orientation, frequency and colour), so
    a nearest-class-mean or small CNN can learn it. Balanced labels in a seeded random order."""
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must be in [0, 1], got {strength}")
    g = torch.Generator().manual_seed(int(seed) + 7919)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    k = torch.arange(num_classes, dtype=torch.float32)
    ang = (k * 0.618034 % 1.0) * torch.pi                              # golden-ratio spread of angles
    freq = 1.0 + (k % 3)                                               # 1..3 cycles per image
    phase = torch.rand(num_classes, generator=g) * 2 * torch.pi
    colour = torch.rand(num_classes, channels, generator=g)
    proj = torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy   # (K, H, W)
    wave = 0.5 + 0.5 * torch.sin(2 * torch.pi * freq[:, None, None] * proj + phase[:, None, None])
    templates = wave[:, None] * colour[:, :, None, None] + (1 - wave[:, None]) * (1 - colour[:, :, None, None])
    base = synthetic_images(n, size, channels, seed)
    x = (1 - strength) * base + strength * templates[labels]
    imgs = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
    return ImageDataset(imgs, labels.to(torch.int64), [f"class{i}" for i in range(num_classes)],
                        "synthetic-classification", f"synthetic(seed={seed}, strength={strength})")
