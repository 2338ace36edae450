"""Tests of tenfold.core.engine: bit-exact resume (also mid-epoch), two-process DDP against one
process, NaN handling, the files a run writes, AMP on the CPU, gradient clipping, EMA and the
warm-up + cosine schedule."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from tenfold.core.engine import (
    EMA,
    Checkpointer,
    NonFiniteLossError,
    TrainingError,
    clip_gradients,
    fit,
    gather_rng_states,
    get_rng_state,
    set_rng_state,
    warmup_cosine,
)
from tenfold.core.io import load_checkpoint

HERE = Path(__file__).parent
TOTAL = 30  # steps of the resume tests; the data set gives 12 steps per epoch at batch 8


class Regression(Dataset):
    """Seeded synthetic regression; items are ``(x, y, index)`` so a test can see the order.
    ``__getitem__`` adds input noise from the global torch RNG, so data-side RNG matters too."""

    def __init__(self, n: int = 96, d: int = 8, seed: int = 0, linear: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g)
        z = self.x @ torch.randn(d, 1, generator=g)
        self.y = z / 3 if linear else torch.sin(z)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[i] + 0.01 * torch.randn(self.x.shape[1]), self.y[i], i


def mlp(dropout: float = 0.2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, 1))


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of a step."""


def run(run_dir: Path, steps: int, *, kill_at: int | None = None, seen: list | None = None, **kw):
    """Train the dropout MLP with AdamW, warm-up + cosine, EMA and clipping; ``kill_at=k`` raises
    inside the k-th call of the step function (after the checkpoints before it were written)."""
    model = mlp()
    calls = [0]

    def step_fn(m: nn.Module, batch) -> dict:
        calls[0] += 1
        if kill_at is not None and calls[0] == kill_at:
            raise Killed
        x, y, idx = batch
        if seen is not None:
            seen.extend(idx.tolist())
        pred = m(x)
        return {"loss": F.mse_loss(pred, y), "mae": (pred - y).abs().mean()}

    args = {"batch_size": 8, "optimizer": lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3),
            "scheduler": lambda o: warmup_cosine(o, 5, TOTAL), "ema": 0.9, "grad_clip": 0.5,
            "log_every": 4, "ckpt_every": 10, "progress": False, "tensorboard": False, "seed": 7}
    args.update(kw)
    out = fit(model, step_fn, Regression(), run_dir=run_dir, steps=steps, **args)
    return model, out


def flat(state, prefix: str = "") -> dict:
    """Flatten a checkpoint state into ``{path: leaf}``."""
    out: dict = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(flat(v, f"{prefix}/{k}"))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(flat(v, f"{prefix}/{i}"))
    else:
        out[prefix] = state
    return out


def assert_same_state(a: dict, b: dict, skip: tuple[str, ...] = ("/seconds",)) -> None:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if k in skip:
            continue
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), f"{k} differs"
        else:
            assert fa[k] == fb[k], f"{k}: {fa[k]} != {fb[k]}"


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# (1) kill and resume: bit-identical weights, EMA, optimizer, scheduler, RNG and log lines
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accum", [1, 2])
def test_resume_is_bit_identical(tmp_path: Path, accum: int) -> None:
    seen_a: list[int] = []
    model_a, out_a = run(tmp_path / "a", TOTAL, seen=seen_a, accum=accum)

    # Killed inside step 17 (mid-epoch 1); the newest checkpoint is step 15 (epoch 1, 3 steps in).
    seen_b: list[int] = []
    with pytest.raises(Killed):
        run(tmp_path / "b", TOTAL, kill_at=16 * accum + 1, ckpt_every=5, accum=accum)
    assert Checkpointer(tmp_path / "b", method="engine").steps() == [10, 15]  # the newest two (keep=2)
    model_b, out_b = run(tmp_path / "b", TOTAL, resume=True, seen=seen_b, ckpt_every=5, accum=accum)
    assert out_b["resumed_from"] == 15
    assert seen_b == seen_a[15 * 8:], "mid-epoch resume must continue with the same samples"

    # Stopped at an epoch boundary by a shorter run, then extended to TOTAL steps.
    run(tmp_path / "c", 12, ckpt_every=None, accum=accum)
    model_c, out_c = run(tmp_path / "c", TOTAL, resume=True, accum=accum)
    assert out_c["resumed_from"] == 12

    for model in (model_b, model_c):
        for (name, pa), pb in zip(model_a.state_dict().items(), model.state_dict().values()):
            assert torch.equal(pa, pb), f"parameter {name} differs after resume"
    final_a, _ = load_checkpoint(tmp_path / "a" / "checkpoints" / "last")
    for d in ("b", "c"):
        final, _ = load_checkpoint(tmp_path / d / "checkpoints" / "last")
        assert final["step"] == TOTAL and final["ema"]["num_updates"] == TOTAL
        assert_same_state(final_a, final)  # model, optimizer, scheduler, EMA, RNG states, log sums

    # The log after a resume: lines written after the checkpoint were dropped, and the values
    # (means over each interval) match the uninterrupted run exactly.
    rows_a, rows_b = log_rows(tmp_path / "a"), log_rows(tmp_path / "b")
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a] == [4, 8, 12, 16, 20, 24, 28, 30]
    for ra, rb in zip(rows_a, rows_b):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}
    assert out_a["loss"] == out_b["loss"] == out_c["loss"]


def test_resume_guards(tmp_path: Path) -> None:
    run(tmp_path, 4, ckpt_every=None)
    with pytest.raises(TrainingError, match="resume=True"):  # a run never overwrites another
        run(tmp_path, 8)
    from tenfold.core.io import CheckpointError

    with pytest.raises(CheckpointError, match="batch_size"):
        run(tmp_path, 8, resume=True, batch_size=16)
    # another seed mid-epoch would skip the consumed samples of a different order (repeats, unseen samples)
    with pytest.raises(CheckpointError, match="seed=7, shuffle=True"):
        run(tmp_path, 8, resume=True, seed=8)


def test_a_branch_from_an_older_checkpoint_is_refused_while_newer_ones_exist(tmp_path: Path) -> None:
    """Resuming from step 4 of a run that went on to 12 left steps 8 and 12 beside the branch's own, and a later
    resume=True picked the abandoned run's step 12 (its weights, optimizer and RNG) over the branch's."""
    run(tmp_path, 12, ckpt_every=4, keep=None)
    ck = Checkpointer(tmp_path, method="engine")
    with pytest.raises(TrainingError, match=r"after step-00000004 \(steps \[8, 12\]\)"):
        run(tmp_path, 10, ckpt_every=4, keep=None, resume=str(ck.path_for(4)))
    _, out = run(tmp_path, 16, ckpt_every=4, keep=None, resume=str(ck.path_for(12)))  # the newest: fine
    assert out["resumed_from"] == 12


def test_rng_state_round_trip() -> None:
    import random

    import numpy as np

    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert len(gather_rng_states()) == 1


# ---------------------------------------------------------------------------------------------
# (2) torchrun, 2 processes on the CPU (gloo) == one process with the same global batch
# ---------------------------------------------------------------------------------------------
DDP_TOL = 1e-5  # max |param difference|. Not 0: the gradient is averaged over the two ranks
# (two means of 8 samples, all-reduced) instead of one mean of 16, a different float32 summation
# order; the difference (~1e-7 per step measured) grows a little through 6 momentum steps.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    script = HERE / "_engine_ddp_worker.py"
    spec = importlib.util.spec_from_file_location("_engine_ddp_worker", script)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    single, _ = worker.train(tmp_path / "single")

    out = tmp_path / "ddp.safetensors"
    proc = _torchrun(script, tmp_path / "ddp", out, "plain")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = load_file(out)
    diff = max((ddp[k] - v).abs().max().item() for k, v in single.state_dict().items())
    print(f"max |param(2 procs) - param(1 proc)| = {diff:.3g}")
    assert diff < DDP_TOL
    # the model moved (so agreement is not trivial) and both logged the same global losses
    moved = max((ddp[k] - v).abs().max().item() for k, v in worker.build()[0].state_dict().items())
    assert moved > 1e-2
    rows1, rows2 = log_rows(tmp_path / "single"), log_rows(tmp_path / "ddp")
    assert len(rows1) == len(rows2) == worker.STEPS
    for r1, r2 in zip(rows1, rows2):
        assert r1["loss"] == pytest.approx(r2["loss"], abs=1e-5)
        # the step's loss tensor, logged again as a part, is the same mean (the loss check's all-reduce used to
        # write the sum over ranks into it: 2x here, and wrong gradients through sqrt / exp)
        assert r2["mse"] == pytest.approx(r2["loss"], abs=1e-6) and r1["mse"] == pytest.approx(r2["mse"], abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == [
        "last.json", "last.safetensors", "step-00000006.json", "step-00000006.safetensors"]


GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def _torchrun(script: Path, run_dir: Path, out: Path, mode: str) -> subprocess.CompletedProcess:
    """Two worker processes under torchrun. A launch that aborts in gloo's C++ teardown (std::terminate as a rank
    exits; seen once in a fresh-clone CI run on a loaded 2-core machine, not reproduced in 8 reruns) is launched
    again, once: from scratch for a fresh run, as is for a resume (whose checkpoints carry it on exactly)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for _attempt in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
             "--master-port", str(_free_port()), str(script), str(run_dir), str(out), mode],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode == 0 or mode == "kill" or GLOO_TEARDOWN_ABORT not in proc.stderr + proc.stdout:
            return proc
        if mode != "resume":
            shutil.rmtree(run_dir, ignore_errors=True)
            out.unlink(missing_ok=True)
    return proc


def test_torchrun_resume_keeps_every_ranks_log_sums(tmp_path: Path) -> None:
    """Two processes, checkpoints every 3 steps, a log line every 4; killed inside step 5 and resumed: the log
    lines equal the uninterrupted run's. Every rank restored rank 0's partial log sums before, so a part that
    differs per rank (the mean of its shard) logged wrong after the resume."""
    script = HERE / "_engine_ddp_worker.py"
    full = _torchrun(script, tmp_path / "full", tmp_path / "full.safetensors", "full")
    assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
    killed = _torchrun(script, tmp_path / "cut", tmp_path / "cut.safetensors", "kill")
    assert killed.returncode != 0
    assert Checkpointer(tmp_path / "cut", method="engine").steps() == [3]
    resumed = _torchrun(script, tmp_path / "cut", tmp_path / "cut.safetensors", "resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows_full, rows_cut = log_rows(tmp_path / "full"), log_rows(tmp_path / "cut")
    assert [r["step"] for r in rows_cut] == [r["step"] for r in rows_full] == [4, 6]
    for ra, rb in zip(rows_full, rows_cut):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def test_resume_survives_a_log_line_cut_short(tmp_path: Path) -> None:
    """A run killed while writing metrics.jsonl leaves half a line; resuming raised a raw JSONDecodeError. The cut
    line is dropped with a warning (the checkpoint's log sums rebuild it); a corrupt line in the middle is one
    TrainingError."""
    from tenfold.core.engine import TrainingError
    from tenfold.core.io import TenfoldWarning

    with pytest.raises(Killed):
        run(tmp_path / "b", TOTAL, kill_at=17, ckpt_every=5)
    log = tmp_path / "b" / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 16, "lo')
    with pytest.warns(TenfoldWarning, match="cut short"):
        run(tmp_path / "b", TOTAL, resume=True, ckpt_every=5)
    run(tmp_path / "a", TOTAL)
    assert [r["loss"] for r in log_rows(tmp_path / "b")] == [r["loss"] for r in log_rows(tmp_path / "a")]
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:]) + "\n")
    with pytest.raises(TrainingError, match="line 3 is corrupt"):
        run(tmp_path / "b", TOTAL + 4, resume=True, ckpt_every=5)


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path: Path) -> None:
    """An unreadable newest checkpoint stopped the resume with the previous good one unused (lost work). It is
    skipped with a warning naming it, and the run ends with the bits of one never stopped; another method's
    checkpoint is still an error, never skipped."""
    from tenfold.core.io import CheckpointError, TenfoldWarning

    with pytest.raises(Killed):
        run(tmp_path / "b", TOTAL, kill_at=17, ckpt_every=5, keep=3)
    ck = Checkpointer(tmp_path / "b", method="engine")
    assert ck.steps() == [5, 10, 15]
    ck.path_for(15).with_suffix(".safetensors").write_bytes(b"")  # the newest one's tensors lost
    with pytest.warns(TenfoldWarning, match="step-00000015"):
        model_b, out_b = run(tmp_path / "b", TOTAL, resume=True, ckpt_every=5, keep=3)
    assert out_b["resumed_from"] == 10
    model_a, out_a = run(tmp_path / "a", TOTAL)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert [r["loss"] for r in log_rows(tmp_path / "b")] == [r["loss"] for r in log_rows(tmp_path / "a")]
    with pytest.raises(CheckpointError, match="not a 'other' one"):
        fit(mlp(), lambda m, b: {"loss": m(b[0]).mean()}, Regression(), run_dir=tmp_path / "b", steps=TOTAL + 5,
            batch_size=8, optimizer=lambda m: torch.optim.AdamW(m.parameters()), resume=True, method="other",
            progress=False, tensorboard=False)


def test_a_checkpointer_keeps_two_pairs_falls_back_from_a_damaged_one_and_clears_killed_writes(tmp_path: Path) -> None:
    """Session 22 review: prune, finetune and attack kept one pair, so one damaged file ended the run (``last.*`` is
    a hard link to it, so damaging either damaged both); a write killed before its rename left a ``.tmp`` file for
    good. Two pairs are kept, the newest readable one loads, and both damaged is one line saying what to do."""
    from tenfold.core.io import CorruptCheckpointError, TenfoldWarning

    ck = Checkpointer(tmp_path, method="engine")
    for step in (1, 2, 3):
        ck.save({"w": torch.full((3,), float(step))}, step)
    assert ck.steps() == [2, 3]
    (ck.dir / ".step-00000004.safetensors.abc.tmp").write_bytes(b"half a file")
    ck.save({"w": torch.full((3,), 4.0)}, 4)
    assert not list(ck.dir.glob(".*.tmp")) and ck.steps() == [3, 4]
    with open(ck.path_for(4).with_suffix(".safetensors"), "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(TenfoldWarning, match="step-00000004.*resuming from the checkpoint before it"):
        state, header, base = ck.load_newest()
    assert torch.equal(state["w"], torch.full((3,), 3.0)) and header["extra"]["step"] == 3 and base == ck.path_for(3)
    ck.path_for(3).with_suffix(".safetensors").write_bytes(b"")
    with pytest.warns(TenfoldWarning), pytest.raises(CorruptCheckpointError,
                                                     match="no older checkpoint reads either.*new --out"):
        ck.load_newest()


def test_a_non_scalar_or_detached_loss_a_nan_gradient_and_ema_true_are_one_line(tmp_path: Path) -> None:
    """Session 22 review: a per-sample loss and a detached one were torch's own errors; a finite loss whose gradient
    is NaN (sqrt at 0) stepped NaN into the weights, checkpointed them, and the next step's error named that
    checkpoint "the last good" one; ema=True was an AttributeError."""
    from tenfold.core.io import ConfigError

    def go(step_fn, name: str, **kw):
        return fit(mlp(0.0), step_fn, Regression(), run_dir=tmp_path / name, steps=4, batch_size=8,
                   optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), ckpt_every=1, progress=False,
                   tensorboard=False, **kw)

    with pytest.raises(TrainingError, match=r"'loss' must be a scalar tensor with a gradient, got shape \(8, 1\)"):
        go(lambda m, b: {"loss": (m(b[0]) - b[1]) ** 2}, "vector")
    with pytest.raises(TrainingError, match="got one without \\(detached"):
        go(lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1]).detach()}, "detached")
    model = mlp(0.0)
    first = model[0].weight

    def nan_grad(m, b):
        return {"loss": F.mse_loss(m(b[0]), b[1]) + 0.0 * torch.sqrt(first[0, 0] * 0)}

    with pytest.raises(NonFiniteLossError, match=r"gradient norm is nan at step 1 .* from a finite loss .*weights "
                                                 r"not updated, no checkpoint yet"):
        fit(model, nan_grad, Regression(), run_dir=tmp_path / "nan", steps=4, batch_size=8,
            optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), ckpt_every=1, progress=False,
            tensorboard=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not Checkpointer(tmp_path / "nan", method="engine").steps()
    with pytest.raises(ConfigError, match="ema takes a decay in \\(0, 1\\) or an EMA object, not True"):
        go(lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1])}, "ema", ema=True)


def test_fp16_steps_the_scaler_skips_advance_neither_the_schedule_nor_the_ema(tmp_path: Path) -> None:
    """Session 22 review: every overflowed fp16 step still stepped the scheduler and the EMA (the lr decayed while
    the weights stood still) with no word from tenfold. A loss whose gradient overflows fp16 at the scaler's first
    scales: the skipped steps are counted and warned of, and the schedule advanced only on the applied ones."""
    from tenfold.core.io import TenfoldWarning

    model = mlp(0.0)
    before = [p.detach().clone() for p in model.parameters()]
    sched: list = []

    def make_sched(opt):
        sched.append(torch.optim.lr_scheduler.StepLR(opt, 1, 0.5))
        return sched[-1]

    ema = EMA(model, 0.5)
    with pytest.warns(TenfoldWarning, match=r"3 of 3 fp16 steps overflowed and were skipped"):
        out = fit(model, lambda m, b: {"loss": (m(b[0]) * 3e4).float().pow(2).mean()}, Regression(),
                  run_dir=tmp_path, steps=3, batch_size=8, amp="fp16", scheduler=make_sched, ema=ema,
                  optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=1e-4), progress=False, tensorboard=False)
    assert out["amp_skipped_steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update applied
    assert sched[0].last_epoch == 0 and ema.num_updates == 0


# ---------------------------------------------------------------------------------------------
# (3) NaN loss: a one-line error naming the step; the last good checkpoint is intact
# ---------------------------------------------------------------------------------------------
def test_nan_loss_raises_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    model = mlp(0.0)
    step = [0]

    def step_fn(m: nn.Module, batch) -> dict:
        step[0] += 1
        x, y, _ = batch
        loss = F.mse_loss(m(x), y)
        return {"loss": loss * float("nan") if step[0] == 7 else loss}

    with pytest.raises(NonFiniteLossError) as err:
        fit(model, step_fn, Regression(), run_dir=tmp_path, steps=20, batch_size=8,
            optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1), ckpt_every=5, progress=False,
            tensorboard=False)
    msg = str(err.value)
    assert "step 7" in msg and "nan" in msg and "step-00000005" in msg and "\n" not in msg
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never applied
    state, header = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert state["step"] == 5 and header["extra"]["step"] == 5
    assert Checkpointer(tmp_path, method="engine").steps() == [5]
    # the weights after step 6 differ from the checkpoint's by exactly one finite SGD step
    assert any(not torch.equal(p, state["model"][k]) for k, p in model.state_dict().items())


# ---------------------------------------------------------------------------------------------
# (4) files: metrics.jsonl lines, checkpoints as safetensors + JSON (no pickle), keep-k, TensorBoard
# ---------------------------------------------------------------------------------------------
def test_files_written(tmp_path: Path) -> None:
    from safetensors import safe_open

    model = mlp()
    out = fit(model, lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1]), "seven": 7},
              Regression(), run_dir=tmp_path, steps=10, batch_size=8, log_every=3, ckpt_every=3, keep=2,
              optimizer=lambda m: torch.optim.Adam(m.parameters()), ema=0.99, progress=False, tensorboard=True)
    rows = log_rows(tmp_path)
    assert [r["step"] for r in rows] == [3, 6, 9, 10]
    for r in rows:
        assert {"step", "epoch", "loss", "seven", "lr", "grad_norm", "seconds"} <= r.keys()
        assert r["seven"] == 7 and math.isfinite(r["loss"]) and r["epoch"] == 0
    assert out["steps"] == 10 and out["loss"] == rows[-1]["loss"]

    ck = tmp_path / "checkpoints"
    names = sorted(p.name for p in ck.iterdir())
    assert names == ["last.json", "last.safetensors", "step-00000009.json", "step-00000009.safetensors",
                     "step-00000010.json", "step-00000010.safetensors"]
    for p in ck.iterdir():
        raw = p.read_bytes()
        assert raw[:1] != b"\x80" and raw[:2] != b"PK", f"{p.name} looks like a pickle / torch.save zip"
        if p.suffix == ".json":
            header = json.loads(raw)
            assert header["method"] == "engine" and header["tenfold_checkpoint"] == 1
        else:
            with safe_open(p, "pt") as f:
                assert any(k.startswith("model/") for k in f.keys())  # noqa: SIM118 (safe_open is not a dict)
    state, _ = load_checkpoint(ck / "last")
    assert state["step"] == 10 and {"model", "optimizer", "ema", "rng", "data"} <= state.keys()
    assert (ck / "last.json").read_bytes() == (ck / "step-00000010.json").read_bytes()
    if importlib.util.find_spec("tensorboard") is not None:
        assert any((tmp_path / "tensorboard").iterdir())


# ---------------------------------------------------------------------------------------------
# (5) AMP on the CPU: autocast is really on, and the loss falls
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cpu_loss_falls(tmp_path: Path, amp: str) -> None:
    dtypes: set[torch.dtype] = set()

    def step_fn(m: nn.Module, batch) -> dict:
        x, y, _ = batch
        pred = m(x)
        dtypes.add(pred.dtype)
        return {"loss": F.mse_loss(pred.float(), y)}

    fit(mlp(0.0), step_fn, Regression(linear=True), run_dir=tmp_path, steps=48, batch_size=8, amp=amp, log_every=12,
        optimizer=lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), progress=False, tensorboard=False)
    want = torch.bfloat16 if amp == "bf16" else torch.float16
    assert dtypes == {want}
    losses = [r["loss"] for r in log_rows(tmp_path)]
    assert losses[-1] < 0.5 * losses[0], losses
    state, _ = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert (state["scaler"] is not None) == (amp == "fp16")


# ---------------------------------------------------------------------------------------------
# (6) gradient clipping returns the norm before clipping, and clips
# ---------------------------------------------------------------------------------------------
def test_clip_gradients() -> None:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([12.0])
    assert clip_gradients([a, b]).item() == pytest.approx(13.0)  # no max_norm: measure only
    assert torch.equal(a.grad, torch.tensor([3.0, 4.0]))
    assert clip_gradients([a, b], max_norm=1.0).item() == pytest.approx(13.0)  # norm before clipping
    assert clip_gradients([a, b]).item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(a.grad, torch.tensor([3.0, 4.0]) / 13.0, rtol=1e-5)


def test_fit_clips(tmp_path: Path) -> None:
    model = mlp(0.0)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    out = fit(model, lambda m, b: {"loss": 100.0 * F.mse_loss(m(b[0]), b[1])}, Regression(), run_dir=tmp_path,
              steps=1, batch_size=8, grad_clip=0.01, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=1.0),
              progress=False, tensorboard=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert out["grad_norm"] > 1.0  # logged before clipping
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # one SGD step of the clipped gradient


# ---------------------------------------------------------------------------------------------
# helpers: EMA and the schedule against closed forms
# ---------------------------------------------------------------------------------------------
def test_ema_closed_form() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    for v in (3.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
    # 0.5 * (0.5 * 1 + 0.5 * 3) + 0.5 * 5 = 3.5
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 3.5))
    with ema.swapped(model):
        assert torch.allclose(model.weight, torch.full((1, 2), 3.5))
    assert torch.equal(model.weight, torch.full((1, 2), 5.0))
    other = EMA(nn.Linear(2, 1), decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.5 and other.num_updates == 2 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_ema_update_matches_a_per_tensor_lerp() -> None:
    """The multi-tensor update equals ema <- ema + (1 - decay) (w - ema) tensor by tensor, bit for bit, with a
    bf16 parameter averaged in float32 and the buffers (BN statistics, an integer counter) copied."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(2, 5))
    model[2].to(torch.bfloat16)
    ema = EMA(model, decay=0.9)
    ref = {k: v.clone() for k, v in ema.shadow.items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model[1].running_mean.add_(1.0)
        model[1].num_batches_tracked.add_(2)
        ema.update(model)
        for n, p in model.named_parameters():
            ref[n].lerp_(p.detach().float(), 0.1)
        for n, b in model.named_buffers():
            ref[n].copy_(b)
    assert ema.shadow["2.weight"].dtype == torch.float32
    for k in ref:
        assert torch.equal(ema.shadow[k], ref[k]), k
    assert int(ema.shadow["1.num_batches_tracked"]) == 6


def test_ema_warmup_closed_form() -> None:
    """With warm-up the n-th update uses min(decay, (1 + n) / (10 + n)): 0.1 then 2/11, then the cap."""
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.15, warmup=True)
    want = 1.0
    for v, d in ((3.0, 0.1), (5.0, 0.15), (7.0, 0.15)):  # 2/11 > 0.15: capped from the second update on
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        want = d * want + (1 - d) * v
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), want))
    slow = EMA(model, decay=0.999, warmup=True)
    assert slow.current_decay() == pytest.approx(0.1)
    slow.num_updates = 90
    assert slow.current_decay() == pytest.approx(91 / 100)
    again = EMA(nn.Linear(2, 1), decay=0.5)
    again.load_state_dict(slow.state_dict())
    assert again.warmup and again.current_decay() == pytest.approx(91 / 100)


def test_warmup_cosine() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, warmup=4, total=12, min_ratio=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4] == pytest.approx(2.0)
    t = 7 / 8  # step 11: (11 - 4) / (12 - 4)
    assert lrs[11] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))))
    assert all(x >= y for x, y in itertools.pairwise(lrs[3:]))


def test_fit_folds_the_weights_after_each_optimizer_step_into_the_ema(tmp_path: Path) -> None:
    """Mutation audit: fit updates the EMA with the weights *after* each optimizer step. An update moved before
    ``opt.step()`` (one step behind, the final weights never averaged) passed every test, since the resume tests
    compare two runs with the same lag. Closed form over 3 SGD steps with decay 0.5: the step function records
    the weights each step starts from, w0, w1, w2, and the EMA must be w0/8 + w1/8 + w2/4 + w3/2."""
    torch.set_num_threads(1)
    model = mlp(0.0)
    ema = EMA(model, decay=0.5)
    starts: list[dict[str, torch.Tensor]] = []

    def step_fn(m: nn.Module, batch) -> dict:
        starts.append({n: p.detach().clone() for n, p in m.named_parameters()})
        return {"loss": F.mse_loss(m(batch[0]), batch[1])}

    fit(model, step_fn, Regression(), run_dir=tmp_path, steps=3, batch_size=8, ema=ema, progress=False,
        optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.5), tensorboard=False)
    assert len(starts) == 3 and ema.num_updates == 3
    for n, p in model.named_parameters():
        w0, w1, w2, w3 = starts[0][n], starts[1][n], starts[2][n], p.detach()
        assert not torch.equal(w2, w3)  # the steps moved the weights
        torch.testing.assert_close(ema.shadow[n], w0 / 8 + w1 / 8 + w2 / 4 + w3 / 2, atol=1e-6, rtol=0)


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch(tmp_path: Path) -> None:
    """Mutation audit: with ``accum`` micro-steps each micro-batch's mean loss is divided by ``accum``, so the update
    is that of the whole batch's mean (fit's contract: results do not depend on how the batch is split). Dropping
    the division (accum times the gradient) passed every test: the resume tests compare runs with the same accum and
    the DDP worker does not accumulate. Plain SGD without dropout: accum 1, 2 and 4 train the same weights."""
    torch.set_num_threads(1)
    trained = []
    for accum in (1, 2, 4):
        model = mlp(0.0)
        fit(model, lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1])}, Regression(), run_dir=tmp_path / f"a{accum}",
            steps=3, batch_size=8, accum=accum, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.5),
            progress=False, tensorboard=False)
        trained.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    moved = float((trained[0] - torch.cat([p.detach().flatten() for p in mlp(0.0).parameters()])).abs().max())
    assert moved > 1e-2  # the steps moved the weights, so agreement is not trivial
    for other in trained[1:]:
        torch.testing.assert_close(other, trained[0], atol=1e-6, rtol=0)


def test_resuming_a_finished_run_returns_its_last_logged_figures(tmp_path: Path) -> None:
    """Session 22 review: fit(resume=True) on a run that had finished returned no 'loss' or 'lr', which the
    docstring lists among its keys; it returns the run's last log line, as the finished run did."""
    done = run(tmp_path, TOTAL)[1]
    again = run(tmp_path, TOTAL, resume=True)[1]
    assert again["steps"] == TOTAL and again["loss"] == done["loss"] and again["lr"] == done["lr"]


def test_session27_walkthrough_clipping_ema_schedule_and_resume_are_checked(tmp_path: Path) -> None:
    """A negative grad_clip reversed every gradient (training climbed), 0 zeroed them; EMA weights filled a model of
    another shape by broadcasting; min_ratio -1 drove the learning rate negative; a resume into another
    architecture was a raw RuntimeError."""
    from tenfold.core.io import CheckpointError, ConfigError

    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ConfigError, match="grad_clip .* must be a finite number > 0"):
            clip_gradients([p], bad)
        with pytest.raises(ConfigError, match="grad_clip must be a finite number > 0"):
            run(tmp_path / "never", 4, grad_clip=bad)
    assert not (tmp_path / "never").exists()
    assert float(clip_gradients([p], 1.0)) == 5.0 and torch.allclose(p.grad, torch.tensor([0.6, 0.8, 0.0]))
    ema = EMA(nn.Linear(1, 1))
    with pytest.raises(CheckpointError, match="do not fit this model"):
        ema.copy_to(nn.Linear(2, 2))
    other = EMA(nn.Linear(2, 2)).state_dict()
    with pytest.raises(CheckpointError, match="have other shapes"):
        ema.load_state_dict(other)
    with pytest.raises(CheckpointError, match="no 'shadow' entry"):
        ema.load_state_dict({"decay": 0.9})
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    for bad in (-1.0, 2.0, float("nan")):
        with pytest.raises(ConfigError, match=r"min_ratio must lie in \[0, 1\]"):
            warmup_cosine(opt, 0, 10, min_ratio=bad)
    run(tmp_path / "r", 4, ckpt_every=None)
    with pytest.raises(CheckpointError, match="does not fit this model or optimizer"):
        fit(nn.Linear(8, 3), lambda m, b: {"loss": m(b[0]).pow(2).mean()}, Regression(), run_dir=tmp_path / "r",
            steps=8, batch_size=8, ema=0.9, progress=False, tensorboard=False, seed=7, resume=True,
            optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3),
            scheduler=lambda o: warmup_cosine(o, 5, TOTAL), grad_clip=0.5)


def test_resuming_a_run_past_the_asked_steps_warns(tmp_path: Path) -> None:
    """fit(resume=True, steps=5) on a run at step 12 returned the run as it stood, with no loss and no word."""
    from tenfold.core.io import TenfoldWarning

    run(tmp_path, 12)
    with pytest.warns(TenfoldWarning, match=r"is at step 12, past steps=5: nothing to train"):
        _, out = run(tmp_path, 5, resume=True)
    assert out["steps"] == 12
