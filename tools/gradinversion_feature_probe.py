"""Session-20 probe: each image's penultimate features, recovered from the classifier's gradient, as a target.

The last layer's gradient of a batch with known labels is (1/B) Σ_i (softmax(W h_i + b) - e_{y_i}) h_i^T for the
weight and the same sum without h_i for the bias: ten rows of equations in the B unknown feature vectors h_i (the
pooled, post-ReLU input of the classifier). At B = 1 h = ∇W[c] / ∇b[c] exactly. For B > 1 the probe solves the
equations by L-BFGS from the row estimates (h_i >= 0 through a square), and reports the recovery error against the
true features and the equations' relative residual, which an attacker can read without the truth. The attack then
gets α_feat Σ_i ||φ(x̂_i) - h_i||² / Σ_i ||h_i||² added to its objective (before the signed step), φ the same
features of the reconstruction.

On the tuning pool (cifar10-train[1000:4000], never the benchmark's batches), 160 iterations, the ``cpu`` preset
(pyramid 4), oracle labels, eval-mode client, the attack's seed 1. Not a tenfold option (the README's stage 10).
Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/gradinversion_feature_probe.py --alphas 0 0.1 \
        --batches 1:9003 1:9005 4:9006 8:9008 --out /tmp/feature_probe.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def recover_features(model: nn.Module, g: list[torch.Tensor], y: torch.Tensor, iters: int = 300
                     ) -> tuple[torch.Tensor, float]:
    """Features H (B, F) >= 0 that reproduce the classifier's weight and bias gradient for labels ``y``, and the
    equations' residual relative to the gradient's norm."""
    from tenfold.gradinversion.attack import fc_gradients

    dW, db, fc = fc_gradients(model, g)
    B, C = y.numel(), dW.shape[0]
    Y = F.one_hot(y, C).to(dW.dtype)
    W, b = fc.weight.detach(), fc.bias.detach()
    root = torch.stack([dW[c] / db[c] for c in y.tolist()]).clamp_min(0).sqrt().requires_grad_(True)
    opt = torch.optim.LBFGS([root], lr=1, max_iter=iters, line_search_fn="strong_wolfe")
    scale = dW.pow(2).sum() + db.pow(2).sum()

    def residual() -> torch.Tensor:
        H = root ** 2
        D = torch.softmax(H @ W.T + b, 1) - Y
        return ((D.T @ H / B - dW).pow(2).sum() + (D.mean(0) - db).pow(2).sum()) / scale

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = residual()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (root ** 2).detach(), float(residual())


def _true_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's input on the true images (what the recovery should find)."""
    from tenfold.gradinversion.attack import fc_layer

    seen: list[torch.Tensor] = []
    hook = fc_layer(model)[1].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return seen[0]


def _feature_attack(base: Any, H: torch.Tensor, alpha: float) -> Any:
    """``base`` (a GradInversion) with the feature term added to its per-seed objective."""
    from tenfold.gradinversion.attack import fc_layer

    cls = type(base)

    class FeatureTarget(cls):  # type: ignore[misc, valid-type]
        def _seed_loss(self, f, match, recorder, refs, xg, y, mu, sd, create_graph):  # noqa: ANN001, ANN202
            seen: list[torch.Tensor] = []
            # the attack's private copy of the model
            hook = fc_layer(f.net)[1].register_forward_hook(lambda m, i, o: seen.append(i[0]))
            try:
                loss, parts = super()._seed_loss(f, match, recorder, refs, xg, y, mu, sd, create_graph)
            finally:
                hook.remove()
            if alpha > 0:  # the first forward is the one on x̂ (images in the order of the sorted labels, as H)
                loss = loss + alpha * (seen[0] - H).pow(2).sum() / H.pow(2).sum()
            return loss, parts

    base.__class__ = FeatureTarget
    return base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--batches", nargs="+", default=["1:9003", "1:9005", "4:9006", "8:9008"], metavar="B:SEED")
    p.add_argument("--iterations", type=int, default=160)
    p.add_argument("--seed", type=int, default=1, help="the attack's seed (its start images)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)

    from benchmarks.gradinversion import TUNE_POOL
    from tenfold.core.data import load_dataset
    from tenfold.gradinversion import PRESETS, build, simulate_client
    from tenfold.gradinversion.evaluation import image_metrics
    from tenfold.gradinversion.verbs import load_model, pick_batch

    xs, ys = load_dataset("cifar10-train", limit=TUNE_POOL[1]).tensors()
    xs, ys = xs[TUNE_POOL[0]:], ys[TUNE_POOL[0]:]
    models = {"trained": load_model("cifar10-resnet20", "default"),
              "calibrated": load_model("cifar10-resnet20", "none", calibrate_bn_images=512, seed=0)}
    cfg = dataclasses.replace(PRESETS["cpu"], iterations=args.iterations, labels="oracle", seed=args.seed)
    rows: list[dict[str, Any]] = []
    for regime, (model, mean, std) in models.items():
        for spec in args.batches:
            B, s = (int(v) for v in spec.split(":"))
            idx = pick_batch(ys, B, s)
            order = torch.argsort(ys[idx])  # the attack orders its images by label
            x, y = xs[idx][order], ys[idx][order]
            g = simulate_client(model, x, y, "eval")
            H, res = recover_features(model, g, y)
            true = _true_features(model, x)
            row: dict[str, Any] = {"regime": regime, "B": B, "batch_seed": s, "residual": res,
                                   "feature_error": float((H - true).norm() / true.norm()), "psnr": {}}
            for a in args.alphas:
                r = _feature_attack(build(cfg), H, a).run(model, g, num_images=B, mean=mean, std=std, labels=y,
                                                         bn_ref="running")
                row["psnr"][str(a)] = round(image_metrics(r.images, x)["psnr"], 3)
            rows.append(row)
            print(f"{regime} B={B} s={s}: feature error {row['feature_error']:.3f} (residual {res:.1e}), PSNR "
                  + ", ".join(f"alpha {a}: {v:.2f}" for a, v in row["psnr"].items()), flush=True)
            means = {a: round(statistics.mean(r["psnr"][a] for r in rows), 3) for a in map(str, args.alphas)}
            args.out.write_text(json.dumps({"command": "python tools/gradinversion_feature_probe.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(args).items()), "iterations": args.iterations, "attack_seed": args.seed,
                "mean_psnr": means, "runs": rows}, indent=1))
    print("mean PSNR:", means)


if __name__ == "__main__":
    main()
