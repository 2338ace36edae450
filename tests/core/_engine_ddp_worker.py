"""Helper for tests/core/test_engine.py: one small regression run through ``engine.fit``.

Imported by the test for the single-process reference, and started by the test as
``python -m torch.distributed.run --nproc-per-node 2 _engine_ddp_worker.py RUN_DIR OUT [MODE]`` for the
two-process (gloo) run; rank 0 then writes the final parameters to ``OUT`` (safetensors). MODE: ``plain``
(default), ``full`` (checkpoints every 3 steps, a log line every 4), ``kill`` (the same, killed inside step 5)
or ``resume`` (the same, resumed from the newest checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from tenfold.core.engine import dist_info, fit

STEPS, BATCH, N = 6, 16, 96


def build() -> tuple[nn.Module, TensorDataset]:
    """A seeded MLP (no dropout: the comparison must not depend on per-rank RNG) and data."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 8, generator=g)
    y = torch.sin(x @ torch.randn(8, 1, generator=g))
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    return model, TensorDataset(x, y)


CALLS = [0]
KILL_AT = [0]  # a step_fn call that raises (0: none), as a process killed inside that step


def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    CALLS[0] += 1
    if CALLS[0] == KILL_AT[0]:
        raise KeyboardInterrupt
    x, y = batch
    mse = F.mse_loss(model(x), y)
    # the same tensor as loss and as a logged part (the loss check's all-reduce overwrote it once), and a part
    # that differs per rank (its partial log sums must survive a resume per rank)
    return {"loss": mse, "mse": mse, "xmean": x.mean()}


def train(run_dir: str | Path, mode: str = "plain") -> tuple[nn.Module, dict]:
    """Six SGD-momentum steps of global batch 16 over shuffled data (per rank: 16 / world)."""
    model, data = build()
    ckpt = mode != "plain"
    KILL_AT[0] = 5 if mode == "kill" else 0
    out = fit(model, step_fn, data, run_dir=run_dir, steps=STEPS, batch_size=BATCH,
              optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.2, momentum=0.9),
              shuffle=True, seed=3, log_every=4 if ckpt else 1, ckpt_every=3 if ckpt else None, progress=False,
              tensorboard=False, resume=mode == "resume")
    return model, out


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, out_path = sys.argv[1], sys.argv[2]
    model, metrics = train(run_dir, sys.argv[3] if len(sys.argv) > 3 else "plain")
    if dist_info().is_main:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, out_path, metadata={"world_size": str(dist_info().world_size),
                                             "steps": str(metrics["steps"])})
