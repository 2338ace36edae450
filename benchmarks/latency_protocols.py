"""How steady is a latency ratio on this machine? Two ViTs (the NViT benchmark's cached dense teacher and its
uniform-width model at s = 0.513, about half its latency), timed repeatedly under three protocols:

- ``blocks_2``: per round, 5 timed calls of the dense model, then 5 of the small one; median of per-round ratios
  over 5 rounds (the old ``nvit.api.latency_ratio``);
- ``blocks_3``: per round, 10 calls each of the dense model and two identical copies of the small one (the old
  final measurement of ``benchmarks/nvit.py``), 5 rounds;
- ``pairs``: ``tenfold.core.latency.measure_ratio``, 30 interleaved single-call pairs (ABBA), median ratio.

    OMP_NUM_THREADS=1 python -m benchmarks.latency_protocols      # about 5 min on one core

The spread of each protocol's repeats is the noise a latency-window goal has to live with. Batch 64, process
CPU time, one thread. Needs the dense teacher cached by ``python -m benchmarks.nvit`` (trains it otherwise).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from benchmarks.common import clock, goal, parser, write_result
from benchmarks.nvit import dense_teacher, uniform_model
from tenfold.core.latency import measure_ratio
from tenfold.nvit.api import time_model


def blocks(models: list[torch.nn.Module], repeats: int, rounds: int = 5) -> list[float]:
    """Median over rounds of latency(model_k) / latency(models[0]) per model k >= 1, blocks of calls per model."""
    per: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for k, m in enumerate(models):
            per[k].append(time_model(m, 64, repeats=repeats, generator=torch.Generator().manual_seed(0)).cpu_median)
    return [statistics.median(a / d for a, d in zip(per[k], per[0])) for k in range(1, len(models))]


def main() -> None:
    p = parser(__doc__.splitlines()[0], "cifar10-test")
    p.add_argument("--repeats", type=int, default=4, help="how many times each protocol is run")
    a = p.parse_args()
    torch.set_num_threads(1)
    started = clock()
    dense, _ = dense_teacher(argparse.Namespace(dense_steps=2000, batch=64, train_limit=None,
                                                train_data="cifar10-train"))
    small = uniform_model(dense, 0.513).eval()
    twin = copy.deepcopy(small)
    x = torch.rand(64, *dense.input_size, generator=torch.Generator().manual_seed(0))
    reads: dict[str, list[float]] = {"blocks_2": [], "blocks_3": [], "pairs": []}
    for _ in range(a.repeats):
        reads["blocks_2"] += blocks([dense, small], 5)
        reads["blocks_3"] += blocks([dense, small, twin], 10)
        reads["pairs"].append(measure_ratio(dense, small, (x,), pairs=30).ratio)
        print({k: [round(v, 3) for v in vs] for k, vs in reads.items()}, flush=True)
    figures = {"models": "dense tiny CIFAR ViT vs its uniform-width model (s = 0.513), batch 64, process CPU time",
               "reads": reads,
               "range": {k: [min(v), max(v)] for k, v in reads.items()},
               "stdev": {k: statistics.stdev(v) for k, v in reads.items()}}
    width = {k: max(v) - min(v) for k, v in reads.items()}
    goals = [goal("interleaved pairs are steadier than either block protocol (range of the repeats)",
                  "pairs range < each block range", {k: round(v, 3) for k, v in width.items()},
                  width["pairs"] < min(width["blocks_2"], width["blocks_3"]))]
    write_result("latency_protocols", figures, goals, device="cpu", out=a.out, started=started)


if __name__ == "__main__":
    main()
