"""Operators dispatched per LSGM stage-2 step, by part of the step (CPU, `cifar10` preset networks, batch 4).

On a GPU a small-batch step is bounded by the host launching kernels, so the operator count per step is the
figure to cut; this counts every aten operator (views apart) through a TorchDispatchMode. On the CPU Adam runs its
per-tensor loop, where CUDA uses the multi-tensor kernels, so its row overstates the GPU's.

    OMP_NUM_THREADS=1 python -m benchmarks.lsgm_op_count          # ~1 min; prints a table, writes
                                                                  # results/lsgm_op_count.json
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import OneLineParser, clock, write_result
from tenfold.core import engine
from tenfold.lsgm import nets
from tenfold.lsgm.config import PRESETS
from tenfold.lsgm.data import load_split

VIEWS = {"aten.view", "aten.detach", "aten.t", "aten.as_strided", "aten.unsqueeze", "aten.transpose", "aten.expand",
         "aten._unsafe_view", "aten.slice", "aten.select", "aten.alias", "aten.reshape", "aten.permute",
         "aten.squeeze"}


def main() -> None:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/lsgm_op_count.json)")
    args = p.parse_args()
    started = clock()
    torch.set_num_threads(1)
    train = importlib.import_module("tenfold.lsgm.train")
    section, counts, steps = ["other"], collections.Counter(), [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if str(func.overloadpacket) not in VIEWS:
                counts[section[-1]] += 1
            return func(*args, **(kwargs or {}))

    def label(obj: Any, attr: str, name: str) -> None:
        f = getattr(obj, attr)

        def g(*a: Any, **k: Any) -> Any:
            section.append(name)
            try:
                return f(*a, **k)
            finally:
                section.pop()
        setattr(obj, attr, g)

    label(engine.EMA, "update", "EMA update")
    label(nets.SpectralReg, "forward", "spectral regulariser (forward)")
    label(torch.optim.Adam, "step", "Adam (CPU per-tensor loop)")
    label(torch.Tensor, "backward", "backward")
    fit = train.fit

    def counted_fit(stage: Any, step: Callable, *a: Any, **kw: Any) -> Any:
        def s(net: Any, batch: Any) -> Any:
            steps[0] += 1
            section.append("forward (U-Net, VAE, objective)")
            try:
                return step(net, batch)
            finally:
                section.pop()
        with Count():
            return fit(stage, s, *a, **kw)

    train.fit = counted_fit
    cfg = dataclasses.replace(PRESETS["cifar10"], device="cpu", amp="none", batch_size=4, stage1_steps=0,
                              stage2_steps=3, log_every=50, ckpt_every=0)
    split = load_split("cifar10-mini", 0, image_size=32, binarize=False, num_levels=256)
    with tempfile.TemporaryDirectory() as tmp:
        train.train_stages(cfg, Path(tmp), split)
    n = steps[0]
    print(f"operators per stage-2 step (views excluded), mean of {n} steps:")
    for name, c in counts.most_common():
        print(f"  {c / n:8.0f}  {name}")
    print(f"  {sum(counts.values()) / n:8.0f}  total")
    per_step = {name: round(c / n, 1) for name, c in counts.most_common()}
    write_result("lsgm_op_count", {"steps": n, "batch_size": cfg.batch_size, "preset": "cifar10",
                                   "operators_per_step": per_step, "total": round(sum(counts.values()) / n, 1)},
                 [], out=args.out, started=started)


if __name__ == "__main__":
    main()
