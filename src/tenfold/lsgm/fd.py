"""Frechet distance of samples without Inception: FD-CNN on the features of a small classifier that tenfold
trains once on the training split and caches (MNIST, OMNIGLOT, digits), or FD-ResNet56 on the 64-d pooled
features of the real CIFAR-10 ResNet-56 weights. Call it "FD-<net>", never FID."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.io import TenfoldError, TenfoldWarning, load_checkpoint, save_checkpoint
from tenfold.core.metrics import frechet_distance, gaussian_stats


class FeatureCNN(nn.Module):
    """conv32-conv64-pool-fc128 classifier; ``features`` is the 128-d penultimate layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(64 * 16, 128), nn.ReLU())
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, 128)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _cache_dir() -> Path | None:
    v = os.environ.get("TENFOLD_CACHE", "")
    if v.lower() == "off":
        return None
    return Path(v).expanduser() if v else Path.home() / ".cache" / "tenfold"


def feature_cnn(train: torch.Tensor, labels: torch.Tensor, *, key: str, epochs: int = 3, seed: int = 0,
                min_steps: int = 350) -> FeatureCNN:
    """Train (or load from the cache) the FD classifier on grey-level ``train`` images; half of each batch
    is binarised so its features also mean something on binary samples. At least ``min_steps`` optimizer steps
    (more epochs on a small set): 3 epochs of OMNIGLOT's 2,040 images were 93 steps and left the net at 11 %
    held-out accuracy, its features barely telling characters apart; 350 is what 3 epochs of MNIST's 7,500 take."""
    # batches of 64, or the whole set when it is smaller: under 64 images the loop had no batch, so a small folder's
    # FD came from an untrained network (chance accuracy) without a word
    bs = min(64, len(train))
    epochs = max(epochs, -(-min_steps // max(1, len(train) // bs)))
    n_cls = int(labels.max()) + 1
    # the labels are in the key: a folder's images sorted into other classes kept the key (same images, same pixel
    # sum), and the cached classifier either failed to load (another class count) or was taken silently
    lab = hashlib.sha1(labels.to(torch.int64).cpu().contiguous().numpy().tobytes()).hexdigest()[:12]
    h = hashlib.sha1(f"{key}|{tuple(train.shape)}|{float(train.sum()):.3f}|{lab}|{n_cls}|{epochs}|{seed}"
                     .encode()).hexdigest()[:12]
    cache = _cache_dir()
    path = cache / "lsgm" / f"fdcnn-{h}" if cache else None
    net = FeatureCNN(train.shape[1], n_cls)
    if path is not None and path.with_suffix(".json").is_file():
        try:
            state, _ = load_checkpoint(path, method="lsgm-fdcnn")
            net.load_state_dict(state["model"])
            return net.eval()
        except (TenfoldError, RuntimeError, KeyError) as e:  # damaged, or not this classifier: train it again
            warnings.warn(f"the cached FD classifier {path} cannot be used ({str(e).splitlines()[0][:120]}); "
                          "training it again", TenfoldWarning, stacklevel=2)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = FeatureCNN(train.shape[1], n_cls)
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(epochs):
            perm = torch.randperm(len(train), generator=g)
            for i in range(0, len(train) - bs + 1, bs):
                idx = perm[i:i + bs]
                x = train[idx].clone()
                x[:bs // 2] = torch.bernoulli(x[:bs // 2], generator=g)
                loss = F.cross_entropy(net(x), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    if path is not None:
        save_checkpoint(path, {"model": net.state_dict()}, method="lsgm-fdcnn")
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in batches."""
    hits = sum(int((net(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
    return hits / len(x)


@torch.no_grad()
def features(net: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Features of images (N, C, H, W) in [0, 1], in batches: (N, F)."""
    fn = net.features if hasattr(net, "features") else net.forward_features
    return torch.cat([fn(x[i:i + batch]).flatten(1) for i in range(0, len(x), batch)])


def fd(net: nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between two image sets in ``net``'s feature space. Fewer images in a set than feature
    dimensions give a rank-deficient covariance and an FD biased high (a warning says so)."""
    fa, fb = features(net, a), features(net, b)
    n, dims = min(len(fa), len(fb)), fa.shape[1]
    if n <= dims:  # e.g. evaluate --fd-samples 2 printed a number with nothing to say it is not comparable
        warnings.warn(f"Frechet distance from {n} images in {dims}-d features: the covariance estimate is "
                      "rank-deficient and the FD reads high; compare FDs only at equal sample counts, and use "
                      f"several times {dims} samples for a figure to quote", TenfoldWarning, stacklevel=2)
    return frechet_distance(*gaussian_stats(fa), *gaussian_stats(fb))


def cifar_feature_net() -> nn.Module:
    """The real CIFAR-10 ResNet-56 (../shared/data/weights), for FD-ResNet56."""
    from tenfold.core.models import build_model, default_weights

    return build_model("cifar10-resnet56", weights=default_weights("cifar10-resnet56")).eval()
