"""The splits LSGM trains and evaluates on (none of them is the paper's split; every result says which).

- ``mnist-test``: the 10,000 MNIST test digits, a seeded permutation into 8,000 train (the last 500 of
  them held back for selection) and 2,000 held out (never contiguous: the halves have different writers).
- ``omniglot-small1``: background-small-1, inverted and area-resized 105 -> 28; drawers _01-_16 train
  (the 16th drawer's 136 images for selection), _17-_20 held out.
- ``digits`` (scikit-learn 8x8): seeded 1,437 / 360. ``cifar10-train`` / ``cifar10-test``: as stored.
- anything else, e.g. your own images as ``folder:PATH`` (see ``tenfold.core.data``): a seeded permutation into
  75 % train, 5 % val and 20 % held out, square images resized to ``image_size`` (area average to shrink).
Binary data: the training images stay grey-level (binarised dynamically at each step); the held-out set
is binarised once with a fixed seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from tenfold.core.data import load_dataset
from tenfold.core.io import DataError

MIN_IMAGES = 20  # the generic split needs a few images in each of train / val / held out


TENSORS = "tensors:"  # the data a model trained on split_tensors' in-memory images records: TENSORS + name


@dataclasses.dataclass
class Split:
    """Float images in [0, 1] (N, C, H, W): train and val (grey), heldout (binarised or K-level), and a description."""

    train: torch.Tensor
    val: torch.Tensor
    heldout: torch.Tensor
    heldout_grey: torch.Tensor
    train_labels: torch.Tensor
    heldout_labels: torch.Tensor
    description: str
    source: str = ""  # TENSORS + name for split_tensors' in-memory images: train_stages records it as the data


def check_images(x: Any, what: str, *, channels: int | None = None, size: int | None = None,
                 binary: bool = False, levels: int | None = None) -> None:
    """Raise DataError unless ``x`` is a float (N, C, H, W) tensor of N >= 1 square images in [0, 1], finite, with
    ``channels`` channels and ``size`` px a side, and (``binary``) only 0 / 1 or (``levels``) on the K-level grid:
    what lsgm's objective reads. A hand-built Split or nelbo's images were taken as they came (0-255 values, NaN,
    colour for a binary decoder, another size) and gave a raw torch error or numbers for another model."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not len(x):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{what} must be a tensor of images (N, C, H, W) with N >= 1, got {shape}")
    if not x.is_floating_point():
        raise DataError(f"{what} must be float images in [0, 1], got {x.dtype} (divide 0-255 images by 255)")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{what} holds NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(f"{what} must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}]"
                        + ("; divide 0-255 images by 255" if hi > 1.5 else ""))
    n, c, h, w = x.shape
    if h != w:
        last = w in (1, 3) and c not in (1, 3)  # (N, H, W, C) read as (N, C, H, W)
        raise DataError(f"{what}: images are {w}x{h}; lsgm needs square images"
                        + ("; these look channels-last (N, H, W, C): x.permute(0, 3, 1, 2)" if last else ""))
    if size is not None and h != size:
        raise DataError(f"{what}: images are {h} px but the model / config has image_size={size}")
    if channels is not None and c != channels:
        raise DataError(f"{what} has {c}-channel images but the model takes {channels}")
    if binary and not bool(((x == 0) | (x == 1)).all()):
        raise DataError(f"{what} must be binary (0 / 1) for the Bernoulli decoder (binarize=True); binarise them "
                        "first, e.g. torch.bernoulli(x)")
    if levels is not None and not binary:
        k = x * (levels - 1)
        if not bool(torch.isclose(k, k.round(), atol=1e-4).all()):
            raise DataError(f"{what} must lie on the {levels}-level grid (round(x * {levels - 1}) / {levels - 1}) "
                            "that the discretised-logistic decoder scores")


def split_tensors(x: torch.Tensor, y: torch.Tensor | None = None, *, split_seed: int = 0, image_size: int = 28,
                  binarize: bool = True, num_levels: int = 256, name: str = "tensors") -> Split:
    """A :class:`Split` of your own in-memory images ``x`` (N, C, H, W) floats in [0, 1] (labels ``y``, default 0):
    the split ``folder:PATH`` data gets (seeded 75 / 5 / 20 %, resized to ``image_size``, held out binarised
    once or put on the ``num_levels`` grid), with the same checks. Train on it with :func:`train_stages`."""
    check_images(x, name)
    if y is None:
        y = torch.zeros(len(x), dtype=torch.long)
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),):
        raise DataError(f"{name}: labels must be a tensor of shape ({len(x)},)")
    if y.is_floating_point() and not (bool(torch.isfinite(y).all()) and torch.equal(y, y.round())):
        raise DataError(f"{name}: labels must be whole class indices, got fractional values (they were truncated)")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{name}: labels must be class indices >= 0, got {int(y.min())}")
    split = _finish_split(*_seeded_split(x.float(), y.long(), name, split_seed, image_size), binarize=binarize,
                          num_levels=num_levels, image_size=image_size, data=name)
    return dataclasses.replace(split, source=TENSORS + name)


def binarize_fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Bernoulli(x) with a fixed seed (the held-out set is binarised once)."""
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def _keys_in_order(x: torch.Tensor) -> list[bytes]:
    import hashlib

    return [hashlib.sha1(im.contiguous().numpy().tobytes()).digest() for im in x.detach().cpu().float()]


def image_keys(x: torch.Tensor) -> set[bytes]:
    """One digest per image of ``x`` (N, ...): finds the same image in two loads of the same files."""
    return set(_keys_in_order(x))


def load_split(data: str, split_seed: int = 0, *, image_size: int = 28, binarize: bool = True,
               num_levels: int = 256, all_heldout: bool = False, exclude: set[bytes] | None = None) -> Split:
    """Load ``data`` (a spec ``NAME`` or ``NAME:PATH``) and split it as the module docstring says.
    ``all_heldout``: every image is held out (evaluating a model on a dataset it was not trained on), except those
    whose :func:`image_keys` are in ``exclude`` (the model's training images: the same files under another spec,
    ``mnist-test:PATH`` for ``mnist-test``, were scored as held out)."""
    name = data.split(":", 1)[0].strip().lower()
    ds = load_dataset(data)
    x, y = ds.tensors()
    g = torch.Generator().manual_seed(split_seed)
    if name == "mnist-test":
        if len(ds) < 10000:
            raise DataError(f"{data}: expected the 10,000 MNIST test images, got {len(ds)}")
        perm = torch.randperm(len(ds), generator=g)
        tr, va, ho = perm[:7500], perm[7500:8000], perm[8000:10000]
        desc = f"MNIST test set, seeded permutation (seed {split_seed}): 7,500 train + 500 val / 2,000 held out"
    elif name == "omniglot-small1":
        x = 1.0 - F.interpolate(x, size=(image_size, image_size), mode="area")  # strokes -> 1
        drawer = torch.tensor([int(i.rsplit("_", 1)[1].split(".")[0]) for i in ds.ids])
        tr, va = torch.nonzero(drawer <= 15).flatten(), torch.nonzero(drawer == 16).flatten()
        ho = torch.nonzero(drawer >= 17).flatten()
        desc = "OMNIGLOT background small 1 at 28x28: drawers 1-15 train, 16 val, 17-20 held out"
    elif name == "digits":
        perm = torch.randperm(len(ds), generator=g)
        tr, va, ho = perm[:1337], perm[1337:1437], perm[1437:]
        desc = f"scikit-learn digits 8x8, seeded permutation (seed {split_seed}): 1,337 train + 100 val / 360 held out"
    elif name.startswith("cifar10"):
        perm = torch.randperm(len(ds), generator=g)
        n_val = min(1000, len(ds) // 10)  # held out and val disjoint (they were the same images before session 14)
        ho, va, tr = perm[:n_val], perm[n_val:2 * n_val], perm[2 * n_val:]
        desc = (f"{name}: {len(tr)} train, {n_val} val, {n_val} held out, disjoint (evaluate on cifar10-test with "
                "--data)")
    else:  # any other dataset, e.g. a user's folder:PATH: seeded 75 / 5 / 20 %, resized to image_size
        x, y, tr, va, ho, desc = _seeded_split(x, y, data, split_seed, image_size)
    return _finish_split(x, y, tr, va, ho, desc, binarize=binarize, num_levels=num_levels, image_size=image_size,
                         data=data, ids=ds.ids, all_heldout=all_heldout, exclude=exclude)


def _seeded_split(x: torch.Tensor, y: torch.Tensor, data: str, split_seed: int, image_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The generic split (a folder's, or tensors'): seeded 75 / 5 / 20 %, square images resized to image_size."""
    n = len(x)
    if n < MIN_IMAGES:
        raise DataError(f"{data}: {n} images are too few to split into train / val / held out "
                        f"(lsgm needs at least {MIN_IMAGES})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_ho, n_va = n // 5, max(1, n // 20)
    ho, va, tr = perm[:n_ho], perm[n_ho:n_ho + n_va], perm[n_ho + n_va:]
    h, w = x.shape[-2:]
    if h != w:
        raise DataError(f"{data} images are {w}x{h}; lsgm needs square images (crop them first)")
    desc = (f"{data}: seeded permutation (seed {split_seed}): {len(tr)} train + {len(va)} val / {len(ho)} "
            f"held out")
    if h != image_size:  # area average to shrink (no aliasing), bilinear to enlarge
        x = F.interpolate(x, size=(image_size, image_size), mode="area" if h > image_size else "bilinear",
                          align_corners=None if h > image_size else False).clamp(0, 1)
        desc += f", resized {h} -> {image_size} px"
    return x, y, tr, va, ho, desc


def _finish_split(x: torch.Tensor, y: torch.Tensor, tr: torch.Tensor, va: torch.Tensor, ho: torch.Tensor,
                  desc: str, *, binarize: bool, num_levels: int, image_size: int, data: str,
                  ids: list[str] | None = None, all_heldout: bool = False, exclude: set[bytes] | None = None
                  ) -> Split:
    """The checks every split passes, and its held-out set binarised once or put on the K-level grid."""
    if binarize and x.shape[1] == 3:
        tinted = ((x[:, 0] != x[:, 1]) | (x[:, 1] != x[:, 2])).flatten(1).any(1)
        if not bool(tinted.any()):  # grey content in colour files (a grey palette PNG among grey ones, grey JPEGs
            x = x[:, :1]            # saved as RGB): read as grey, as the binarised decoder needs
            desc += ", colour files with grey content read as grey"
        else:
            k = int(tinted.float().argmax())
            first = f" (e.g. {ids[k]})" if ids and k < len(ids) else ""
            raise DataError(f"{data} has colour images{first} but binarize=True is for grey images; use "
                            "binarize=false (the 8-bit logistic-mixture decoder; CLI: --set binarize=false)")
    if x.shape[1] not in (1, 3):  # 2-channel tensors read x[:, 2] above
        raise DataError(f"{data} has {x.shape[1]}-channel images; lsgm takes grey (1) or colour (3) images")
    if x.shape[-1] != image_size:
        raise DataError(f"{data} images are {x.shape[-1]} px but the config says image_size={image_size}")
    if all_heldout:
        ho = torch.arange(len(x))
        desc = f"{data}: all {len(x)} images held out (not the model's training data)"
        if exclude:
            seen = [k in exclude for k in _keys_in_order(x)]
            ho = torch.tensor([i for i, s in enumerate(seen) if not s], dtype=torch.long)
            if not len(ho):
                raise DataError(f"{data}: every image is one the model trained on; nothing is held out")
            if len(ho) < len(x):
                desc = (f"{data}: {len(ho)} of {len(x)} images held out; the other {len(x) - len(ho)} are the "
                        "model's training images")
    held = binarize_fixed(x[ho], 12345) if binarize else torch.round(x[ho] * (num_levels - 1)) / (num_levels - 1)
    return Split(x[tr], x[va], held, x[ho], y[tr], y[ho], desc)
