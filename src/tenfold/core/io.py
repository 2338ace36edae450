"""Errors, checkpoints, run directories and safe file loading shared by every method.

Checkpoints are a pair ``NAME.safetensors`` (every tensor, flat keys) + ``NAME.json`` (the
structure, every non-tensor leaf, and a header naming the method and format version). Nothing
is pickled, so loading a checkpoint can never run code. Third-party ``.pth``/``.th`` files load
with ``torch.load(weights_only=True)``; SMPL-layout ``.pkl`` files go through
:class:`RestrictedUnpickler`, which accepts arrays and nothing else.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Errors: one family. The CLI prints ``error: <message>`` and exits 2 for any of them.
# --------------------------------------------------------------------------------------------
class TenfoldError(Exception):
    """Base of every error a user can cause; its message says what is wrong and how to fix it."""


class DataError(TenfoldError):
    """A data file is missing, unreadable or corrupt."""


class CheckpointError(TenfoldError):
    """A checkpoint is missing, corrupt, or was written by another method or format version."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files exist but do not read (truncated, garbled, or from two different saves): what a kill
    mid-write leaves, so a resume may fall back to the checkpoint before it."""


class ConfigError(TenfoldError):
    """An unknown preset, an unknown override key, or a value of the wrong type."""


class InputError(TenfoldError):
    """A tensor or array argument has the wrong shape or dtype, or holds NaN/Inf."""


class DependencyError(TenfoldError):
    """An optional dependency that this feature needs is not installed."""


class TenfoldWarning(UserWarning):
    """A setting that runs but likely not as meant (e.g. a warm-up longer than the run); the CLI prints it as
    one ``warning: <message>`` line on stderr."""


# --------------------------------------------------------------------------------------------
# Boundary checks
# --------------------------------------------------------------------------------------------
def check_tensor(
    x: Any,
    name: str,
    shape: Sequence[int | str | None] | None = None,
    *,
    dtype: torch.dtype | Iterable[torch.dtype] | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check a tensor argument at an API boundary and return it.

    ``shape`` entries are ints (must match), strings (symbolic: equal names must have equal
    sizes) or ``None`` (anything, shown as ``*``). ``"..."`` as the first entry allows any leading dims.
    Raises :class:`InputError` with one line naming the argument and the expected layout.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        spec = list(shape)
        lead = bool(spec) and spec[0] == "..."
        if lead:
            spec = spec[1:]
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"  # * : any size
        dims = tuple(x.shape)
        ok = len(dims) >= len(spec) if lead else len(dims) == len(spec)
        if ok:
            tail = dims[len(dims) - len(spec):] if spec else ()
            bound: dict[str, int] = {}
            for s, d in zip(spec, tail):
                if (isinstance(s, int) and s != d) or (isinstance(s, str) and bound.setdefault(s, d) != d):
                    ok = False
        if not ok:
            raise InputError(f"{name} must have shape {want}, got {tuple(dims)}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed:
            names = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise InputError(f"{name} must have dtype {names}, got {str(x.dtype).replace('torch.', '')}")
    if finite and x.is_floating_point() and x.numel() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{name} holds {bad} NaN/Inf value(s); clean the input before calling")
    return x


def is_whole_number(v: Any) -> bool:
    """An integer of any kind (int, numpy or torch integer scalar), not a bool or a float: counts given through
    the Python API (np.int64(5) is one, 4.5 and True are not)."""
    import operator

    try:
        operator.index(v)
    except TypeError:
        return False
    return not isinstance(v, bool)


def check_device(device: str | torch.device) -> torch.device:
    """Parse ``device``; ConfigError (one line) for a malformed name or an accelerator this machine lacks."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device '{device}': {str(e).splitlines()[0]}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for but CUDA is not available; use device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{device}' asked for but MPS is not available; use device cpu")
    if dev.type == "meta":  # tensors without data: a run failed at its first .item()
        raise ConfigError(f"device '{device}' holds no data (shapes only); use device cpu or an accelerator")
    if dev.type not in ("cpu", "cuda", "mps"):  # xpu, ...: torch's own assert or a backend error mid-run
        backend = getattr(torch, dev.type, None)
        if backend is None or not getattr(backend, "is_available", lambda: False)():
            raise ConfigError(f"device '{device}' asked for but this torch has no {dev.type} device available; use "
                              "device cpu")
    return dev


def require_file(path: str | os.PathLike, what: str = "file", hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise :class:`DataError` naming it when it is missing (or a directory)."""
    p = Path(path).expanduser()
    if p.is_dir():  # was reported as "not found"
        raise DataError(f"{what} {p} is a directory; pass a file")
    if not p.is_file():
        extra = f"; {hint}" if hint else ""
        raise DataError(f"{what} not found: {p}{extra}")
    return p


# --------------------------------------------------------------------------------------------
# Atomic writes and run directories
# --------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy/torch scalars converted)."""
    return atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2) + "\n").encode())


def walk_files(path: str | os.PathLike, keep: Any = None) -> list[Path]:
    """Every regular file under ``path`` (sorted) whose name ``keep(name)`` accepts (default: all), following
    symbolic links to folders but never into a folder twice; hidden files and folders skipped."""
    out: list[Path] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link cycle, or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / n for n in names if not n.startswith(".") and (keep is None or keep(n))
                and (Path(root) / n).is_file()]
    return sorted(out)


def input_digest(spec: str | os.PathLike) -> str:
    """``sha256:HEX`` of an input: a file's bytes, or a folder's files (each one's path relative to it and its
    digest). ``images:PATH`` counts the image files only (what the folder loader reads: a notes file beside them
    is no change to the data); ``tree:PATH`` every file."""
    import hashlib

    kind, p = _spec_parts(spec)

    def one(f: Path) -> str:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    if p.is_dir():
        keep = (lambda n: Path(n).suffix.lower() in IMAGE_SUFFIXES) if kind == "images" else None
        h = hashlib.sha256()
        for f in walk_files(p, keep):
            h.update(f"{f.relative_to(p).as_posix()}\0{one(f)}\n".encode())
        return "sha256:" + h.hexdigest()
    return "sha256:" + one(p)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# what the verbs read from a run directory given as an input (--model, --target, --lut): its own checkpoints and
# logs change as it runs (a finetune run inside a prune run's folder changed that folder)
RUN_DIR_INPUTS = ("pruned.json", "pruned.safetensors", "model.json", "model.safetensors", "teacher.json",
                  "teacher.safetensors", "lut.json", "leak.json", "leak.safetensors")
INPUTS_FILE = "inputs.json"


def names_builtin(text: str) -> bool:
    """Whether an option value names something built in rather than a path: a bare word (``vit``, ``default``,
    ``cifar10-resnet20``: no separator, no suffix) or ``timm:NAME``, even where a folder of that name exists."""
    return text.startswith("timm:") or ("/" not in text and os.sep not in text and not Path(text).suffix)


def input_files(specs: Mapping[str, str | os.PathLike | None], data: Sequence[str] = ("data",)
                ) -> dict[str, str]:
    """The local files behind a run's inputs, by name, as ``input_digest`` specs.
    - Data specs (the names in ``data``): ``folder:PATH`` the folder's images, ``NAME:PATH`` the file or folder;
      a bare dataset name is built in and left out.
    - Others: a file (a ``.json`` / ``.safetensors`` model with its pair); a run directory's model, leak or LUT
      files (``RUN_DIR_INPUTS``), not its checkpoints and logs; a bare word (``vit``, ``cifar10-resnet20``,
      ``timm:NAME``) names a built-in and is left out, even where a folder of that name happens to exist."""
    out: dict[str, str] = {}
    for name, spec in specs.items():
        if spec is None or str(spec) in ("", "default", "none"):
            continue
        text = str(spec)
        if name in data:
            head, sep, rest = text.partition(":")
            if not sep or not rest.strip():
                continue
            path = Path(rest.strip()).expanduser()
            if path.exists():
                out[name] = f"{'images' if head.strip().lower() == 'folder' else 'tree'}:{path.resolve()}"
            continue
        if names_builtin(text):
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            for f in RUN_DIR_INPUTS:
                if (path / f).is_file():
                    out[f"{name} ({f})"] = f"file:{(path / f).resolve()}"
            continue
        if not path.is_file():
            continue
        if path.suffix in (".json", ".safetensors"):
            _, j, st = paired_paths(path)
            if j.is_file() and st.is_file():
                out[name], out[f"{name} (tensors)"] = f"file:{j.resolve()}", f"file:{st.resolve()}"
                continue
        out[name] = f"file:{path.resolve()}"
    return out


def _spec_parts(spec: str | os.PathLike) -> tuple[str, Path]:
    """The kind (``images``, ``tree``, ``file``; "" for a bare path) and path of an ``input_digest`` spec."""
    text = str(spec)
    if text.startswith(("images:", "tree:", "file:")):
        kind, _, rest = text.partition(":")
        return kind, Path(rest)
    return "", Path(text)


def check_inputs(run_dir: str | os.PathLike, files: Mapping[str, str | os.PathLike | None], *, resume: bool,
                 record: str | os.PathLike | None = None,
                 what: str = "resume with the input it started from, or start a new run",
                 since: str = "the run started") -> None:
    """Record or check the files a run reads (weights, a LUT, a data folder): a fresh run writes their digests to
    ``run_dir/inputs.json``; a resumed one checks them, so a file changed in between is one InputError line instead
    of a run that silently mixes two inputs. ``record``: check against another run's ``inputs.json`` (evaluate
    against its train run) and write nothing. Names whose path is None or absent from the record are skipped (a
    run from before session 22 has no record)."""
    src = Path(record) if record is not None else Path(run_dir) / INPUTS_FILE
    if record is None and not resume:
        src.parent.mkdir(parents=True, exist_ok=True)
        write_json(src, {name: {"path": str(f), "digest": input_digest(f)} for name, f in files.items()
                         if f is not None and _spec_parts(f)[1].exists()})
        return
    try:
        saved = json.loads(src.read_text()) if src.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{src} is corrupt (not JSON); it records the inputs the run started with") from None
    for name, f in files.items():
        if f is None or name not in saved:
            continue
        path = _spec_parts(f)[1]
        if not path.exists():
            raise InputError(f"{name} {path} is gone; {since} from it")
        if input_digest(f) != saved[name].get("digest"):
            raise InputError(f"{name} {path} has changed since {since} ({src} records its digest); {what}")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars, Paths, tuples and dataclasses into plain JSON values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


RUN_MARKER = ".tenfold-run"  # created atomically in every new run directory: the claim on it


def output_dir(run_dir: str | os.PathLike) -> Path:
    """A verb's ``run_dir`` as the Python API may pass it (a str, a folder not made yet): a Path to an existing
    folder. The CLI's run directory is made by ``new_run_dir``; a verb called directly gets it made here."""
    d = Path(run_dir).expanduser()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder {d}: {e.strerror or e}") from None
    return d


def new_run_dir(out: str | os.PathLike) -> Path:
    """Create and return a fresh run directory at ``out``; if it already holds files, use
    ``out-1``, ``out-2``, ... so that a run never overwrites earlier results. The directory is claimed by an empty
    ``.tenfold-run`` marker made atomically, so runs started together never share one."""
    base = Path(out).expanduser()
    if base.name in ("", ".", ".."):  # ".", "", "/" or "..": with_name() below was a raw ValueError (or made "..-1")
        base = base.resolve()
        if not base.name:
            raise ConfigError(f"cannot make a run directory at {out!r}: give a folder name (e.g. --out runs/x)")
    cand, i = base, 0
    try:
        while True:
            if not (cand.exists() and (not cand.is_dir() or any(cand.iterdir()))):  # a file there counts as taken
                cand.mkdir(parents=True, exist_ok=True)
                try:  # claimed by the one process that creates the marker: two runs started in the same second
                    # both took one folder (exists, then mkdir(exist_ok=True)) and mixed their files
                    os.close(os.open(cand / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    return cand
                except FileExistsError:
                    pass
            i += 1
            cand = base.with_name(f"{base.name}-{i}")
    except OSError as e:  # e.g. a read-only place or a parent that is a file: one line, not a traceback
        raise ConfigError(f"cannot create the run directory {cand}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------
# Checkpoints: safetensors (tensors) + JSON (structure and everything else)
# --------------------------------------------------------------------------------------------
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"
_FLOAT = "__float__"  # a non-finite float (JSON has none): {"__float__": "inf" | "-inf" | "nan"}


def paired_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """(base, base.json, base.safetensors) of a checkpoint path given with or without one of the two suffixes.
    The suffixes are appended, not swapped in: with_suffix made "model-lr0.001" and "model-lr0.003" both
    "model-lr0", so they overwrote each other."""
    base = Path(path)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    return base, base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor],
             seen: dict[tuple, str] | None = None) -> Any:
    if seen is None:
        seen = {}
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and view in seen:  # tied weights: store once, restore as one tensor
            return {_TENSOR: seen[view]}
        key = prefix or "_"
        shares = t.numel() and any(v[:2] == view[:2] for v in seen)
        # safetensors refuses tensors that share memory: copy a partial overlap, keep exact ties as refs
        # (a clone keeps the strides of a transposed view, which safetensors refuses: copy it contiguous)
        tensors[key] = t.cpu().clone(memory_format=torch.contiguous_format) if shares else t.cpu().contiguous()
        if t.numel():
            seen[view] = key
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        return _flatten(torch.from_numpy(np.ascontiguousarray(obj)), prefix, tensors, seen)
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        where = prefix or "(top)"
        # a key stored as its string and read back as such: anything but str / int came back another type, two
        # keys with one string form ({1: a, "1": b}) or an empty one (beside "_") overwrote each other, and the
        # format's own markers as keys made the file unreadable
        odd = [k for k in keys if isinstance(k, bool) or not isinstance(k, (str, int))
               or k in ("", _TENSOR, _TUPLE, _INTKEYS, _FLOAT)]
        if odd:
            raise CheckpointError(f"checkpoint keys must be non-empty str or Python int (not the format's markers; "
                                  f"cast numpy integers with int()); got {odd[0]!r} at '{where}'")
        if len({str(k) for k in keys}) != len(keys):
            dup = sorted({str(k) for k in keys if sum(str(j) == str(k) for j in keys) > 1})
            raise CheckpointError(f"checkpoint keys {dup[0]!r} (str) and {int(dup[0])} (int) at '{where}' would be "
                                  "stored as one; rename one")
        slash = [str(k) for k in keys if "/" in str(k)]
        if slash:  # "/" joins nested keys: {"a/b": x, "a": {"b": y}} stored both at "a/b" and lost x
            raise CheckpointError(f"checkpoint keys cannot contain '/': {slash[0]!r} at '{prefix or '(top)'}'")
        out = {str(k): _flatten(v, f"{prefix}/{k}" if prefix else str(k), tensors, seen) for k, v in obj.items()}
        ints = [str(k) for k in keys if isinstance(k, int)]
        if ints:
            out[_INTKEYS] = ints
        return out
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, f"{prefix}/{i}", tensors, seen) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}/{i}", tensors, seen) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):  # inf came back as the string "inf", NaN as None
        return {_FLOAT: "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} at '{prefix}' in a checkpoint")


def _unflatten(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if _FLOAT in obj:
            return float(obj[_FLOAT])
        ints = set(obj.get(_INTKEYS, []))
        return {(int(k) if k in ints else k): _unflatten(v, tensors) for k, v in obj.items() if k != _INTKEYS}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def _digest(blob: bytes) -> str:
    """A checksum of a checkpoint's tensor file: CRC-32, which finds damage (not tampering) and is the fastest of
    zlib's and hashlib's checksums (it runs on every save and every resume)."""
    return f"crc32:{zlib.crc32(blob):08x}"


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any], *, method: str,
                    config: Any = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a nested ``state`` (tensors, dicts, lists, numbers) without pickling.

    Writes ``<path>.safetensors`` and ``<path>.json`` atomically (tensors first, so the JSON
    header, written last, marks a complete checkpoint). Returns the JSON path.
    """
    from safetensors.torch import save as st_save

    base, jpath, tpath = paired_paths(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(dict(state), "", tensors)
    save_id = uuid.uuid4().hex  # pairs the two files: a crash between the writes is detected on load
    blob = st_save(tensors, metadata={"save_id": save_id})
    atomic_write_bytes(tpath, blob)
    header = {"tenfold_checkpoint": FORMAT_VERSION, "method": method, "save_id": save_id, "digest": _digest(blob),
              "config": to_jsonable(config) if config is not None else None,
              "extra": to_jsonable(dict(extra or {})), "state": tree}
    return write_json(jpath, header)


def load_checkpoint(path: str | os.PathLike, *, method: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(state, header)``.

    Raises :class:`CheckpointError` (one line) when the files are missing or corrupt, or when
    the checkpoint belongs to another method or format version.
    """
    from safetensors.torch import load as st_load

    base = Path(path)
    if base.is_file() and base.suffix not in (".json", ".safetensors"):
        raise CheckpointError(f"{base} is not a tenfold checkpoint: one is a pair NAME.json + NAME.safetensors "
                              "(give either file, or the run directory)")
    base, jpath, tpath = paired_paths(base)
    if jpath.is_file() and not tpath.is_file():  # a JSON that is no checkpoint (metrics.json) was reported as a
        # missing .safetensors the user never named
        try:
            head = json.loads(jpath.read_text())
        except (ValueError, UnicodeDecodeError):
            head = None
        if not (isinstance(head, dict) and "tenfold_checkpoint" in head):
            raise CheckpointError(f"{jpath} is not a tenfold checkpoint (no 'tenfold_checkpoint' header)")
    for p in (jpath, tpath):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file not found: {p}")
    try:
        header = json.loads(jpath.read_text())
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"corrupt checkpoint {jpath}: {e}") from None
    version = header.get("tenfold_checkpoint")
    if version is None:
        raise CheckpointError(f"{jpath} is not a tenfold checkpoint (no 'tenfold_checkpoint' header)")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{jpath} has checkpoint format {version}; this tenfold reads format {FORMAT_VERSION}")
    if method is not None and header.get("method") != method:
        raise CheckpointError(f"{jpath} is a '{header.get('method')}' checkpoint, not a '{method}' one")
    try:
        raw = tpath.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + n]).get("__metadata__", {}) if 8 < n + 8 <= len(raw) else {}
        tensors = st_load(raw)
        state = _unflatten(header["state"], tensors)
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise CorruptCheckpointError(f"corrupt checkpoint {tpath}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if header.get("save_id") and meta.get("save_id") != header["save_id"]:
        raise CorruptCheckpointError(f"incomplete checkpoint {base}: {jpath.name} and {tpath.name} come from "
                                     "different saves")
    # damaged tensor bytes under an intact header read back as other numbers (a resume trained on from them) or
    # as a raw error from whatever consumed them (the RNG state): checked against the digest taken at save time
    if str(header.get("digest", "")).startswith("crc32:") and _digest(raw) != header["digest"]:
        raise CorruptCheckpointError(f"corrupt checkpoint {tpath}: its bytes differ from the ones saved (digest "
                                     "mismatch)")
    if str(map_location) != "cpu":
        state = _to_device(state, map_location)
    return state, header


def _to_device(obj: Any, device: str | torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_device(v, device) for v in obj)
    return obj


def load_torch_file(path: str | os.PathLike, what: str = "weights file") -> Any:
    """Load a third-party ``.pth``/``.th`` file with ``weights_only=True`` onto the CPU."""
    p = require_file(path, what)
    with open(p, "rb") as fh:
        head = fh.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive (new) or a pickle (legacy)
        raise CheckpointError(f"{p} is not a PyTorch {what}: neither a torch.save zip archive nor a pickle")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        import re

        text = " ".join(str(e).split())
        glob = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        # torch's own text ends in advice to load with weights_only=False, which runs the file's code; it was cut
        # at 200 characters there, leaving the advice and dropping the warning
        detail = (f"it names the Python object {glob.group(1)}" if glob else
                  text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].strip()
                  if "WeightsUnpickler error:" in text else "unpickling refused")
        raise CheckpointError(f"{p} was refused: loading it would build Python objects, not only tensors ({detail}). "
                              "tenfold never loads such files unsafely (that can run any code they hold); if the "
                              "file is yours and trusted, re-save its state_dict, or it is corrupt") from None
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"corrupt {what} {p}: {type(e).__name__}: {first}") from None


# --------------------------------------------------------------------------------------------
# Restricted unpickling for third-party array pickles (SMPL/MANO layout)
# --------------------------------------------------------------------------------------------
_ALLOWED_GLOBALS: set[tuple[str, str]] = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # Python-2 pickles store bytes through _codecs.encode(str, 'latin1')
    ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"),
    ("__builtin__", "object"),
    ("builtins", "object"),
}


class SparseStub:
    """Stand-in for a pickled scipy ``csc_matrix`` / ``csr_matrix``: it keeps the pickled fields only, and
    :func:`restricted_load` turns it into a dense array after checking them. Building the real scipy class let
    a crafted file's out-of-range indices reach scipy's unchecked C++ routines (a segfault, or silently wrong
    numbers)."""

    axis = ""  # "csc": indptr runs over columns, indices are rows; "csr": the other way round

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_dense(self, max_elements: int = 10 ** 8) -> np.ndarray:
        """The dense array, or UnpicklingError when the fields do not describe a valid matrix."""
        st = getattr(self, "state", None)
        if isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict):
            st = st[1]  # (dict, slots) form
        if not isinstance(st, dict):
            raise pickle.UnpicklingError(f"a {self.axis} matrix holds no field dict")
        shape = st.get("_shape", st.get("shape"))
        try:
            rows, cols = (int(v) for v in shape)
            data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
        except (TypeError, ValueError, KeyError) as e:
            raise pickle.UnpicklingError(f"a {self.axis} matrix lacks a valid shape/data/indices/indptr "
                                         f"({e})") from None
        outer, inner = (cols, rows) if self.axis == "csc" else (rows, cols)
        ok = (rows >= 0 and cols >= 0 and rows * cols <= max_elements
              and data.ndim == indices.ndim == indptr.ndim == 1
              and indptr.shape == (outer + 1,) and np.issubdtype(indices.dtype, np.integer)
              and np.issubdtype(indptr.dtype, np.integer) and data.dtype != object)
        ok = ok and len(data) == len(indices) and indptr[0] == 0 and int(indptr[-1]) == len(data)
        ok = ok and bool(np.all(np.diff(indptr) >= 0)) and (len(indices) == 0 or (indices.min() >= 0
                                                                                   and indices.max() < inner))
        if not ok:
            raise pickle.UnpicklingError(f"a {self.axis} matrix of shape {shape} has inconsistent or out-of-range "
                                         "indices (a corrupt or crafted file)")
        out = np.zeros((outer, inner), dtype=data.dtype)
        np.add.at(out, (np.repeat(np.arange(outer), np.diff(indptr)), indices), data)  # duplicates sum, as scipy
        return out.T.copy() if self.axis == "csc" else out


class _CscStub(SparseStub):
    axis = "csc"


class _CsrStub(SparseStub):
    axis = "csr"


_SPARSE_STUBS: dict[tuple[str, str], type[SparseStub]] = {
    ("scipy.sparse.csc", "csc_matrix"): _CscStub,
    ("scipy.sparse._csc", "csc_matrix"): _CscStub,
    ("scipy.sparse.csr", "csr_matrix"): _CsrStub,
    ("scipy.sparse._csr", "csr_matrix"): _CsrStub,
}


class ChumpyArrayStub:
    """Stand-in for ``chumpy.ch.Ch`` while unpickling with ``allow_chumpy=True``: it only keeps the
    pickled state (no chumpy import, no code); :func:`restricted_load` then replaces it by ``state['x']``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that accepts numpy arrays, scalars, scipy sparse matrices and plain
    containers, and refuses every other global, so a malicious file cannot run code.

    ``allow_chumpy=True`` also maps ``chumpy.ch.Ch`` (SMPL's official pickles) to
    :class:`ChumpyArrayStub`; every other chumpy class is still refused."""

    def __init__(self, *args: Any, allow_chumpy: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_chumpy = allow_chumpy

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in _SPARSE_STUBS:
            return _SPARSE_STUBS[(module, name)]
        if self.allow_chumpy and (module, name) == ("chumpy.ch", "Ch"):
            return ChumpyArrayStub
        if self.allow_chumpy and (module, name) in (("__builtin__", "set"), ("builtins", "set")):
            return set  # chumpy's pickled state holds sets (e.g. _dirty_vars); a set runs no code
        if module.startswith("chumpy"):
            raise pickle.UnpicklingError(
                f"file holds chumpy objects ({module}.{name}); convert it to plain arrays (.npz) first")
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (only arrays are accepted)")


def _replace_stubs(obj: Any) -> Any:
    """Every :class:`SparseStub` in nested dicts/lists/tuples as its checked dense array."""
    if isinstance(obj, SparseStub):
        return obj.to_dense()
    if isinstance(obj, dict):
        return {k: _replace_stubs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_stubs(v) for v in obj)
    return obj


def _replace_chumpy(obj: Any) -> Any:
    """Replace every :class:`ChumpyArrayStub` in nested dicts/lists/tuples by its array ``state['x']``."""
    if isinstance(obj, ChumpyArrayStub):
        st = getattr(obj, "state", None)
        if not isinstance(st, dict) or "x" not in st:
            raise pickle.UnpicklingError("a chumpy.ch.Ch object holds no array 'x'; convert the file to .npz first")
        return np.asarray(st["x"])
    if isinstance(obj, dict):
        return {k: _replace_chumpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_chumpy(v) for v in obj)
    return obj


def restricted_load(path: str | os.PathLike, what: str = "pickle file", *, allow_chumpy: bool = False) -> Any:
    """Load an arrays-only pickle (e.g. an SMPL-layout ``.pkl``) through :class:`RestrictedUnpickler`.

    ``allow_chumpy=True``: ``chumpy.ch.Ch`` objects come back as the numpy array they store (``x``).
    """
    p = require_file(path, what)
    try:
        with open(p, "rb") as f:
            out = _replace_stubs(RestrictedUnpickler(f, encoding="latin1", allow_chumpy=allow_chumpy).load())
        return _replace_chumpy(out) if allow_chumpy else out
    except pickle.UnpicklingError as e:
        raise DataError(f"{p}: {e}") from None
    except Exception as e:
        raise DataError(f"corrupt {what} {p}: {type(e).__name__}: {e}") from None


def restricted_loads(data: bytes) -> Any:
    """In-memory variant of :func:`restricted_load` (raises :class:`DataError`)."""
    try:
        return _replace_stubs(RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load())
    except pickle.UnpicklingError as e:
        raise DataError(str(e)) from None
