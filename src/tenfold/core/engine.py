"""One training loop for every method that trains (:func:`fit`), and the helpers it is made of.

``fit`` is a plain function with documented keyword arguments (after edm's ``training_loop``
and timm's task: a step function returns a dict holding ``loss``); there is no callback
framework. It runs in one process, or under ``torchrun`` as DistributedDataParallel (gloo on
the CPU, NCCL on CUDA), with AMP (bf16/fp16), gradient clipping and accumulation, an EMA of the
weights, an LR scheduler, a tqdm bar, ``metrics.jsonl`` (+ TensorBoard when it imports) and
periodic atomic checkpoints from which ``resume=True`` continues *exactly*: a run killed after
a checkpoint and resumed ends with the same bits as one that was never stopped.

A method with an unusual loop (alternating GAN updates, several models) writes its own loop and
reuses the pieces: :class:`Checkpointer`, :class:`MetricsLogger`, :class:`EMA`,
:func:`get_rng_state` / :func:`set_rng_state` / :func:`gather_rng_states`,
:func:`seed_everything`, :func:`warmup_cosine`, :func:`clip_gradients`, :func:`setup_distributed`,
:func:`dist_info` and :func:`unwrap`.

How exact resume works
    * Data order is a pure function of ``(seed, epoch)``: each epoch's permutation comes from a
      generator seeded with ``seed + epoch`` (DistributedSampler's rule), so a resumed run rebuilds
      it and skips the samples already consumed in that epoch. The DataLoader gets its own
      generator, so creating an iterator never draws from the global RNG.
    * The checkpoint holds model, optimizer, scheduler, EMA, GradScaler, step, epoch, position in
      the epoch, the running log sums, and the RNG states (python ``random``, numpy, torch CPU,
      torch CUDA) of *every* rank.
    * Randomness inside ``Dataset.__getitem__`` is restored exactly with ``num_workers=0``
      (it uses the main process's RNG). With workers, each epoch's worker seeds are reproducible
      but a mid-epoch resume restarts the worker RNGs; derive augmentation randomness from the
      sample index if such runs must be bit-exact.
    * On a GPU, bit-exactness also needs deterministic kernels
      (``torch.use_deterministic_algorithms(True)``); that choice is the caller's.

Files written in ``run_dir``::

    metrics.jsonl                  one JSON object per log step
    checkpoints/step-00001000.*    safetensors + JSON pairs, the newest ``keep`` of them
    checkpoints/last.*             the newest checkpoint (hard link or copy)
    tensorboard/                   event files, when TensorBoard is installed
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    TenfoldError,
    TenfoldWarning,
    atomic_write_bytes,
    check_device,
    load_checkpoint,
    save_checkpoint,
    to_jsonable,
)

__all__ = [
    "EMA",
    "Checkpointer",
    "DistInfo",
    "MetricsLogger",
    "NonFiniteLossError",
    "TrainingError",
    "barrier",
    "clip_gradients",
    "dist_info",
    "fit",
    "gather_rng_states",
    "get_rng_state",
    "seed_everything",
    "set_rng_state",
    "setup_distributed",
    "unwrap",
    "warmup_cosine",
]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class TrainingError(TenfoldError):
    """A training run cannot start or go on (a used run directory, a bad step function)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or Inf. Raised before the bad step touches the weights, so the last
    checkpoint (named in the message) is intact."""


# --------------------------------------------------------------------------------------------
# Processes and devices
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Where this process stands among the processes that ``torchrun`` started."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0: the one process that logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank, world size and local rank, from the process group when one is initialised, else
    from the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables that torchrun sets (0, 1, 0
    for a plain ``python`` run)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    return DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), local)


def _synced() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process of a torchrun launch (e.g. before reading what rank 0 wrote); a no-op otherwise."""
    if _synced():
        dist.barrier()


def setup_distributed(device: str | torch.device = "cpu") -> tuple[DistInfo, torch.device, bool]:
    """Join the process group when run under torchrun; returns ``(info, device, started)``.

    With several processes a CUDA ``device`` becomes ``cuda:<LOCAL_RANK>`` (one GPU per process)
    and the backend is NCCL; on the CPU it is gloo. ``started`` is True when this call created
    the process group, so the caller knows to ``dist.destroy_process_group()`` at the end. A
    single process (no torchrun) is returned as is, without a process group.
    """
    info = dist_info()
    dev = check_device(device)
    if info.distributed and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    started = False
    if info.distributed and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=dev)
        else:
            dist.init_process_group(backend="gloo")
        started = True
        info = dist_info()
    return info, dev, started


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel / ``torch.compile`` wrappers
    (use it for ``state_dict``, attributes and saving)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # torch.compile's OptimizedModule
        else:
            return model


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``; other leaves pass through."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# --------------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states (python ``random``, numpy, torch CPU, torch CUDA when
    available) as tensors and plain values that :func:`tenfold.core.io.save_checkpoint` stores."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only for the devices present)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].cpu().numpy(), dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu().to(torch.uint8), i)


def _gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a collective under DDP); in one process, ``[obj]``."""
    if not _synced():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)  # in-memory exchange between our own processes
    return out


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's :func:`get_rng_state`, in rank order (a collective call under DDP: all ranks
    must call it). In one process, a list of one."""
    return _gather_objects(get_rng_state())


# --------------------------------------------------------------------------------------------
# EMA, gradients, schedules
# --------------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's weights (Polyak averaging).

    After each optimizer step, :meth:`update` sets ``ema <- decay * ema + (1 - decay) * w`` for
    every parameter and copies the buffers (BatchNorm statistics). Parameters held in a dtype
    narrower than float32 are averaged in float32. Use :meth:`copy_to` or :meth:`swapped` to
    evaluate with the averaged weights.

    Example::

        ema = EMA(model, decay=0.999)
        ...; optimizer.step(); ema.update(model)
        with ema.swapped(model):
            evaluate(model)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = False) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)  # decay_n = min(decay, (1 + n) / (10 + n)): short runs do not keep the init
        self.num_updates = 0
        m = unwrap(model)
        self.param_names = [n for n, _ in m.named_parameters()]
        self.buffer_names = [n for n, _ in m.named_buffers()]
        self.shadow: dict[str, torch.Tensor] = {}
        for n, t in itertools.chain(m.named_parameters(), m.named_buffers()):
            t = t.detach().clone()
            if t.is_floating_point() and t.element_size() < 4:
                t = t.float()
            self.shadow[n] = t

    def to(self, device: str | torch.device) -> EMA:
        """Move the averaged weights to ``device``; returns self."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        m = unwrap(model)
        w = 1.0 - self.current_decay()
        # multi-tensor (foreach) kernels: one launch per device and dtype instead of one per tensor, which
        # dominates the update on a GPU (a U-Net has hundreds of parameters)
        avg, new, dst, src = [], [], [], []
        for n, p in m.named_parameters():
            e, p = self.shadow[n], p.detach()
            if e.is_floating_point():
                avg.append(e)
                new.append(p if p.dtype == e.dtype else p.to(e.dtype))
            else:
                dst.append(e)
                src.append(p)
        for n, b in m.named_buffers():
            dst.append(self.shadow[n])
            src.append(b.detach())
        if avg:
            torch._foreach_lerp_(avg, new, w)
        if dst:
            torch._foreach_copy_(dst, src)
        self.num_updates += 1

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses (``decay``, or its warm-up value early in a run)."""
        if self.warmup:
            return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's parameters and buffers with the averaged ones."""
        m = unwrap(model)
        named = list(itertools.chain(m.named_parameters(), m.named_buffers()))
        odd = [n for n, t in named if n not in self.shadow or self.shadow[n].shape != t.shape]
        if odd or len(named) != len(self.shadow):  # a model of another shape was filled by broadcasting
            raise CheckpointError(f"the EMA weights do not fit this model: {odd[:3] or 'another set of tensors'} "
                                  "differ in name or shape")
        for n, t in named:
            t.copy_(self.shadow[n].to(t.dtype))

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context in which ``model`` holds the averaged weights; the trained ones come back after."""
        m = unwrap(model)
        saved = {n: t.detach().clone() for n, t in itertools.chain(m.named_parameters(), m.named_buffers())}
        self.copy_to(m)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, t in itertools.chain(m.named_parameters(), m.named_buffers()):
                    t.copy_(saved[n])

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "warmup", "num_updates", "shadow": {name: tensor}}`` (checkpoint-storable)."""
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": dict(self.shadow)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; raises :class:`CheckpointError` when the names differ."""
        if not isinstance(state, Mapping) or "shadow" not in state:
            raise CheckpointError("EMA state has no 'shadow' entry (not an EMA.state_dict())")
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
            raise CheckpointError(f"EMA state does not match the model: missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]}")
        self.decay = float(state["decay"])
        self.warmup = bool(state.get("warmup", False))
        self.num_updates = int(state["num_updates"])
        wrong = [k for k, v in shadow.items() if tuple(v.shape) != tuple(self.shadow[k].shape)]
        if wrong:
            raise CheckpointError(f"EMA state does not match the model: {wrong[:3]} have other shapes")
        with torch.no_grad():
            for k, v in shadow.items():
                self.shadow[k].copy_(v)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float | None = None) -> torch.Tensor:
    """Total L2 norm of the gradients, measured *before* clipping; when ``max_norm`` is given the
    gradients are then scaled so that their norm is at most ``max_norm``.

    Returns a 0-d tensor on the gradients' device (no host sync). Parameters without a gradient
    are skipped; with none at all the norm is 0.
    """
    if max_norm is not None and not (math.isfinite(max_norm) and max_norm > 0):  # -1 reversed every gradient
        # (gradient ascent), 0 zeroed them: both without a word
        raise ConfigError(f"grad_clip (max_norm) must be a finite number > 0, or None for no clipping; got {max_norm}")
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=None)
    norms = [torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32) for p in params]
    return torch.linalg.vector_norm(torch.stack(norms))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int,
                  min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then a half cosine from the base LR down to
    ``min_ratio * base LR`` at step ``total``; stepped once per optimizer step.

    The factor for 0-based step ``s`` is ``(s + 1) / warmup`` while ``s < warmup``, then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t = (s - warmup) / (total - warmup)``
    clipped to 1.
    """
    if warmup < 0 or total < 1 or warmup > total:
        raise ConfigError(f"warmup_cosine needs 0 <= warmup <= total and total >= 1, got warmup={warmup}, "
                          f"total={total}")
    if not 0 <= min_ratio <= 1:  # -1 drove the learning rate negative (ascent), NaN made it NaN
        raise ConfigError(f"warmup_cosine's min_ratio must lie in [0, 1], got {min_ratio}")

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = min(1.0, (s - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------
# Checkpoints and metrics
# --------------------------------------------------------------------------------------------
def _step_of(path: str | os.PathLike) -> int:
    """The step of a ``step-NNNNNNNN`` checkpoint path (-1 for any other name, e.g. ``last``)."""
    name = Path(path).name
    for suffix in (".json", ".safetensors"):
        name = name.removesuffix(suffix)
    try:
        return int(name.split("-", 1)[1]) if name.startswith("step-") else -1
    except ValueError:
        return -1


class Checkpointer:
    """Periodic, atomic checkpoints in ``run_dir/checkpoints``.

    Each save writes a new pair ``step-NNNNNNNN.safetensors`` + ``.json`` through
    :func:`tenfold.core.io.save_checkpoint` (tensors first, JSON last, so a pair whose JSON exists
    is complete), then points ``last.*`` at it (hard link, or copy) and deletes the oldest pairs
    beyond ``keep``. Resuming reads the newest *complete* step pair, never ``last``, so a kill at
    any moment leaves a loadable checkpoint.

    Under DDP, :meth:`save` is a collective: every rank calls it (with barriers before and after)
    and only the ``enabled`` one (rank 0 by default) writes.

    Args:
        run_dir: the run directory.
        method: method name stored in the header and checked on load.
        keep: how many step pairs to keep (``None``: all). ``last.*`` is kept in addition. Two by default, so that
            one damaged file leaves the pair before it to resume from (with one, it ended the run).
        config: the resolved config, stored in every header as JSON.
        enabled: whether this process writes (default: it is rank 0).
    """

    def __init__(self, run_dir: str | os.PathLike, *, method: str, keep: int | None = 2,
                 config: Any = None, enabled: bool | None = None) -> None:
        if keep is not None and keep < 1:
            raise ConfigError(f"keep must be >= 1 or None (keep all), got {keep}")
        self.dir = Path(run_dir) / "checkpoints"
        self.method, self.keep, self.config = method, keep, config
        self.enabled = dist_info().is_main if enabled is None else enabled

    def path_for(self, step: int) -> Path:
        """The base path (no suffix) of the checkpoint for ``step``."""
        return self.dir / f"step-{step:08d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, ascending."""
        out = []
        for p in self.dir.glob("step-*.json"):
            try:
                s = int(p.stem.split("-", 1)[1])
            except ValueError:
                continue
            if p.with_suffix(".safetensors").is_file():
                out.append(s)
        return sorted(out)

    def latest(self) -> Path | None:
        """Base path of the newest complete checkpoint, or None."""
        steps = self.steps()
        return self.path_for(steps[-1]) if steps else None

    def save(self, state: Mapping[str, Any], step: int, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``state`` as the checkpoint for ``step``; returns its base path (on every rank)."""
        base = self.path_for(step)
        barrier()
        try:
            if self.enabled:
                self.dir.mkdir(parents=True, exist_ok=True)
                for t in self.dir.glob(".*.tmp"):  # left by a write killed before its rename: never read, only disk
                    t.unlink(missing_ok=True)
                base.with_suffix(".json").unlink(missing_ok=True)  # an overwritten pair is incomplete until done
                save_checkpoint(base, state, method=self.method, config=self.config,
                                extra={"step": step, **(extra or {})})
                self._point_last(base)
                self._prune()
        finally:
            barrier()
        return base

    def load(self, path: str | os.PathLike | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load ``path`` (default: the newest complete checkpoint) onto the CPU; ``(state, header)``.
        Raises :class:`CheckpointError` when there is none or it is corrupt or another method's."""
        if path is None:
            path = self.latest()
            if path is None:
                raise CheckpointError(f"no checkpoint in {self.dir}")
        return load_checkpoint(path, method=self.method)

    def load_newest(self) -> tuple[dict[str, Any], dict[str, Any], Path]:
        """``(state, header, base path)`` of the newest checkpoint that reads: a corrupt newer one is skipped with
        a warning that names it (it is overwritten when the run passes its step again). Another method's
        checkpoint or one of another format is never skipped: those are errors."""
        steps = self.steps()
        for i, step in enumerate(reversed(steps)):
            base = self.path_for(step)
            try:
                state, header = self.load(base)
                return state, header, base
            except CorruptCheckpointError as e:
                if i == len(steps) - 1:
                    raise CorruptCheckpointError(f"{e}; no older checkpoint reads either: start the run again "
                                                 "with a new --out") from None
                warnings.warn(f"{e}; resuming from the checkpoint before it", TenfoldWarning, stacklevel=3)
        raise CheckpointError(f"no checkpoint in {self.dir}")

    def _point_last(self, base: Path) -> None:
        for suffix in (".safetensors", ".json"):
            src, dst = base.with_suffix(suffix), self.dir / f"last{suffix}"
            tmp = self.dir / f".last{suffix}.tmp"
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)

    def _prune(self) -> None:
        if self.keep is None:
            return
        for s in self.steps()[: -self.keep]:
            base = self.path_for(s)
            base.with_suffix(".json").unlink(missing_ok=True)  # JSON first: never a JSON without tensors
            base.with_suffix(".safetensors").unlink(missing_ok=True)


class MetricsLogger:
    """``run_dir/metrics.jsonl`` (one JSON object per :meth:`log` call) and TensorBoard scalars
    in ``run_dir/tensorboard`` when ``torch.utils.tensorboard`` imports.

    A fresh logger refuses a run directory whose ``metrics.jsonl`` already has lines (a run never
    overwrites earlier results). With ``resume_step=k`` it keeps the lines with ``step <= k`` and
    drops the rest (written after the checkpoint the run resumes from), then appends.

    Args:
        run_dir: the run directory.
        enabled: whether this process writes (default: it is rank 0); disabled loggers do nothing.
        tensorboard: also write TensorBoard scalars when the package is installed.
        resume_step: the step the run resumes from, or None for a fresh run.
    """

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool | None = None, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = dist_info().is_main if enabled is None else enabled
        self._file: Any = None
        self._tb: Any = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            if resume_step is None:
                raise TrainingError(f"{self.path} already exists; resume the run (resume=True) or use a new "
                                    "run directory (tenfold.core.io.new_run_dir)")
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            rows = []
            for i, ln in enumerate(lines):
                try:
                    rows.append((ln, json.loads(ln)))
                except ValueError:
                    if i < len(lines) - 1:
                        raise TrainingError(f"{self.path}: line {i + 1} is corrupt; repair or remove it to "
                                            "resume") from None
                    warnings.warn(f"{self.path}: its last line was cut short (an interrupted write); dropped",
                                  TenfoldWarning, stacklevel=2)
            kept = [ln for ln, row in rows if row.get("step", 0) <= resume_step]
            atomic_write_bytes(self.path, "".join(ln + "\n" for ln in kept).encode())
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open until close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                purge = resume_step + 1 if resume_step else None
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **metrics}`` as one line (and numeric values to TensorBoard)."""
        if not self.enabled or self._file is None:
            return
        row = to_jsonable({"step": step, **metrics})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close the files (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ResumableSampler(DistributedSampler):
    """DistributedSampler (permutation seeded by ``seed + epoch``, rank ``r`` takes positions
    ``r, r + W, ...``) that can start ``start`` samples into this rank's share of an epoch.

    With the global batch ``B`` split into ``W`` per-rank batches of ``B / W``, the union of the
    ranks' k-th batches is exactly positions ``kB .. kB + B - 1`` of the permutation, i.e. the
    k-th batch of a single-process run: the data order does not depend on the world size.
    """

    start = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank]).generate_state(1)[0])


def _scalar(name: str, v: Any) -> torch.Tensor | float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise TrainingError(f"step_fn returned '{name}' with shape {tuple(v.shape)}; return scalars only")
        return v.detach().float().reshape(())
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return float(v)
    raise TrainingError(f"step_fn returned '{name}' of type {type(v).__name__}; return numbers or 1-element tensors")


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    step_fn: Callable[[nn.Module, Any], Mapping[str, Any]],
    dataset: Dataset,
    *,
    run_dir: str | os.PathLike,
    steps: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer],
    scheduler: Any = None,
    amp: Literal["none", "bf16", "fp16"] = "none",
    grad_clip: float | None = None,
    accum: int = 1,
    ema: float | EMA | None = None,
    ckpt_every: int | None = 1000,
    keep: int | None = 2,
    log_every: int = 50,
    seed: int = 0,
    shuffle: bool = True,
    device: str | torch.device = "cpu",
    resume: bool | str | os.PathLike = False,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    progress: bool = True,
    tensorboard: bool = True,
    method: str = "engine",
    config: Any = None,
    extra_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimizer steps; returns the final metrics.

    Runs in one process, or as DistributedDataParallel when started by
    ``torchrun --nproc-per-node N`` (every rank calls ``fit`` with the same arguments).

    Args:
        model: the network; moved to ``device`` and trained in place (``model.train()``).
        step_fn: ``step_fn(model, batch) -> dict`` computes one micro-batch's losses under
            autocast. It must return ``"loss"`` (a scalar tensor, the *mean* over the batch, so
            that gradients do not depend on how the batch is split over ranks or micro-steps);
            every other entry must be a number or 1-element tensor and is logged, averaged over
            the log interval and the ranks. ``model`` is the DDP wrapper under torchrun; call
            :func:`unwrap` on it to reach attributes. ``batch`` is on ``device``.
        dataset: a map-style dataset (``len`` + ``__getitem__``); the DataLoader collates it.
        run_dir: directory for ``metrics.jsonl``, ``checkpoints/`` and ``tensorboard/``. Must be
            fresh unless ``resume``; under torchrun, on a filesystem every rank sees.
        steps: total optimizer steps of the run (counting those before a resume).
        batch_size: the *global* batch per optimizer step: summed over ranks and accumulation
            micro-steps. Each rank's micro-batch is ``batch_size // (world_size * accum)``, which
            must divide exactly, so results do not depend on the number of processes. An epoch is
            ``len(dataset) // batch_size`` steps; the incomplete tail is dropped.
        optimizer: an optimizer over the model's parameters, or ``make(model) -> optimizer``
            (called with the bare model, already on ``device``).
        scheduler: None, an LR scheduler on that optimizer, or ``make(optimizer) -> scheduler``
            (e.g. ``lambda opt: warmup_cosine(opt, 100, steps)``); stepped once per optimizer step
            with no argument (so ReduceLROnPlateau is not supported here).
        amp: ``"none"`` (float32), ``"bf16"`` (autocast to bfloat16; works on CPU and GPU) or
            ``"fp16"`` (autocast to float16 with a ``torch.amp.GradScaler``; for GPUs).
        grad_clip: clip the global gradient L2 norm to this value (None: no clipping). The logged
            ``grad_norm`` is the norm before clipping.
        accum: micro-steps whose gradients are summed into one optimizer step (trades memory for
            time; under DDP the gradient all-reduce happens on the last micro-step only).
        ema: keep an exponential moving average of the weights, updated after every optimizer
            step: a decay such as 0.999, or an :class:`EMA` you built. Saved in checkpoints. The model
            keeps its trained weights: with a number the average lives in the checkpoints only, so to
            use it after ``fit`` pass an :class:`EMA` and call its ``copy_to`` or ``swapped`` (a
            benchmark of ours passed a number and evaluated raw weights for ten sessions). None: no EMA.
        ckpt_every: write a checkpoint every this many steps (None: only at the end). One is
            always written at the end.
        keep: how many step checkpoints to keep besides ``last`` (None: all); two, so a damaged newest one
            leaves the one before it to resume from.
        log_every: write a ``metrics.jsonl`` line (and TensorBoard scalars) every this many steps
            and at the last step: ``step``, ``epoch``, ``loss`` and the step function's scalars
            (means over the interval), ``lr``, ``grad_norm``, ``seconds`` (training time so far).
        seed: seeds the data order (``seed + epoch``) and, for a fresh run, every RNG (rank ``r``
            uses ``seed + r``, so dropout differs between ranks). Seed before building the
            model if its initialisation must be reproducible too.
        shuffle: reshuffle the data every epoch (False: dataset order).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; under torchrun a CUDA device becomes
            ``cuda:<LOCAL_RANK>``.
        resume: False for a fresh run; True to continue from the newest checkpoint in
            ``run_dir`` (a fresh start when there is none, so a preemptible job can always pass
            it); or the path of a checkpoint to continue from. Everything is restored (weights,
            optimizer, scheduler, EMA, GradScaler, step, data position, log sums and each rank's
            RNG states) so the run ends bit-identical to one never stopped (same world size;
            resuming on another world size continues correctly but reseeds the RNGs).
        num_workers: DataLoader worker processes (see the module docstring on exactness).
        collate_fn: DataLoader collate function (default: torch's).
        progress: show a tqdm bar on rank 0 (it also hides itself when stderr is not a terminal).
        tensorboard: also write TensorBoard scalars when ``torch.utils.tensorboard`` imports.
        method: method name stored in checkpoint headers and checked when resuming.
        config: the resolved config (a dataclass or dict), stored in checkpoint headers as JSON.
        extra_state: ``{name: object}`` of more things with ``state_dict()`` /
            ``load_state_dict()`` (a second network, its optimizer) saved and restored with the
            checkpoint.

    Returns:
        ``{"steps", "epoch", "loss", <step_fn scalars>, "lr", "grad_norm", "seconds",
        "total_seconds", "resumed_from", "checkpoint", "run_dir"}``: the last logged metrics,
        this call's wall time, the training time over all resumes, the step resumed from (None
        for a fresh run) and the last checkpoint's base path. Identical on every rank except the
        timings.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (all ranks raise; the weights are not
            updated with it and the last checkpoint is intact).
        TrainingError: ``run_dir`` already holds a run and ``resume`` is False, or ``step_fn``
            returned something unusable.
        ConfigError: inconsistent arguments (``batch_size`` not divisible, unknown ``amp``).
        CheckpointError: the checkpoint to resume from is missing, corrupt, another method's, or
            was written with another ``batch_size`` or dataset length.
    """
    if amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_DTYPES)}, got '{amp}'")
    for name, v, low in (("steps", steps, 0), ("batch_size", batch_size, 1), ("accum", accum, 1),
                         ("log_every", log_every, 1), ("ckpt_every", ckpt_every or 1, 1)):
        if not isinstance(v, int) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip > 0):  # before any work, not at step 1
        raise ConfigError(f"grad_clip must be a finite number > 0, or None for no clipping; got {grad_clip}")
    info, dev, started = setup_distributed(device)
    try:
        world, rank = info.world_size, info.rank
        if batch_size % (world * accum):
            raise ConfigError(f"batch_size {batch_size} must be divisible by world_size * accum = "
                              f"{world} * {accum}")
        micro = batch_size // (world * accum)  # per-rank micro-batch
        n_data = len(dataset)  # type: ignore[arg-type]
        steps_per_epoch = n_data // batch_size
        if steps_per_epoch == 0:
            raise ConfigError(f"the dataset has {n_data} samples, fewer than batch_size={batch_size}")
        run_dir = Path(run_dir)

        # ---- model, optimizer, scheduler, EMA, scaler --------------------------------------
        raw = unwrap(model).to(dev)
        opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else optimizer(raw)
        sched = scheduler(opt) if callable(scheduler) and not hasattr(scheduler, "state_dict") else scheduler
        if isinstance(ema, bool):  # True was an AttributeError ('bool' object has no attribute 'to')
            raise ConfigError(f"ema takes a decay in (0, 1) or an EMA object, not {ema}")
        ema_obj = EMA(raw, ema) if isinstance(ema, (int, float)) else ema
        if ema_obj is not None:
            ema_obj.to(dev)
        scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
        params = [p for p in raw.parameters() if p.requires_grad]
        ckpt = Checkpointer(run_dir, method=method, keep=keep, config=config, enabled=info.is_main)
        extra_state = dict(extra_state or {})

        # ---- resume or start fresh ---------------------------------------------------------
        start_step, seconds_before, resumed_from = 0, 0.0, None
        sums: dict[str, Any] = {}  # running sums of the logged values since the last log line
        n_sum = 0
        src = (ckpt.latest() if resume is True else Path(resume)) if resume else None
        if src is not None and resume is not True and _step_of(src) >= 0:  # a branch from an older checkpoint
            newer = [s for s in ckpt.steps() if s > _step_of(src)]
            if newer:  # resume=True would later pick the abandoned run's newest step over this branch's own
                raise TrainingError(f"{ckpt.dir} holds checkpoints after {Path(src).name} (steps {newer}) from the "
                                    "run that went on past it; move them out of that folder to branch from here")
        if not resume and ckpt.steps():
            raise TrainingError(f"{ckpt.dir} already holds checkpoints; pass resume=True to continue, or "
                                "use a new run directory (tenfold.core.io.new_run_dir)")
        if src is not None:
            if resume is True:  # the newest readable checkpoint: a corrupt newest one (a disk filled or a kill
                # beyond the atomic write) used to stop the resume, with the previous good one left unused
                state, _, src = ckpt.load_newest()
            else:
                state, _ = ckpt.load(src)
            data = state["data"]
            if data["batch_size"] != batch_size or data["dataset_len"] != n_data:
                raise CheckpointError(
                    f"{src} was written with batch_size={data['batch_size']} on {data['dataset_len']} samples; "
                    f"resume with the same batch_size and dataset (now {batch_size} on {n_data})")
            # another seed or shuffle mid-epoch skips the consumed samples of a *different* order: some samples
            # would repeat and others go unseen that epoch, without a word
            if (data.get("seed", seed), data.get("shuffle", shuffle)) != (seed, shuffle):
                raise CheckpointError(f"{src} was written with seed={data.get('seed')}, shuffle={data.get('shuffle')}; "
                                      f"resume with the same (now seed={seed}, shuffle={shuffle})")
            if not ("model" in state and "optimizer" in state):
                raise CheckpointError(f"{src} holds no model or optimizer state (not a checkpoint of fit)")
            try:  # another architecture was a raw RuntimeError listing every key
                raw.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
            except torch.OutOfMemoryError:  # the device's, not the checkpoint's
                raise
            except (RuntimeError, ValueError, KeyError) as e:
                why = (str(e).splitlines() or [type(e).__name__])[0]
                raise CheckpointError(f"{src} does not fit this model or optimizer ({why}); resume with the model "
                                      "and settings the run started with") from None
            for name, obj, st in (("scheduler", sched, state["scheduler"]), ("ema", ema_obj, state["ema"]),
                                  ("scaler", scaler, state["scaler"])):
                if (obj is None) != (st is None):
                    raise CheckpointError(f"{src} {'has no' if st is None else 'has a'} {name} state but this "
                                          f"run {'uses' if obj is not None else 'does not use'} one; resume "
                                          "with the same settings")
                if obj is not None:
                    obj.load_state_dict(st)
            for name, obj in extra_state.items():
                if name not in state["extra"]:
                    raise CheckpointError(f"{src} has no extra state '{name}'")
                obj.load_state_dict(state["extra"][name])
            rngs = state["rng"]
            if len(rngs) == world:
                set_rng_state(rngs[rank])
            else:
                warnings.warn(f"checkpoint was written by {len(rngs)} processes, resuming with {world}: "
                              "RNG states are reseeded, so the run is no longer bit-identical", TenfoldWarning,
                              stacklevel=2)
                seed_everything(seed + rank + 1_000_003 * state["step"])
            start_step, seconds_before, resumed_from = int(state["step"]), float(state["seconds"]), int(state["step"])
            if start_step > steps:  # it returned the run's state at its own step, with no loss and no word
                warnings.warn(f"{src} is at step {start_step}, past steps={steps}: nothing to train; the run is "
                              f"returned as it stands", TenfoldWarning, stacklevel=2)
            saved = state["log"]["sums"]  # a list per rank (a dict of rank 0's before session 14)
            saved = saved if isinstance(saved, dict) else saved[rank if len(saved) == world else 0]
            sums = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in saved.items()}
            n_sum = int(state["log"]["count"])
            del state
        else:
            seed_everything(seed + rank)
        logger = MetricsLogger(run_dir, enabled=info.is_main, tensorboard=tensorboard,
                               resume_step=start_step if resume else None)

        net: nn.Module = raw
        if world > 1:
            net = nn.parallel.DistributedDataParallel(raw, device_ids=[dev.index] if dev.type == "cuda" else None)
        net.train()

        # ---- data: the order is a function of (seed, epoch) only ------------------------------
        sampler = _ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                    drop_last=True)
        loader_gen = torch.Generator()  # worker seeds; keeps iter(loader) off the global RNG
        loader = DataLoader(dataset, batch_size=micro, sampler=sampler, num_workers=num_workers,
                            collate_fn=collate_fn, pin_memory=dev.type == "cuda", drop_last=True,
                            generator=loader_gen)

        def snapshot(step: int, seconds: float) -> dict[str, Any]:
            rng = gather_rng_states()  # collective
            mine = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in sums.items()}
            log_sums = _gather_objects(mine)  # collective: every rank's partial log sums, in rank order
            return {
                "model": raw.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "ema": ema_obj.state_dict() if ema_obj is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "extra": {k: v.state_dict() for k, v in extra_state.items()},
                "step": step,
                "epoch": step // steps_per_epoch,
                "position": step % steps_per_epoch,  # optimizer steps already taken in this epoch
                "data": {"seed": seed, "shuffle": shuffle, "batch_size": batch_size, "dataset_len": n_data},
                "rng": rng,
                "seconds": seconds,
                "log": {"sums": log_sums, "count": n_sum},  # so log lines after a resume match too
            }

        # ---- the loop ------------------------------------------------------------------------
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        step = start_step
        last_ckpt = src
        last_logged: dict[str, Any] = {}
        autocast_dtype = AMP_DTYPES[amp]
        bar = tqdm(total=steps, initial=step, desc=method, dynamic_ncols=True, file=sys.stderr,
                   disable=None if (progress and info.is_main) else True)
        batches: Iterator[Any] | None = None
        amp_skipped = 0  # fp16 steps the gradient scaler skipped (this process's share of the run)
        grad_bad = torch.zeros((), dtype=torch.bool, device=dev)  # a non-finite gradient norm since the start

        def no_bad_gradient(at: int) -> None:
            if bool(grad_bad):  # a host read: at log lines and checkpoints only
                where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint yet"
                raise NonFiniteLossError(f"a gradient norm was not finite at or before step {at} from a finite loss; "
                                         f"the weights since are not saved, {where}; a term of the loss has no "
                                         "finite gradient there (e.g. sqrt or log at 0)")
        try:
            while step < steps:
                epoch, position = divmod(step, steps_per_epoch)
                if batches is None:  # start (or re-enter, after a resume) an epoch
                    sampler.set_epoch(epoch)
                    sampler.start = position * accum * micro
                    loader_gen.manual_seed(_epoch_seed(seed, epoch, rank))
                    batches = iter(loader)
                opt.zero_grad(set_to_none=True)
                loss_sum = 0.0
                for i in range(accum):
                    batch = _to_device(next(batches), dev)
                    sync = contextlib.nullcontext() if (world == 1 or i == accum - 1) else net.no_sync()
                    with sync:
                        with torch.autocast(dev.type, dtype=autocast_dtype or torch.float32,
                                            enabled=autocast_dtype is not None):
                            out = step_fn(net, batch)
                        if not isinstance(out, Mapping) or not isinstance(out.get("loss"), torch.Tensor):
                            raise TrainingError("step_fn must return a dict with 'loss' (a scalar tensor)")
                        loss = out["loss"]
                        if loss.numel() != 1 or not loss.requires_grad:  # were torch's own errors, later
                            raise TrainingError("step_fn's 'loss' must be a scalar tensor with a gradient, got "
                                                + (f"shape {tuple(loss.shape)}" if loss.numel() != 1 else
                                                   "one without (detached, or computed under no_grad)"))
                        # Check before backward, so a bad loss never reaches the weights. Under DDP the
                        # mean over ranks is checked, so every rank raises together.
                        # a copy: for a float32 loss .float() is the loss itself, and the all-reduce wrote the
                        # sum over ranks into it (wrong gradients through sqrt / exp, wrong logged parts)
                        lval = loss.detach().float().reshape(()).clone()
                        if world > 1:
                            dist.all_reduce(lval)
                            lval = lval / world
                        lf = float(lval)
                        if not math.isfinite(lf):
                            no_bad_gradient(step)  # an earlier step's gradient, not this loss, made it
                            where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint yet"
                            raise NonFiniteLossError(
                                f"loss is {lf} at step {step + 1} (epoch {epoch}); weights not updated, {where}; "
                                "lower the learning rate, set grad_clip, or check the data")
                        loss_sum += lf
                        scaled = loss / accum
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    for k, v in out.items():
                        if k != "loss":
                            sums[k] = sums.get(k, 0.0) + _scalar(k, v) / accum
                if scaler is not None:
                    scaler.unscale_(opt)
                gnorm = clip_gradients(params, grad_clip)
                lr = opt.param_groups[0]["lr"]
                if scaler is None:
                    # a finite loss with a non-finite gradient (sqrt(0), 0 * inf) stepped NaN into the weights, saved
                    # them, and the next step's error called that checkpoint "the last good" one. The flag stays on
                    # the device (a host read every step stalls a GPU); the CPU, which has no such cost, checks at
                    # once, before the update; an accelerator at each log line and checkpoint, which it never writes
                    # after a bad step
                    grad_bad |= ~torch.isfinite(gnorm.to(grad_bad.device))
                    if dev.type == "cpu" and bool(grad_bad):
                        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint yet"
                        raise NonFiniteLossError(
                            f"the gradient norm is {float(gnorm)} at step {step + 1} (epoch {epoch}) from a finite "
                            f"loss {loss_sum / accum:.6g}; weights not updated, {where}; a term of the loss has no "
                            "finite gradient here (e.g. sqrt or log at 0)")
                skipped = False
                if scaler is not None:
                    scale = scaler.get_scale()
                    scaler.step(opt)
                    scaler.update()
                    # an fp16 overflow: the GradScaler skipped the update, so the schedule and the EMA do not
                    # advance either (they did, and a run of overflows decayed the lr while the weights stood still)
                    skipped = scaler.get_scale() < scale
                else:
                    opt.step()
                amp_skipped += skipped
                if sched is not None and not skipped:
                    sched.step()
                if ema_obj is not None and not skipped:
                    ema_obj.update(raw)
                step += 1
                bar.update(1)
                if position + 1 == steps_per_epoch:
                    batches = None
                sums["loss"] = sums.get("loss", 0.0) + loss_sum / accum
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + gnorm.detach().float()
                n_sum += 1

                if step % log_every == 0 or step == steps:
                    no_bad_gradient(step)
                    keys = sorted(k for k in sums if k not in ("loss", "grad_norm"))
                    vals = [sums[k] for k in keys]
                    if world > 1 and keys:  # the step function's scalars: mean over ranks
                        t = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=dev) for v in vals])
                        dist.all_reduce(t)
                        vals = (t / world).tolist()
                    last_logged = {"epoch": (step - 1) // steps_per_epoch, "loss": sums["loss"] / n_sum}
                    last_logged.update({k: float(v) / n_sum for k, v in zip(keys, vals)})
                    last_logged.update({"lr": lr, "grad_norm": float(sums["grad_norm"]) / n_sum,
                                        "seconds": seconds_before + time.perf_counter() - t_start})
                    if dev.type == "cuda":  # what a GPU run costs in memory: this process's peak so far
                        last_logged["max_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
                    logger.log(step, last_logged)
                    bar.set_postfix(loss=f"{last_logged['loss']:.4g}", refresh=False)
                    sums, n_sum = {}, 0

                if (ckpt_every and step % ckpt_every == 0) or step == steps:
                    no_bad_gradient(step)
                    last_ckpt = ckpt.save(snapshot(step, seconds_before + time.perf_counter() - t_start), step)
        finally:
            bar.close()
            logger.close()
            del batches
        barrier()  # leave together: rank 0's logs and checkpoints are complete when any rank reads them

        elapsed = time.perf_counter() - t_start
        log_file = run_dir / "metrics.jsonl"
        if not last_logged and step == steps and log_file.is_file():  # resumed at its end: the run's last log line
            # (a finished run resumed returned no loss or lr, which the docstring lists)
            rows = [ln for ln in log_file.read_text().splitlines() if ln.strip()]
            if rows:
                last_logged = {k: v for k, v in json.loads(rows[-1]).items() if k != "step"}
        if amp_skipped:
            warnings.warn(f"{amp_skipped} of {step - start_step} fp16 steps overflowed and were skipped by the "
                          "gradient scaler (weights, schedule and EMA not advanced on them); bf16 has no overflow",
                          TenfoldWarning, stacklevel=2)
        result: dict[str, Any] = {"steps": step, "amp_skipped_steps": amp_skipped, **last_logged}
        result.update({"seconds": elapsed, "total_seconds": seconds_before + elapsed,
                       "resumed_from": resumed_from, "checkpoint": str(last_ckpt) if last_ckpt else None,
                       "run_dir": str(run_dir)})
        return result
    finally:
        if started and dist.is_initialized():
            dist.destroy_process_group()
