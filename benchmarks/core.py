"""Foundation benchmark: the real pretrained CIFAR-10 ResNets on the JPEG test set (even half).

    OMP_NUM_THREADS=1 python -m benchmarks.core [--data cifar10-test:PATH.zip]

Goals (issue: foundation): ResNet-20 top-1 >= 80 %; ResNet-56 scores higher than ResNet-20.
"""

from __future__ import annotations

import torch

from benchmarks.common import clock, goal, parser, write_result
from tenfold.core.data import load_dataset
from tenfold.core.evaluate import evaluate_classifier
from tenfold.core.models import build_model, default_weights


def main() -> None:
    args = parser(__doc__.splitlines()[0], "cifar10-test").parse_args()
    torch.set_num_threads(1)
    started = clock()
    ds = load_dataset(args.data)
    figures = {"data": args.data, "images": len(ds)}
    for depth in (20, 32, 44, 56):
        name = f"cifar10-resnet{depth}"
        weights = default_weights(name)
        model = build_model(name, weights=weights).eval()
        m = evaluate_classifier(model, ds, batch_size=250, device=args.device, progress=False)
        figures[name] = {"top1": m["top1"], "top5": m["top5"], "weights": weights.name,
                         "images_per_second": round(m["images_per_second"], 1)}
        print(f"{name}: top-1 {m['top1']:.4f} top-5 {m['top5']:.4f}")
    r20, r56 = figures["cifar10-resnet20"]["top1"], figures["cifar10-resnet56"]["top1"]
    goals = [goal("ResNet-20 top-1 on the JPEG test set", ">= 0.80", r20, r20 >= 0.80),
             goal("ResNet-56 top-1 above ResNet-20's", f"> {r20}", r56, r56 > r20)]
    write_result("core", figures, goals, device=args.device, out=args.out, started=started)


if __name__ == "__main__":
    main()
