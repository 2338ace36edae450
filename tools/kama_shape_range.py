"""The fitted shape coefficients of KAMA's default fit on SYNTHETIC procedural bodies: real-size keypoints at 0 / 10 /
25 / 50 mm noise, and clean keypoints scaled about the pelvis. Where the extreme-shape warning's threshold
(``articulate.EXTREME_BETA``) comes from.

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/kama_shape_range.py [--bodies 30]
"""

from __future__ import annotations

import argparse
import importlib
import json
import warnings

import torch

from tenfold.kama.config import Config
from tenfold.kama.procedural import procedural_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bodies", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    verbs = importlib.import_module("tenfold.kama.verbs")
    model, cfg = procedural_model(0), Config()
    out: dict[str, dict[str, float]] = {}

    def fit(X: torch.Tensor) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return verbs._fit(cfg, model, X, None)

    for noise in (0.0, 10.0, 25.0, 50.0):
        s = verbs._synthetic_bodies(model, args.bodies, 1, noise_mm=noise)
        out[f"noise {noise:g} mm"] = {"max |beta|": round(float(fit(s["keypoints"])["betas"].abs().max()), 2)}
    X = verbs._synthetic_bodies(model, args.bodies, 1)["clean"]
    for scale in (0.3, 0.5, 0.8, 1.25, 2.0):
        r = fit((X - X[:, :1]) * scale + X[:, :1])
        worst = r["betas"].abs().amax(1)
        out[f"scaled x{scale:g}"] = {"max |beta|": round(float(worst.max()), 2),
                                      "least body's max |beta|": round(float(worst.min()), 2),
                                      "mean keypoint error mm": round(float(r["residual"].mean() * 1e3), 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
