"""Does choosing LSGM's inactive latent channels on binarised inputs (session 12) pick the same channels as the grey
images did? Trains the benchmark's stage-1 VAE (its seed, sizes and 1,600 steps) and prints the per-channel KL both
ways and whether the active sets agree.

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_inactive_channels mnist-test        # ~1 min; writes nothing
    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_inactive_channels omniglot-small1
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import tempfile

import torch

from tenfold.lsgm.config import PRESETS
from tenfold.lsgm.data import load_split


def main() -> None:
    torch.set_num_threads(1)
    train = importlib.import_module("tenfold.lsgm.train")  # the module (the package exports a train verb)
    data = sys.argv[1] if len(sys.argv) > 1 else "mnist-test"
    base = PRESETS["omniglot" if data.startswith("omniglot") else "mnist"]
    cfg = dataclasses.replace(base, vae_ch=8, latent_ch=4, score_ch=16, batch_size=32, data=data, warmup=160,
                              ckpt_every=10 ** 9, log_every=160, stage1_steps=1600, stage2_steps=1)
    split = load_split(data, 0, image_size=28)
    seen: dict[str, list[float]] = {}
    real = train.channel_kl

    def spy(vae, x, batch=500):  # noqa: ANN001, ANN202
        seen["binarised"] = real(vae, x, batch).tolist()
        seen["grey"] = real(vae, split.train[:2000], batch).tolist()
        return real(vae, x, batch)

    train.channel_kl = spy
    with tempfile.TemporaryDirectory() as tmp:
        train.train_stages(cfg, tmp, split)
    active = {k: [int(v >= cfg.inactive_kl) for v in kl] for k, kl in seen.items()}
    for k, kl in seen.items():
        print(f"{data} KL per channel, {k:<9}: {[round(v, 3) for v in kl]} active {active[k]}")
    print(f"{data} same active set: {active['binarised'] == active['grey']}")


if __name__ == "__main__":
    main()
