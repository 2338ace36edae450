"""LSGM diagnosis (session 2): why the score prior stayed at N(0, I), on MNIST's *validation* split.

Trains one stage-1 VAE (cached in the work dir), then stage-2 variants on copies of it, and prints per variant the
mean mixing coefficient alpha, the validation NELBO by DSM (4 draws, mean +- SE) and FD-CNN of 500 decoder means.
The FD reference is 500 *held-out* grey images (as in the runs behind the README's "What we tried" table; the
NELBO, which drove every choice, is on the validation split only).

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_diagnosis 2000 1000 \\
        '[{"end_to_end": false, "ema": 0.995, "lr_score": 0.001, "lr_mix": 0.0}]' diag
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_diagnosis 2000 1000 \\
        '[{"end_to_end": false, "ema": 0.995, "lr_score": 0.001, "lr_mix": 0.01},
          {"end_to_end": true, "ema": 0.995, "lr_score": 0.001, "lr_mix": 0.01}]' diag
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_diagnosis 2000 200 \\
        '[{"end_to_end": false, "ema": 0.999, "lr_score": 0.0003, "lr_mix": 0.0}]' diag   # session 1's knobs

Arguments: stage-1 steps, stage-2 steps, a JSON list of Config overrides (one per variant), a work-dir tag under
``$TENFOLD_CACHE/lsgm-diagnosis`` (default ``~/.cache/tenfold``), optional JSON of size overrides.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from tenfold.lsgm import PRESETS
from tenfold.lsgm.data import load_split
from tenfold.lsgm.fd import fd, feature_cnn
from tenfold.lsgm.train import generate, load_model, nelbo, train_stages


def main() -> None:
    from benchmarks.common import OneLineParser

    p = OneLineParser(description=__doc__.splitlines()[0])  # --help (it read sys.argv by position: a traceback)
    p.add_argument("stage1_steps", type=int)
    p.add_argument("stage2_steps", type=int)
    p.add_argument("variants", type=json.loads, help="a JSON list of Config overrides, one per variant")
    p.add_argument("tag", help="work-dir tag under $TENFOLD_CACHE/lsgm-diagnosis")
    p.add_argument("sizes", nargs="?", type=json.loads, default={}, help="JSON of size overrides")
    a = p.parse_args()
    torch.set_num_threads(1)
    s1, s2, variants, tag = a.stage1_steps, a.stage2_steps, a.variants, a.tag
    size = dict(vae_ch=16, latent_ch=4, score_ch=32, batch_size=64, warmup=100, ckpt_every=10**9, log_every=100,
                ode_tol=1e-3)
    size.update(a.sizes)
    env = os.environ.get("TENFOLD_CACHE")
    work = (Path(env).expanduser() if env else Path.home() / ".cache" / "tenfold") / "lsgm-diagnosis" / tag
    split = load_split("mnist-test", 0, image_size=28)
    fdnet = feature_cnn(split.train, split.train_labels, key="mnist-test")
    real = split.heldout_grey[:500]
    base = dataclasses.replace(PRESETS["mnist"], **size, stage1_steps=s1)
    xv = torch.bernoulli(split.val, generator=torch.Generator().manual_seed(1))  # validation, binarised once
    d0 = work / "vae"
    if not any(d0.glob("model*")):
        train_stages(dataclasses.replace(base, stage2_steps=0), d0, split)
    vae = load_model(d0)
    g = generate(vae, 500, tol=1e-3, batch=500)
    print(f"VAE val nelbo {nelbo(vae, xv, ode=False)['vae'].mean():.2f} fd {fd(fdnet, g['mean'], real):.1f}",
          flush=True)
    for v in variants:
        name = "_".join(f"{k}{v[k]}" for k in v)
        d = work / name
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(d0 / "stage1", d / "stage1")
        cfg = dataclasses.replace(base, stage2_steps=s2, **{k: tuple(x) if isinstance(x, list) else x
                                                            for k, x in v.items()})
        t0 = time.process_time()
        train_stages(cfg, d, split, resume=True)
        cpu = time.process_time() - t0
        m = load_model(d)
        rd = torch.stack([nelbo(m, xv, ode=False, seed=s)["dsm"] for s in range(4)]).mean(0)
        g = generate(m, 500, tol=1e-3, batch=500)
        with torch.no_grad():
            alpha = float(m.score.alpha().mean())
        print(f"{name}: cpu {cpu:.0f} alpha {alpha:.3f} val nelbo_dsm {rd.mean():.2f}+-"
              f"{rd.std() / math.sqrt(len(rd)):.2f} fd {fd(fdnet, g['mean'], real):.1f} nfe {g['nfe']}", flush=True)


if __name__ == "__main__":
    main()
