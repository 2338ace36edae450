"""LSGM colour path on the CPU: the `cifar10` preset's VAE after a short stage 1, reconstructions against N(0, I) draws.

Separates a broken 8-bit decoder from a prior hole: the posterior mean decoded should look like the image (PSNR
well above the per-image mean-colour baseline) while decoded N(0, I) draws need not, until the score prior is
trained. Writes results/lsgm_recon.json and results/lsgm_recon.png (originals, reconstructions, N(0, I) draws).

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_recon            # ~5 min on one core (300 steps, batch 32)
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from benchmarks.common import RESULTS, clock, goal, parser, write_result
from tenfold.lsgm.config import PRESETS
from tenfold.lsgm.data import load_split
from tenfold.lsgm.train import load_model, train_stages


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, 1]."""
    return 10 * torch.log10(1.0 / ((a - b) ** 2).flatten(1).mean(1))


def main() -> None:
    p = parser(__doc__.splitlines()[0], "cifar10-test")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--images", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(1)
    started = clock()
    cfg = dataclasses.replace(PRESETS["cifar10"], data=args.data, device=args.device, amp="none", batch_size=32,
                              stage1_steps=args.steps, stage2_steps=0, warmup=50, log_every=50, ckpt_every=args.steps)
    split = load_split(args.data, cfg.split_seed, image_size=32, binarize=False, num_levels=256)
    with tempfile.TemporaryDirectory() as tmp:
        train_stages(cfg, Path(tmp), split)
        model = load_model(Path(tmp) / "model", cfg)
    x = split.heldout[: args.images]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        _, mu, _ = model.vae.encode(x)
        rec = model.vae.mean_image(model.vae.decode(mu))
        draws = model.vae.mean_image(model.vae.decode(torch.randn(mu.shape, generator=gen)))
    rec_psnr = psnr(rec, x)
    flat_psnr = psnr(x.mean((2, 3), keepdim=True).expand_as(x), x)  # each image's mean colour everywhere
    from torchvision.utils import save_image

    (args.out.parent if args.out else RESULTS).mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([x, rec, draws]), (args.out.parent if args.out else RESULTS) / "lsgm_recon.png",
               nrow=args.images)
    figures = {"preset": "cifar10 (stage 1 only, CPU: batch 32, fp32)", "steps": args.steps, "images": args.images,
               "split": split.description, "reconstruction_psnr_mean": round(float(rec_psnr.mean()), 2),
               "reconstruction_psnr": [round(float(v), 2) for v in rec_psnr],
               "mean_colour_psnr_mean": round(float(flat_psnr.mean()), 2)}
    gain = figures["reconstruction_psnr_mean"] - figures["mean_colour_psnr_mean"]
    goals = [goal("the 8-bit decoder reconstructs: posterior-mean reconstructions beat each image's mean colour by "
                  ">= 3 dB (mean over images)", ">= +3 dB", round(gain, 2), gain >= 3.0)]
    write_result("lsgm_recon", figures, goals, device=args.device, out=args.out, started=started)


if __name__ == "__main__":
    main()
