"""GradInversion (Yin et al., CVPR 2021): recover a batch of images and labels from averaged gradients.

Python API::

    g = simulate_client(model, x, y, mode="eval")            # what a client shares
    y_hat = recover_labels(g[fc_index], B, "yin")            # step 1: labels from the FC gradient
    res = build(PRESETS["cpu"]).run(model, g, num_images=B, mean=..., std=...)   # steps 2-3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenfold.core.report import Section
from tenfold.gradinversion.attack import (
    AttackResult,
    GradInversion,
    apply_defences,
    attack,
    bn_batch_stats,
    bn_prior,
    calibrate_bn,
    check_gradients,
    grad_match_loss,
    simulate_client,
    total_variation,
)
from tenfold.gradinversion.config import PRESETS, Config, build
from tenfold.gradinversion.labels import count_labels, count_mass_labels, label_accuracy, recover_labels
from tenfold.gradinversion.registration import consensus, register_similarity, register_translation
from tenfold.gradinversion.verbs import attack as attack_verb
from tenfold.gradinversion.verbs import audit, leak

VERBS = {"leak": leak, "attack": attack_verb, "audit": audit}

__all__ = ["PRESETS", "VERBS", "AttackResult", "Config", "GradInversion", "apply_defences", "attack",
           "bn_batch_stats", "bn_prior", "build", "calibrate_bn", "check_gradients", "consensus", "count_labels",
           "count_mass_labels", "demo",
           "grad_match_loss", "label_accuracy", "recover_labels", "register_similarity", "register_translation",
           "simulate_client", "smoke_options", "total_variation"]


def smoke_options(verb: str, earlier_run_dirs: dict[str, Path]) -> dict[str, Any]:
    """Options for the end-to-end smoke test: bundled data (cifar10-mini) and weights, tiny batches."""
    base = {"data": "cifar10-mini", "model": "cifar10-resnet20"}
    if verb == "leak":
        return {**base, "batch_size": 2}
    if verb == "attack":
        return {"target": str(earlier_run_dirs["leak"])} if "leak" in earlier_run_dirs else {**base, "batch_size": 2}
    if verb == "audit":
        return {**base, "batch_sizes": (1,), "noise_sigmas": (1e-2,), "prune_ratios": (0.9,), "iterations": 4}
    return {}


def demo(run_dir: Path) -> Section:
    """Bundled real data (cifar10-mini, ResNet-20 real weights): one client batch of 2, labels restored, a
    short inversion (seconds; far from the paper's 20k iterations), originals above reconstructions."""
    import dataclasses

    run_dir = Path(run_dir)
    # the `cpu` preset's image pyramid (the bundled images are 32 px): +0.08 to +0.28 dB over pixels on three
    # cifar10-mini batches of 2 at this budget (session 17)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=60, group_size=1, pyramid=4)
    m = attack_verb(cfg, run_dir, data="cifar10-mini", batch_size=2, batch_seed=1)
    keys = ("psnr", "ssim", "label_accuracy", "iip_pixel", "iterations", "cpu_seconds")
    return Section(title="gradinversion: images and labels from a shared gradient",
                   summary="A client (ResNet-20, real CIFAR-10 weights) shares the averaged gradient of 2 real "
                           "CIFAR-10 test images (bundled cifar10-mini); labels are restored with the yin_mass rule "
                           "(Yin's row-minimum rule where it is sure) and the images inverted for 60 iterations "
                           "(demo budget; the paper runs 20k).",
                   metrics={k: m[k] for k in keys}, figures=[run_dir / "grid.png", run_dir / "loss.png"])
