"""Session-18 probe of GradInversion's search: does the image step improve when it sees how ReLU patterns move?

In a ReLU network the derivative of the gradient-matching loss with respect to the image ignores how the activation
masks change (ReLU's mask has derivative zero almost everywhere), so the step only sees the current linear region.
This probe swaps ``torch.nn.functional.relu`` for a ReLU whose forward and first derivative are exact (so the shared
gradient and the objective's value are unchanged) but whose mask, differentiated again in the double backward, is the
smooth bump beta·s·(1 - s), s = sigmoid(beta·z), instead of zero. It scores the ``cpu`` preset's attack (the pyramid)
on the tuning pool with ``benchmarks.gradinversion.tune``. ``--beta 0`` is the unmodified attack (the control).

Not a tenfold option: it lost at every beta tried (the README's stage 8). Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/gradinversion_relu_surrogate.py --beta 10 --out /tmp/surrogate_10.json
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

BETA = 0.0


class _MaskWithSmoothDerivative(torch.autograd.Function):
    """1[z > 0] forward; backward beta·s(1 - s), the derivative of sigmoid(beta·z), instead of zero."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        s = torch.sigmoid(BETA * z)
        return g * BETA * s * (1 - s)


class _ReLU(torch.autograd.Function):
    """max(z, 0) with the exact mask as its derivative, written with differentiable ops so that the double backward
    goes through :class:`_MaskWithSmoothDerivative`."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return g * _MaskWithSmoothDerivative.apply(z)


def main() -> None:
    global BETA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta", type=float, required=True, help="sharpness of the bump; 0: the exact ReLU (control)")
    ap.add_argument("--out", required=True, help="the tuning JSON to write")
    ap.add_argument("--iterations", type=int, default=160)
    args = ap.parse_args()
    BETA = args.beta
    if BETA > 0:
        exact = F.relu
        F.relu = lambda z, inplace=False: _ReLU.apply(z)  # tenfold's CIFAR ResNets call F.relu
        assert F.relu is not exact
    import benchmarks.gradinversion as bg

    name = f"pyramid 4, decay 0.25, ReLU surrogate beta {BETA:g}"
    bg.CANDIDATES[name] = dict(bg.PYRAMID)
    bg.tune([name], args.iterations, args.out)


if __name__ == "__main__":
    main()
