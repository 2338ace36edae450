"""Session-23 probe of GradInversion's group pull at B > 1: does it beat the plain mean of G independent runs there?

Every group study before (the README's stages 2, 7 and 9, the benchmark's group study) ran B = 1; the paper uses the
group term on batches. Tuning pool only (cifar10-train[1000:4000], never the benchmark's batches), oracle labels,
eval-mode client, the ``cpu`` preset with its pyramid, G = 3, 160 iterations, attack seed 0. ``alpha`` 0 is the
control (no registration, no pull: the plain mean of the G runs). Prints one JSON line per batch and writes them all.

Not a tenfold option (the pull did not pay, the README's stage 11). Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/gradinversion_group_bgt1.py calibrated 4 \
        9030,9031,9032,9033,9034,9035 0,0.05,0.2 --out /tmp/cal4.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("regime", choices=("trained", "calibrated"))
    p.add_argument("batch_size", type=int)
    p.add_argument("batch_seeds", help="comma-separated pick_batch seeds in the tuning pool")
    p.add_argument("alphas", help="comma-separated alpha_group values (0: the control)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(1)

    from benchmarks.gradinversion import TUNE_POOL
    from tenfold.core.data import load_dataset
    from tenfold.gradinversion import PRESETS, build, simulate_client
    from tenfold.gradinversion.evaluation import image_metrics
    from tenfold.gradinversion.verbs import load_model, pick_batch

    B, alphas = a.batch_size, [float(v) for v in a.alphas.split(",")]
    xs, ys = load_dataset("cifar10-train", limit=TUNE_POOL[1]).tensors()
    xs, ys = xs[TUNE_POOL[0]:], ys[TUNE_POOL[0]:]
    model, mean, std = (load_model("cifar10-resnet20", "default") if a.regime == "trained" else
                        load_model("cifar10-resnet20", "none", calibrate_bn_images=512, seed=0))
    rows = []
    for s in (int(v) for v in a.batch_seeds.split(",")):
        idx = pick_batch(ys, B, s)
        g = simulate_client(model, xs[idx], ys[idx], "eval")
        row: dict[str, object] = {"batch_seed": s}
        for alpha in alphas:
            cfg = dataclasses.replace(PRESETS["cpu"], iterations=160, labels="oracle", group_size=3,
                                      alpha_group=alpha, group_every=1,
                                      registration="translation" if alpha else "none", seed=0)
            t = time.process_time()
            r = build(cfg).run(model, g, num_images=B, mean=mean, std=std, labels=ys[idx], bn_ref="running")
            row[str(alpha)] = image_metrics(r.images, xs[idx])["psnr"]
            row[f"{alpha}_seeds"] = [image_metrics(r.seeds[k], xs[idx])["psnr"] for k in range(3)]
            row[f"{alpha}_cpu"] = time.process_time() - t
        print(json.dumps(row), flush=True)
        rows.append(row)
    a.out.write_text(json.dumps({"regime": a.regime, "B": B, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
