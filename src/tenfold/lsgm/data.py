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

import torch
import torch.nn.functional as F

from tenfold.core.data import load_dataset
from tenfold.core.io import DataError

MIN_IMAGES = 20  # the generic split needs a few images in each of train / val / held out


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
        n = len(ds)
        if n < MIN_IMAGES:
            raise DataError(f"{data}: {n} images are too few to split into train / val / held out "
                            f"(lsgm needs at least {MIN_IMAGES})")
        perm = torch.randperm(n, generator=g)
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
    if binarize and x.shape[1] != 1:
        colour = int(((x[:, 0] != x[:, 1]) | (x[:, 1] != x[:, 2])).flatten(1).any(1).float().argmax())
        first = f" (e.g. {ds.ids[colour]})" if ds.ids and colour < len(ds.ids) else ""
        raise DataError(f"{data} has {x.shape[1]}-channel images{first} but binarize=True is for grey images; "
                        "use --set binarize=false (the 8-bit logistic-mixture decoder)")
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
