"""Classifier evaluation: top-1 / top-5 / per-class accuracy of a model on an image dataset.

:func:`evaluate_classifier` takes any model that maps float images in [0, 1] ``(B, C, H, W)`` to
logits ``(B, K)`` and any dataset with ``.images`` (uint8 ``(N, C, H, W)``), ``.labels`` and
``.classes`` (a :class:`tenfold.core.data.ImageDataset`), or else one whose items are
``(image, label)``. :func:`run_eval` is ``tenfold eval --model NAME --weights FILE --data SPEC``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tenfold.core.io import ConfigError, DataError, InputError, check_device


def _batches(dataset: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(float images in [0, 1] (B, C, H, W), int64 labels (B,))`` on the CPU."""
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if images is not None and labels is not None:  # fast path: slice the uint8 block
        images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
        for i in range(0, images.shape[0], batch_size):
            xb = images[i:i + batch_size]
            xb = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
            yield xb, labels[i:i + batch_size]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for xb, yb in loader:
        yield xb.float(), torch.as_tensor(yb).long()


def evaluate_classifier(model: nn.Module, dataset: Any, batch_size: int = 256, device: str | torch.device = "cpu",
                        progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``model`` on ``dataset``: ``{top1, top5, n, seconds, images_per_second, per_class, correct}``.

    ``top1``/``top5`` are fractions in [0, 1] (``top5`` is top-min(5, K)); ``per_class`` maps each
    class name to its top-1 accuracy (classes absent from the dataset are left out); ``correct`` is the
    per-image top-1 hit (bool ``(n,)``, dataset order), for paired comparisons of two models on the same
    images. The model is put in eval mode for the run and restored afterwards.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n_total = len(dataset)
    if n_total == 0:
        raise DataError("cannot evaluate on an empty dataset")
    dev = check_device(device)
    classes = [str(c) for c in getattr(dataset, "classes", [])]
    was_training = model.training
    model.eval()
    model.to(dev)
    correct1 = correct5 = seen = 0
    per_image: list[torch.Tensor] = []
    hits: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), tqdm(total=n_total, desc="eval", unit="img", disable=not progress,
                                          leave=False) as bar:
            for xb, yb in _batches(dataset, batch_size):
                logits = model(xb.to(dev, non_blocking=True)).float().cpu()  # (B, K)
                if logits.dim() != 2 or logits.shape[0] != xb.shape[0]:
                    raise InputError(f"model must return logits (B, K), got {tuple(logits.shape)}")
                k_classes = logits.shape[1]
                if int(yb.max()) >= k_classes or int(yb.min()) < 0:
                    raise InputError(f"labels reach {int(yb.max())} but the model has {k_classes} outputs")
                if hits is None:
                    size = max(k_classes, len(classes))
                    hits = torch.zeros(size, dtype=torch.long)
                    counts = torch.zeros(size, dtype=torch.long)
                top = logits.topk(min(5, k_classes), dim=1).indices  # (B, k)
                ok1 = top[:, 0] == yb  # (B,)
                correct1 += int(ok1.sum())
                per_image.append(ok1)
                correct5 += int((top == yb[:, None]).any(dim=1).sum())
                hits.index_add_(0, yb, ok1.long())
                counts.index_add_(0, yb, torch.ones_like(yb))
                seen += xb.shape[0]
                bar.update(xb.shape[0])
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    assert hits is not None and counts is not None
    names = [classes[c] if c < len(classes) else str(c) for c in range(hits.numel())]
    per_class = {names[c]: hits[c].item() / counts[c].item() for c in range(hits.numel()) if counts[c] > 0}
    return {"top1": correct1 / seen, "top5": correct5 / seen, "n": seen, "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else float("inf"), "per_class": per_class,
            "correct": torch.cat(per_image)}


def run_eval(model_name: str, weights: str | os.PathLike | None, data_spec: str, batch_size: int = 256,
             device: str = "cpu", limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Build registered model ``model_name`` with ``weights`` (None: its default pretrained file), load
    ``data_spec`` (``NAME`` or ``NAME:PATH``; ``limit`` keeps a class-balanced prefix) and evaluate."""
    from tenfold.core.data import load_dataset
    from tenfold.core.models import build_model, default_weights

    if weights is None:
        weights = default_weights(model_name)
        if weights is None:
            raise ConfigError(f"model '{model_name}' has no default weights; pass --weights FILE")
    model = build_model(model_name, weights=weights)
    ds = load_dataset(data_spec, limit=limit)
    want = tuple(getattr(model, "input_size", ()))
    got = tuple(ds.images.shape[1:])
    if want and got != want:
        raise InputError(f"dataset '{data_spec}' has images {got} (C, H, W) but {model_name} takes {want}")
    k = getattr(model, "num_classes", None)
    if k is not None and len(ds.classes) != k:
        raise InputError(f"dataset '{data_spec}' has {len(ds.classes)} classes but {model_name} predicts {k}")
    out = evaluate_classifier(model, ds, batch_size=batch_size, device=device, progress=progress)
    out.pop("correct")  # per-image hits: for paired comparisons in Python, not for the CLI's report
    return {"model": model_name, "weights": str(Path(weights)), "data": data_spec, "limit": limit, **out}
