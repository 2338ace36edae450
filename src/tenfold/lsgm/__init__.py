"""LSGM (Vahdat, Kreis, Kautz, NeurIPS 2021): a score-based generative model trained in a VAE's latent space.

Public API: ``Config``/``PRESETS``; the maths (``VPSDE``, ``GeometricVPSDE``, ``sample_t``, ``MixedScore``,
``cross_entropy_dsm``, ``ode_sample``, ``ode_nll``); the verbs ``train``, ``sample``, ``evaluate``; and for images
already in memory, ``split_tensors`` -> ``train_stages`` -> ``load_model`` -> ``generate`` / ``nelbo`` (README,
"Python").
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from .config import PRESETS, Config
from .data import Split, load_split, split_tensors
from .nets import MixedScore, UNet
from .objective import cross_entropy_dsm
from .ode import ode_nll, ode_sample, sde_sample
from .sde import VPSDE, GeometricVPSDE, sample_t
from .train import evaluate, generate, load_model, nelbo, sample, train, train_stages

__all__ = ["PRESETS", "VERBS", "Config", "GeometricVPSDE", "MixedScore", "Split", "UNet", "VPSDE",
           "cross_entropy_dsm", "demo", "evaluate", "generate", "load_model", "load_split", "nelbo", "ode_nll",
           "ode_sample", "sample", "sample_t", "sde_sample", "smoke_options", "split_tensors", "train",
           "train_stages"]

VERBS = {"train": train, "sample": sample, "evaluate": evaluate}
DISTRIBUTED_VERBS = ("train",)  # DDP under torchrun; sample and evaluate run on rank 0 alone
CHECKPOINT_VERBS = ("sample", "evaluate")  # run with their --checkpoint's config: --preset / --set are refused


def smoke_options(verb: str, earlier_run_dirs: dict[str, Path]) -> dict[str, Any]:
    """Options each verb needs in the end-to-end smoke test (sample/evaluate read train's model)."""
    if verb == "sample":
        return {"checkpoint": str(earlier_run_dirs["train"]), "num_samples": 16}
    if verb == "evaluate":
        return {"checkpoint": str(earlier_run_dirs["train"]), "limit": 16, "fd_samples": 32}
    return {}


def demo(run_dir: Path):
    """The ``digits`` preset on scikit-learn's real 8x8 digits (ships with scikit-learn), binarised: a conv VAE,
    then LSGM end-to-end; held-out NELBO, ODE NFE and samples. Under a minute on one core."""
    from tenfold.core.report import Section

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    cfg = dataclasses.replace(PRESETS["digits"], stage1_steps=200, stage2_steps=200)
    tr = train(cfg, run_dir / "train")
    ev = evaluate(cfg, run_dir / "train", checkpoint=str(run_dir / "train"), fd_samples=0, limit=120)
    metrics = {"held-out NELBO, DSM (nats/image)": ev["nelbo_dsm_nats"],
               "held-out NELBO, ODE (nats/image)": ev["nelbo_ode_nats"],
               "ODE NFE (NLL)": ev["nfe_nll"], "ODE NFE (sampling, tol 1e-3)": tr["sample_nfe"],
               "active latent channels": f"{tr['active_channels']}/{tr['latent_channels']}",
               "train NELBO start -> end": f"{tr['loss_start']:.1f} -> {tr['loss_end']:.1f}"}
    return Section("lsgm: score-based prior in a VAE latent space (sklearn digits, binarised)",
                   "Real 8x8 digits from scikit-learn (seeded 1,337/100/360 split), dynamically binarised. "
                   "Stage 1 trains a conv VAE with a N(0, I) prior, stage 2 trains VAE + mixed-score prior "
                   "end to end (VPSDE, ll_iw); samples come from the probability-flow ODE (dopri5).",
                   metrics, [run_dir / "train" / "samples.png"], seconds=time.perf_counter() - t0)
