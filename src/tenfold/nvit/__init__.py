"""NViT (Yang et al., CVPR 2023; arXiv 2110.04869): global structural ViT pruning with Hessian-aware
saliency and a latency lookup table. Verbs: ``lut``, ``prune``, ``finetune``, ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tenfold.nvit.api import build, export, finetune, lut, prune
from tenfold.nvit.config import PRESETS, Config
from tenfold.nvit.model import GatedViT, ViTSpec, from_timm, load_dense, macs_params, save_dense
from tenfold.nvit.prune import LatencyModel, prune_step

__all__ = ["PRESETS", "VERBS", "Config", "GatedViT", "LatencyModel", "ViTSpec", "build", "demo", "from_timm",
           "load_dense", "macs_params", "prune_step", "save_dense", "smoke_options"]

VERBS = {"lut": lut, "prune": prune, "finetune": finetune, "export": export}
DISTRIBUTED_VERBS = ("finetune",)  # DDP under torchrun; lut, prune (its batches are not sharded) and export: rank 0


def smoke_options(verb: str, earlier: dict[str, Path]) -> dict[str, Any]:
    """Options each verb needs in the end-to-end smoke test (earlier verbs' run directories)."""
    if verb == "prune":
        return {"lut": str(earlier["lut"] / "lut.json")}
    if verb == "finetune":
        return {"model": str(earlier["prune"])}
    if verb == "export":
        return {"model": str(earlier["finetune"] / "model.json"), "lut": str(earlier["lut"] / "lut.json"),
                "repeats": 2}
    return {}


def demo(run_dir: Path):
    """SYNTHETIC data: prune a 16-px ViT to 50 % of a MACs-proportional LUT, fine-tune, export, report."""
    from tenfold.core.report import Section

    cfg = PRESETS["smoke"]
    run_dir = Path(run_dir)
    dirs = {}
    metrics: dict[str, Any] = {}
    for verb, fn in VERBS.items():
        d = run_dir / verb
        d.mkdir(parents=True, exist_ok=True)
        opts = smoke_options(verb, dirs)
        if verb == "prune":  # a LUT measured on a 16-px model is mostly timer noise: prune on the MACs LUT
            opts.pop("lut", None)
        out = fn(cfg, d, **opts)
        dirs[verb] = d
        metrics.update({f"{verb}_{k}": v for k, v in out.items() if isinstance(v, (int, float))})
    return Section("nvit: global latency-aware ViT pruning (smoke, SYNTHETIC data)",
                   "A 16-px ViT (E 32, 2 blocks) on seeded synthetic images, pruned to 50 % of a SYNTHETIC "
                   "MACs-proportional LUT (a LUT measured on so small a model is mostly timer noise; the lut "
                   "step still measures one on this CPU for the export report), sliced to a dense model, "
                   "fine-tuned with KD and exported to ONNX.",
                   metrics, [dirs["prune"] / "dims.png"])
