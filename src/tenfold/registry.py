"""The ten methods, in a fixed order, and how to find the implemented ones.

A method is implemented when its subpackage ``tenfold.<name>`` exists and exposes ``VERBS``
(a dict of verb name -> function ``verb(cfg, run_dir, **typed_kwargs) -> dict``), ``Config``
and ``PRESETS``; it may also expose ``demo(run_dir) -> dict`` for ``tenfold demo`` and
``DISTRIBUTED_VERBS``, the verbs that run on every rank under torchrun (the others run on rank 0 alone).
Modules are imported lazily, only when a command needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

METHODS: dict[str, str] = {
    "nvit": "NViT: global structural ViT pruning with Hessian-aware saliency and a latency lookup table",
    "hant": "HANT: hardware-aware network transformation",
    "gradinversion": "GradInversion: images and labels from averaged gradients",
    "inversion": "Zero-shot direct model inversion",
    "lsgm": "LSGM: score-based generative model in a VAE latent space",
    "kama": "KAMA: analytic body-mesh articulation from 26 3D keypoints",
    "handpose": "Semi-supervised hand pose with an adversarial motion model",
    "gaze": "Weakly-supervised 3D gaze from 'looking at each other' labels",
    "matching": "Multi-level contrastive learning for semantic matching",
    "rendering": "Indoor inverse rendering with Volumetric Spherical Gaussian lighting",
}


def load_method(name: str) -> ModuleType | None:
    """Import ``tenfold.<name>`` if it is implemented, else return None."""
    if name not in METHODS:
        raise KeyError(name)
    if importlib.util.find_spec(f"tenfold.{name}") is None:
        return None
    mod = importlib.import_module(f"tenfold.{name}")
    return mod if hasattr(mod, "VERBS") else None


def implemented() -> list[str]:
    """Names of the methods whose subpackage is present and complete."""
    return [m for m in METHODS if load_method(m) is not None]
