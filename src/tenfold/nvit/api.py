"""NViT's verbs: ``lut`` (measure a latency LUT here), ``prune`` (global latency-aware pruning with
KD), ``finetune`` (KD fine-tuning of the dense pruned model on the engine) and ``export`` (ONNX and
the report: MACs, params, LUT and measured latency, per-block dims plot)."""

from __future__ import annotations

import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tenfold.core.data import ImageDataset, load_dataset, synthetic_classification
from tenfold.core.engine import (
    Checkpointer,
    MetricsLogger,
    fit,
    get_rng_state,
    seed_everything,
    set_rng_state,
    unwrap,
    warmup_cosine,
)
from tenfold.core.evaluate import evaluate_classifier
from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    DataError,
    TenfoldWarning,
    check_device,
    check_inputs,
    input_files,
    write_json,
)
from tenfold.core.latency import (
    LatencyResult,
    LatencyTable,
    RatioResult,
    build_vit_lut,
    measure_latency,
    measure_ratio,
)
from tenfold.core.models import BlockDims, VisionTransformer, load_weights
from tenfold.nvit.config import Config
from tenfold.nvit.losses import nvit_loss, random_crop_flip
from tenfold.nvit.model import (
    GatedViT,
    ViTSpec,
    build_dense,
    check_finite_weights,
    export_onnx,
    from_timm,
    load_dense,
    macs_params,
    onnx_max_error,
    save_dense,
    spec_of,
)
from tenfold.nvit.prune import LatencyModel, Saliency, masks_of, prune_step, relative_eta, synthetic_lut

STRUCT_KEYS = ("emb", "head", "qk", "v", "mlp")


# --------------------------------------------------------------------------------------------
# build(cfg): the one place the config becomes plain arguments
# --------------------------------------------------------------------------------------------
def _ints(s: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in str(s).replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got '{s}'") from None
    if not vals or sorted(set(vals)) != vals:
        raise ConfigError(f"{name} must be strictly increasing integers, got '{s}'")
    return vals


def build(cfg: Config) -> dict[str, Any]:
    """Plain arguments of the prune step, the LUT grid and the loss from ``cfg`` (whose values
    :meth:`Config.__post_init__` has checked)."""
    return {
        "group_size": {"emb": cfg.group_emb, "head": cfg.group_head, "qk": cfg.group_qk, "v": cfg.group_v,
                       "mlp": cfg.group_mlp},
        "minimum": {"emb": cfg.min_emb, "head": cfg.min_heads, "qk": cfg.min_qk, "v": cfg.min_v, "mlp": cfg.min_mlp},
        "scale": {"emb": cfg.scale_emb, "head": cfg.scale_head, "qk": cfg.scale_qk, "v": cfg.scale_v,
                  "mlp": cfg.scale_mlp},
        "grid": {"embed": _ints(cfg.lut_embed, "lut_embed"), "heads": _ints(cfg.lut_heads, "lut_heads"),
                 "qk": _ints(cfg.lut_qk, "lut_qk"), "v": _ints(cfg.lut_v, "lut_v"),
                 "mlp": _ints(cfg.lut_mlp, "lut_mlp")},
        "tokens": (cfg.img_size // cfg.patch_size) ** 2 + 1,
    }


def load_model(cfg: Config, model: str = "vit", weights: str = "") -> VisionTransformer:
    """The ViT to prune: ``vit`` (tenfold's ViT at the config's dims, ``weights`` optional), an NViT
    model ``.json`` (from prune/finetune), or ``timm:NAME`` built locally (``weights``: a local file)."""
    if model == "vit":
        vit = VisionTransformer(img_size=cfg.img_size, patch_size=cfg.patch_size, num_classes=cfg.num_classes,
                                embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                                mlp_ratio=cfg.mlp_ratio)
        if weights:
            load_weights(vit, weights, name="tenfold ViT")
            check_finite_weights(vit, str(weights))
        return vit
    if model.startswith("timm:"):
        import timm

        try:
            net = timm.create_model(model[5:], pretrained=False, num_classes=cfg.num_classes)
        except RuntimeError as e:
            raise ConfigError(f"timm cannot build '{model[5:]}': {str(e).splitlines()[0]}") from None
        if weights:  # core's loader: a file that does not fit is one line naming the keys (was a raw RuntimeError)
            load_weights(net, weights, name=f"timm {model[5:]}")
            check_finite_weights(net, str(weights))
        return from_timm(net)
    if weights:  # an NViT model carries its own weights: a --weights file was ignored without a word
        raise ConfigError(f"--weights applies to --model vit or timm:NAME, not to {model} (an NViT model .json or run "
                          "directory carries its own weights; a timm model is written timm:NAME)")
    p = Path(model)
    if p.is_dir():
        p = p / "pruned.json" if (p / "pruned.json").is_file() else p / "model.json"
    return load_dense(p)


def load_data(spec: str, limit: int, cfg: Config, seed: int = 0, num_classes: int = 0,
              model: ViTSpec | None = None) -> ImageDataset:
    """``synthetic`` (seeded, SYNTHETIC) or a core dataset spec; checks the image size and, given the model's
    ``num_classes``, that every label has an output (a folder with more classes was an IndexError mid-training), and
    given its ``model`` spec, that the images are the model's (a 224-px timm model under a 16-px preset, or grey
    images for a colour model, failed only once training had started)."""
    if model is not None and model.img_size != cfg.img_size:
        raise ConfigError(f"the model takes {model.img_size}x{model.img_size} images but img_size is {cfg.img_size}; "
                          f"--set img_size={model.img_size} (and data of that size)")
    if spec == "synthetic":
        if model is not None and model.in_chans != 3:  # the generator draws colour images
            raise DataError(f"synthetic data has 3-channel images but the model takes {model.in_chans}")
        return synthetic_classification(limit or 512, num_classes or cfg.num_classes, cfg.img_size, seed=seed)
    ds = load_dataset(spec, limit=limit or None)
    if model is not None and ds.images.shape[1] != model.in_chans:
        raise DataError(f"{spec} has {ds.images.shape[1]}-channel images but the model takes {model.in_chans}")
    if tuple(ds.images.shape[2:]) != (cfg.img_size, cfg.img_size):
        raise DataError(f"{spec} has {tuple(ds.images.shape[2:])} images but the model takes "
                        f"{cfg.img_size}x{cfg.img_size}; set img_size or use matching data")
    if num_classes and ds.num_classes > num_classes:
        raise DataError(f"{spec} has {ds.num_classes} classes but the model predicts {num_classes}; set "
                        "num_classes (for a model built here) or use matching data")
    return ds


# --------------------------------------------------------------------------------------------
# LUT
# --------------------------------------------------------------------------------------------
def measure_lut(grid: dict[str, list[int]], *, device: str, batch: int, tokens: int, patch: int, in_chans: int,
                num_classes: int, warmup: int, repeats: int) -> LatencyModel:
    """Measure the block LUT and the stem table (patch embedding + final norm + classifier) here.

    On the CPU the tables hold process CPU time (the clock the measured latency target is met on) and
    the grid is visited in a seeded random order, so a load change during the sweep cannot tilt one axis
    (in grid order, all E=64 points came before all E=192 ones); wall time on an accelerator."""
    dev = check_device(device)
    clock = "cpu" if dev.type == "cpu" else "wall"
    block = build_vit_lut(device, grid, batch, tokens, warmup=warmup, repeats=repeats, order="shuffled",
                          clock=clock)
    side = int(round(math.sqrt(tokens - 1))) * patch

    def stem(embed: float) -> LatencyResult:
        vit = VisionTransformer(img_size=side, patch_size=patch, in_chans=in_chans, num_classes=num_classes,
                                embed_dim=int(embed), block_dims=[]).to(dev).eval()
        x = torch.rand(batch, in_chans, side, side, device=dev)
        return measure_latency(vit, (x,), warmup=warmup, repeats=repeats, device=dev)

    from tenfold.core.latency import build as build_table

    st = build_table({"embed": grid["embed"]}, stem, metadata={"kind": "vit-stem", "batch": batch}, device=dev,
                     order="shuffled", clock=clock)
    return LatencyModel(block, st)


def load_lut(path: str) -> LatencyModel:
    """Read ``lut.json`` written by the ``lut`` verb."""
    p = Path(path)
    if p.is_dir():
        p = p / "lut.json"
    if not p.is_file():
        raise DataError(f"latency LUT not found: {p} (run `tenfold nvit lut` first)")
    try:
        d = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"corrupt NViT LUT {p}: {e}") from None
    if not isinstance(d, dict) or "block" not in d:
        raise DataError(f"malformed NViT LUT {p}: no 'block' table (write one with `tenfold nvit lut`)")
    block = LatencyTable.from_dict(d["block"], f"{p} (block table)")
    stem = LatencyTable.from_dict(d["stem"], f"{p} (stem table)") if d.get("stem") else None
    for name, table in (("block", block), ("stem", stem)):
        # a NaN entry pruned to a few percent, a negative one "reached" the target at once, without a word
        vals = np.asarray(table.values, dtype=np.float64) if table is not None else np.ones(1)
        bad = int((~(np.isfinite(vals) & (vals > 0))).sum())
        if bad:
            raise DataError(f"NViT LUT {p}: {bad} of the {name} table's {vals.size} latencies are NaN/Inf, zero or "
                            "negative; measure it again with `tenfold nvit lut`")
    return LatencyModel(block, stem)


def check_lut_fits(lat: LatencyModel, spec: Any, where: str, minimum: dict[str, int] | None = None,
                   minimum_name: str = "the pruning minimums") -> None:
    """Refuse a LUT measured for another model: a token count other than the model's, or a grid that does not
    reach the model's dims (the table clamps outside its grid, so every saving there read 0 and the dense
    latency, the target's reference, was wrong, without a word), or, given the pruning ``minimum``, a grid that
    starts above it (below its lowest point the table clamps, so pruning there would save nothing on the LUT:
    the `paper` preset's E grid began at 256 with a minimum of 64; ``export`` passes the pruned model's smallest
    dims, whose LUT latency would be read clamped)."""
    tokens = lat.block.metadata.get("tokens")
    if tokens is not None and int(tokens) != spec.tokens:
        raise ConfigError(f"LUT {where} was measured at {tokens} tokens but this model has {spec.tokens}; measure one "
                          "for it with `tenfold nvit lut` and the model's config")
    need = {"embed": spec.embed_dim, "heads": max(b.num_heads for b in spec.blocks),
            "qk": max(b.qk_dim for b in spec.blocks), "v": max(b.v_dim for b in spec.blocks),
            "mlp": max(b.mlp_hidden for b in spec.blocks)}
    short = [f"{k} {v} > {int(lat.block.axes[k][-1])}" for k, v in need.items()
             if k in lat.block.axes and v > lat.block.axes[k][-1]]
    if short:
        raise ConfigError(f"LUT {where} does not reach this model's dims ({', '.join(short)}): outside its grid "
                          "every unit would look free; measure one with `--set lut_*` grids that cover the model")
    names = {"emb": "embed", "head": "heads", "qk": "qk", "v": "v", "mlp": "mlp"}
    high = [f"{names[s]} {int(lat.block.axes[names[s]][0])} > minimum {m}" for s, m in (minimum or {}).items()
            if names[s] in lat.block.axes and m < lat.block.axes[names[s]][0]]
    if high:
        raise ConfigError(f"LUT {where} starts above {minimum_name} ({', '.join(high)}): below its grid every "
                          "unit would look free; measure one whose `--set lut_*` grids start at the minimums")


def check_teacher_fits(teacher: nn.Module, student: nn.Module, where: str) -> None:
    """Refuse a distillation teacher whose logits or inputs do not match the student's: another class count gave a
    KL between unrelated outputs (trained with a huge loss, no word), another image size failed mid-run."""
    if teacher.num_classes != student.num_classes:
        raise ConfigError(f"teacher {where} has {teacher.num_classes} classes, the student {student.num_classes}; "
                          "distil from the unpruned model of this student (its prune run's teacher.json)")
    if tuple(teacher.input_size) != tuple(student.input_size):
        raise ConfigError(f"teacher {where} takes {tuple(teacher.input_size)} images, the student "
                          f"{tuple(student.input_size)}; distil from the unpruned model of this student")


def time_model(vit: nn.Module, batch: int, *, repeats: int, device: str | torch.device = "cpu",
               generator: torch.Generator | None = None) -> LatencyResult:
    """Inference latency of ``vit`` at ``batch`` random images (2 warm-up calls, ``repeats`` timed ones).

    ``generator`` draws the input off the global RNG (None: the global RNG, as before)."""
    dev = check_device(device)
    vit = vit.to(dev).eval()
    x = torch.rand(batch, *vit.input_size, generator=generator).to(dev)
    return measure_latency(vit, (x,), warmup=2, repeats=repeats, device=dev)


def vit_ratio(ref: nn.Module, vit: nn.Module, batch: int, *, device: str = "cpu", pairs: int = 20) -> RatioResult:
    """Latency of ``vit`` relative to ``ref`` at ``batch`` seeded random images, from ``pairs`` interleaved
    single calls (:func:`tenfold.core.latency.measure_ratio`; process CPU time on the CPU, wall time on an
    accelerator). Neighbouring calls see the same machine load, so the ratio stays steady where blocks of
    calls per model did not. The global RNG stays untouched (exact resume of the pruning loop)."""
    dev = check_device(device)
    ref, vit = ref.to(dev).eval(), vit.to(dev).eval()
    x = torch.rand(batch, *vit.input_size, generator=torch.Generator().manual_seed(0)).to(dev)
    return measure_ratio(ref, vit, (x,), pairs=pairs, device=dev)


def latency_ratio(ref: nn.Module, vit: nn.Module, batch: int, *, device: str = "cpu", pairs: int = 20) -> float:
    """The steady-clock ratio of :func:`vit_ratio` (what the measured stop and the peer bisection read)."""
    return float(vit_ratio(ref, vit, batch, device=device, pairs=pairs).ratio)


# --------------------------------------------------------------------------------------------
# Pruning loop
# --------------------------------------------------------------------------------------------
def _careful(measure: Callable[[], float], reads: int) -> float:
    """Median of ``reads`` clock readings (the stop decision must not hang on one noisy reading)."""
    return float(statistics.median(float(measure()) for _ in range(max(1, reads))))


def _fewest_groups(masks: dict[tuple[str, int], torch.Tensor], before: dict[tuple[str, int], torch.Tensor],
                   groups: list[tuple[tuple[str, int], torch.Tensor]], measure: Callable[[], float], reads: int,
                   limit: float, measured_all: float) -> tuple[int, float]:
    """Bisect the smallest prefix of a prune step's ``groups`` (in removal order) whose model the clock reads
    at or below ``limit``; all of them are known to (``measured_all``). Masks end in that state.
    Returns (groups kept removed, its reading)."""
    def apply(n: int) -> None:
        for key, m in masks.items():
            m.copy_(before[key])
        for key, idx in groups[:n]:
            masks[key][idx] = 0

    lo, hi, at_hi = 0, len(groups), measured_all  # lo: known (or assumed, n = 0) above the limit; hi: at or below
    while hi - lo > 1:
        mid = (lo + hi) // 2
        apply(mid)
        m = _careful(measure, reads)
        if m <= limit:
            hi, at_hi = mid, m
        else:
            lo = mid
    apply(hi)
    return hi, at_hi


class _Batches:
    """Endless shuffled batches ``(x (B, C, H, W) in [0, 1], y (B,))``, reshuffled per epoch, with a
    resumable position: ``state_dict`` holds the generator state at the epoch's start and the offset."""

    def __init__(self, ds: ImageDataset, batch: int, seed: int, device: torch.device) -> None:
        self.x, self.y = ds.tensors()
        if not 1 <= batch <= len(self.y):  # a larger batch took the whole set while the lr scaled with the batch
            raise ConfigError(f"the dataset has {len(self.y)} samples, fewer than batch_size={batch}"
                              if batch > len(self.y) else f"batch_size must be >= 1, got {batch}")
        self.batch, self.device = batch, device
        self.g = torch.Generator().manual_seed(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_state = self.g.get_state()
        self.perm = torch.randperm(len(self.y), generator=self.g)
        self.pos = 0

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch > len(self.perm):
            self._new_epoch()
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return self.x[idx].to(self.device), self.y[idx].to(self.device)

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is: the epoch's generator state and the offset into its permutation."""
        return {"epoch_state": self.epoch_state.clone(), "pos": self.pos, "n": len(self.y), "batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream exactly where :meth:`state_dict` was taken."""
        if int(state["n"]) != len(self.y) or int(state["batch"]) != self.batch:
            raise CheckpointError(f"the checkpoint was taken on {state['n']} images in batches of {state['batch']}, "
                                  f"this run has {len(self.y)} in batches of {self.batch}")
        self.g.set_state(state["epoch_state"].to(torch.uint8))
        self._new_epoch()
        self.pos = int(state["pos"])


PRUNE_LOOP_VERSION = 2  # bump when the loop's semantics change: a checkpoint of another version is refused


def prune_lr_at(it: int, lr: float, max_iters: int, schedule: str) -> float:
    """The pruning loop's lr at 0-based iteration ``it``: ``lr (1 + cos(pi it / max_iters)) / 2`` for "cosine",
    ``lr`` for "constant"."""
    if schedule == "constant":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(it, max_iters) / max_iters))


def prune_model(gated: GatedViT, teacher: nn.Module, dataset: ImageDataset, latency: LatencyModel, *,
                target_fraction: float, interval: int, prune_per_iter: int, group_norm: int,
                group_size: dict[str, int], minimum: dict[str, int], scale: dict[str, float], momentum: float,
                eta: float, eta_mode: str, eta_rho: float, batch_size: int, lr: float, weight_decay: float,
                kd_coef: float, temperature: float, ce_coef: float, label_smoothing: float, max_iters: int,
                lr_schedule: str = "constant",
                device: str = "cpu", seed: int = 0, logger: MetricsLogger | None = None,
                augment: bool = True, checkpointer: Checkpointer | None = None, ckpt_every: int = 0,
                resume: bool = False, stop_after: int = 0,
                measure: Callable[[], float] | None = None, measure_tolerance: float = 0.05,
                calib_window: int = 3, settle_reads: int = 3, progress: bool = False) -> dict[str, Any]:
    """Spec §2: train with KD from ``teacher`` while pruning ``gated`` every ``interval`` iterations
    until its LUT latency is at most ``target_fraction`` of the unpruned one; masks edited in place.

    With a ``checkpointer`` the whole loop state (weights, gates, masks, optimizer, saliency sums and
    EMA, data position, RNGs, history) is saved every ``ckpt_every`` iterations and at the end, and
    ``resume`` continues from the newest one exactly. ``stop_after`` (tests): stop after that many
    iterations as if killed. ``measure`` (optional): the measured latency of the current model as a fraction
    of the unpruned one; when given, each prune step calibrates the LUT locally (the LUT target of the step is
    ``target / c`` with ``c`` the median clock/LUT ratio of the last ``calib_window`` readings, so one noisy
    reading cannot move the stop), so the stop lands on the *measured* target even where the LUT's
    interpolation is off (alignment cliffs of CPU kernels, a LUT timed under load). A step that meets its LUT
    target only ends the pruning if the clock (median of ``settle_reads`` readings) says at most
    ``target_fraction * (1 + measure_tolerance)``; a step the clock puts there ends it too, whatever the LUT says
    (the calibration lags a clock/LUT ratio that moves fast); the last step then keeps only the fewest of its
    groups (lowest scores first, found by bisection on the clock) that still do, so it cannot overshoot the
    target. The student trains in eval mode after the first prune step, where the saliency EMA restarts (spec §2).
    The LUT still prices every unit (eta * dT).
    ``lr_schedule``: "constant" keeps ``lr``, what the reference runs (its pruning loop steps DeiT's cosine
    scheduler with epoch 0 only, so the lr stays at the base; the spec lists the parser's "cosine"); "cosine"
    decays it from ``lr`` to 0 over ``max_iters``, the cap of the run, not its unknown length.
    Returns the per-step history (dims, LUT latency, measured fraction, MACs, params) and losses."""
    dev = check_device(device)
    if lr_schedule not in ("cosine", "constant"):
        raise ConfigError(f"prune lr schedule must be 'cosine' or 'constant', got '{lr_schedule}'")
    if max_iters < 1:
        raise ConfigError(f"max_prune_iters must be >= 1, got {max_iters}")
    if not 0 < target_fraction <= 1:  # the verb checked it, this public loop did not: NaN / 0 pruned to the
        # minimums, 2.0 "reached" after one step (1: the unpruned baseline)
        raise ConfigError(f"the latency target (target_fraction) must lie in (0, 1], got {target_fraction}")
    gated.to(dev).train()
    teacher.to(dev).eval()
    masks = masks_of(gated)
    # a minimum at or above a structure's width leaves it unpruned: say so (it ran as a silent no-op until session 23)
    frozen = [f"{key} (width {max(int(m.numel()) for m in gated.masks(key))}, minimum {minimum[key]})"
              for key in STRUCT_KEYS if all(int(m.numel()) <= minimum[key] for m in gated.masks(key))]
    if frozen and not resume:
        warnings.warn("these structures are never pruned, their minimum is at or above their width: "
                      + ", ".join(frozen) + "; lower min_* (--set min_emb=..., min_heads, min_qk, min_v, min_mlp) "
                      "to prune them", TenfoldWarning, stacklevel=2)
    E0, blocks0 = gated.dims()
    full = latency(E0, blocks0)
    target = target_fraction * full
    opt = torch.optim.AdamW(gated.weights(), lr=lr, weight_decay=weight_decay)
    sal = Saliency(gated, scale, momentum)
    data = _Batches(dataset, batch_size, seed, dev)
    t, eta_used, reached, start = 0, eta, False, 0
    unreachable = False  # every structure at its minimum before the target: stop, do not train on
    history: list[dict[str, Any]] = []
    ce_trace: list[float] = []
    seconds0 = 0.0
    if resume:
        if checkpointer is None or checkpointer.latest() is None:
            raise CheckpointError("nothing to resume: no pruning checkpoint in the run directory")
        st, _, _ = checkpointer.load_newest()
        if int(st.get("loop", 1)) != PRUNE_LOOP_VERSION:
            raise CheckpointError(f"{checkpointer.dir} holds a pruning run of an older tenfold, whose loop differs "
                                  "(session 14: threshold index, eval switch, EMA restart); start the run anew")
        gated.load_state_dict(st["model"])
        gated.to(dev)
        opt.load_state_dict(st["optimizer"])
        sal.load_state_dict(st["saliency"])
        data.load_state_dict(st["data"])
        set_rng_state(st["rng"])
        t, eta_used, reached, start = int(st["t"]), float(st["eta"]), bool(st["reached"]), int(st["iteration"])
        unreachable = bool(st.get("unreachable", False))
        history, ce_trace, seconds0 = list(st["history"]), [float(v) for v in st["ce_trace"]], float(st["seconds"])
        if t >= 1:
            gated.eval()  # the student trains in eval mode after the first prune step (below)
    t0 = time.perf_counter() - seconds0
    measured_now: float | None = None

    def save(iteration: int) -> None:
        if checkpointer is None:
            return
        checkpointer.save({"model": gated.state_dict(), "optimizer": opt.state_dict(),
                           "saliency": sal.state_dict(), "data": data.state_dict(), "rng": get_rng_state(),
                           "t": t, "eta": eta_used, "reached": reached, "unreachable": unreachable,
                           "iteration": iteration,
                           "history": history, "ce_trace": ce_trace, "seconds": time.perf_counter() - t0,
                           "loop": PRUNE_LOOP_VERSION},
                          iteration)

    from tqdm.auto import tqdm

    bar = tqdm(total=max_iters, initial=start, desc="nvit prune", unit="it", disable=not progress, leave=False)
    it = start - 1
    try:
        for it in range(start, max_iters if not (reached or unreachable) else start):
            x, y = next(data)
            if augment:
                x = random_crop_flip(x)
            with torch.no_grad():
                t_logits = teacher(x)
            logits = gated(x)
            loss, parts = nvit_loss(logits, y, t_logits if t > 0 else None, kd_coef=kd_coef,
                                    temperature=temperature, ce_coef=ce_coef, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise DataError(f"non-finite loss at prune iteration {it}; lower prune_lr")
            opt.zero_grad(set_to_none=True)
            for p in gated.gates():
                p.grad = None
            loss.backward()
            sal.batch_done()
            for group in opt.param_groups:  # from the iteration alone, so a resumed run follows the same curve
                group["lr"] = prune_lr_at(it, lr, max_iters, lr_schedule)
            opt.step()
            ce_trace.append(float(parts["ce"]))
            bar.update(1)
            if (it + 1) % interval == 0:
                imp = sal.importance()
                if t == 0 and eta_mode == "relative":
                    eta_used = relative_eta(imp, masks, latency, minimum, eta_rho)
                t += 1
                step_target, calib = target, None
                if measure is not None:  # local calibration of the LUT to the measured clock
                    if measured_now is None:  # (re-used when the masks have not changed since it was taken)
                        measured_now = float(measure())
                    E_now, blocks_now = gated.dims()
                    calib = measured_now * full / latency(E_now, blocks_now)  # clock / LUT, one reading
                    readings = ([h["calibration"] for h in history if "calibration" in h] + [calib])[-calib_window:]
                    step_target = target / statistics.median(readings)
                before = {k: m.clone() for k, m in masks.items()} if measure is not None else {}
                res = prune_step(masks, imp, latency, t=t - 1, prune_per_iter=prune_per_iter, group_norm=group_norm,
                                 group_size=group_size, minimum=minimum, eta=eta_used, target=step_target)
                reached, measured_before, measured_now = res.reached, measured_now, None
                if t == 1:  # spec §2 (reference code): the student is in eval mode after the first step (dropout
                    gated.eval()  # and drop-path off, the weights still train) and the saliency EMA restarts there
                    sal.reset_ema()
                kept_groups = len(res.groups)
                if measure is not None:  # the clock has the last word
                    limit = target_fraction * (1 + measure_tolerance)
                    if reached:  # the LUT says done
                        measured_now = _careful(measure, settle_reads)
                        reached = measured_now <= limit
                    elif res.groups:  # the LUT says not yet, but the calibration follows the clock/LUT ratio with
                        measured_now = float(measure())  # a lag, so a step can cross the target on the clock alone
                        if measured_now <= limit:  # (this reading is the next step's calibration otherwise)
                            measured_now = _careful(measure, settle_reads)
                            reached = measured_now <= limit
                    else:
                        measured_now = measured_before  # no group removed: the same model
                    if reached and len(res.groups) > 1:
                        kept_groups, measured_now = _fewest_groups(masks, before, res.groups, measure, settle_reads,
                                                                   target_fraction * (1 + measure_tolerance),
                                                                   measured_now)
                E, blocks = gated.dims()
                macs, params = macs_params(gated.spec())
                lut_now = latency(E, blocks)
                row = {"prune_step": t, "iteration": it + 1, "lut_latency": lut_now, "lut_fraction": lut_now / full,
                       "embed": E, "macs": macs, "params": params,
                       "groups_removed": kept_groups, "groups_chosen": len(res.groups), "eta": eta_used,
                       "ce": float(parts["ce"]), "lut_target": step_target / full,
                       "loss": float(loss.detach()), "seconds": time.perf_counter() - t0,
                       "blocks": [[b.num_heads, b.qk_dim, b.v_dim, b.mlp_hidden] for b in blocks]}
                if calib is not None:
                    row["calibration"] = calib
                row.update(measured_fraction_before=measured_before, measured_fraction_after=measured_now)
                bar.set_postfix(step=t, lut=f"{row['lut_fraction']:.3f}", ce=f"{row['ce']:.3f}")
                history.append(row)
                if logger is not None:
                    logger.log(it + 1, {k: v for k, v in row.items() if k != "blocks"})
                if not reached and res.exhausted:  # nothing left to remove: more iterations would only train
                    unreachable = True
                    warnings.warn(f"the latency target {target_fraction:g} cannot be reached: every structure is at "
                                  f"its minimum at {lut_now / full:.3f} of the LUT latency (prune step {t}, "
                                  f"iteration {it + 1}); stopped there", TenfoldWarning, stacklevel=2)
            if reached or unreachable or it + 1 == max_iters or (ckpt_every and (it + 1) % ckpt_every == 0):
                save(it + 1)
            if reached or unreachable or (stop_after and it + 1 >= stop_after):
                break
    finally:
        sal.remove()
        bar.close()
    E, blocks = gated.dims()
    n_it = it + 1
    if not (reached or unreachable or (stop_after and n_it >= stop_after)):  # the cap ended it: said (was exit 0,
        # a pruned.json short of the target, and nothing but "reached": false in the result)
        warnings.warn(f"the latency target {target_fraction:g} was not reached within max_prune_iters={max_iters} "
                      f"iterations: the model stands at {latency(E, blocks) / full:.3f} of the LUT latency after "
                      f"{t} prune steps; raise max_prune_iters or prune_per_iter", TenfoldWarning, stacklevel=2)
    return {"reached": reached, "unreachable": unreachable, "prune_steps": t, "iterations": n_it, "lut_full": full,
            "lut_final": latency(E, blocks), "eta": eta_used, "history": history,
            "ce_first": sum(ce_trace[:interval]) / max(1, len(ce_trace[:interval])),
            "ce_last": sum(ce_trace[-interval:]) / max(1, len(ce_trace[-interval:])),
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# Fine-tuning on the engine
# --------------------------------------------------------------------------------------------
def finetune_model(student: nn.Module, teacher: nn.Module | None, dataset: ImageDataset, run_dir: Path, *,
                   steps: int, batch_size: int, lr: float, weight_decay: float, warmup: int, kd_coef: float,
                   temperature: float, ce_coef: float, label_smoothing: float, device: str = "cpu",
                   amp: str = "none", seed: int = 0, resume: bool = False, progress: bool = False,
                   augment: bool = True, log_every: int = 25, ckpt_every: int = 1000,
                   grad_clip: float = 5.0) -> dict[str, Any]:
    """KD fine-tuning (``kd_coef * KL(T) + ce_coef * CE``) with :func:`tenfold.core.engine.fit`
    (DDP under torchrun, exact resume, a checkpoint every ``ckpt_every`` steps and at the end; 0: at the end
    only; gradient norm clipped to ``grad_clip``, 0: not clipped); returns fit's metrics plus
    ``loss_start``/``loss_end``."""
    dev = check_device(device)
    if teacher is not None:
        teacher.to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    def step(net: nn.Module, batch: Any) -> dict[str, Any]:
        x, y = batch
        if augment:
            x = random_crop_flip(x)
        t_logits = None
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(x)
        loss, parts = nvit_loss(net(x), y, t_logits, kd_coef=kd_coef, temperature=temperature, ce_coef=ce_coef,
                                label_smoothing=label_smoothing)
        return {"loss": loss, **parts}

    res = fit(student, step, dataset, run_dir=run_dir, steps=steps, batch_size=batch_size,
              optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=weight_decay),
              scheduler=lambda o: warmup_cosine(o, min(warmup, steps), steps), amp=amp, grad_clip=grad_clip or None,
              ckpt_every=min(ckpt_every, steps) if ckpt_every > 0 else steps,
              log_every=max(1, min(log_every, steps // 4 or 1)), seed=seed,
              device=device, resume=resume, progress=progress, tensorboard=False, method="nvit")
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    res["loss_start"], res["loss_end"] = rows[0]["loss"], rows[-1]["loss"]
    return res


# --------------------------------------------------------------------------------------------
# Report: costs side by side and the per-block dims plot
# --------------------------------------------------------------------------------------------
def cost_report(vit: VisionTransformer, latency: LatencyModel | None, *, batches: tuple[int, ...] = (1, 64),
                repeats: int = 10, device: str = "cpu") -> dict[str, Any]:
    """MACs, params, LUT latency and measured latency (wall and CPU, median) of a dense model."""
    spec = spec_of(vit)
    macs, params = macs_params(spec)
    out: dict[str, Any] = {"macs": macs, "params": params, "embed": spec.embed_dim,
                           "blocks": [[b.num_heads, b.qk_dim, b.v_dim, b.mlp_hidden] for b in spec.blocks]}
    if latency is not None:
        out["lut_latency"] = latency(spec.embed_dim, list(spec.blocks))
    for b in batches:
        r = time_model(vit, b, repeats=repeats, device=device)
        out[f"latency_b{b}"] = r.median
        out[f"cpu_latency_b{b}"] = r.cpu_median
    return out


def plot_dims(dims: dict[str, tuple[int, list[BlockDims]]], path: Path, title: str = "") -> Path:
    """Per-block dims of one or more models (where the parameters went, as in the paper's analysis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (field, label) in zip(axes, (("num_heads", "heads"), ("qk_dim", "q/k dim per head"),
                                         ("v_dim", "v dim per head"), ("mlp_hidden", "MLP hidden"))):
        for name, (E, blocks) in dims.items():
            ax.plot(range(1, len(blocks) + 1), [getattr(b, field) for b in blocks], marker="o",
                    label=f"{name} (E={E})")
        ax.set_xlabel("block")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Verbs
# --------------------------------------------------------------------------------------------
def lut(cfg: Config, run_dir: Path, *, device: str = "") -> dict[str, Any]:
    """Measure the block + stem latency LUT on this device (``lut_*`` grid, ``lut_batch``) -> lut.json.

    Args:
        device: where to time the blocks (``cpu``, ``cuda``, ``cuda:1``); empty: the config's ``device``.
    """
    b = build(cfg)
    dev = device or cfg.device
    t0 = time.perf_counter()
    lat = measure_lut(b["grid"], device=dev, batch=cfg.lut_batch, tokens=b["tokens"], patch=cfg.patch_size,
                      in_chans=3, num_classes=cfg.num_classes, warmup=cfg.lut_warmup, repeats=cfg.lut_repeats)
    write_json(Path(run_dir) / "lut.json", lat.to_dict())
    full = lat(cfg.embed_dim, [BlockDims(cfg.num_heads, cfg.embed_dim // cfg.num_heads,
                                         cfg.embed_dim // cfg.num_heads, int(cfg.embed_dim * cfg.mlp_ratio))]
               * cfg.depth)
    return {"points": int(lat.block.values.size), "seconds": time.perf_counter() - t0, "device": dev,
            "batch": cfg.lut_batch, "tokens": b["tokens"], "lut_latency_full_model": full,
            "lut": str(Path(run_dir) / "lut.json")}


def _check_prune_options(cfg: Config, *, latency_target: float = 0.0, **_: Any) -> float:
    """The latency target prune runs to (the option, else the config's), checked (also by ``--dry-run``)."""
    frac = latency_target or cfg.latency_target
    if not 0 < frac <= 1:  # NaN fails too
        raise ConfigError(f"--latency-target must be in (0, 1] (a fraction of the dense latency), got {frac}")
    return frac


def prune(cfg: Config, run_dir: Path, *, model: str = "vit", weights: str = "", lut: str = "",
          latency_target: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Prune ``model`` globally to ``latency_target`` (default: the config's) of its LUT latency.

    ``lut``: a ``lut.json`` (or run dir) from the ``lut`` verb; empty: a SYNTHETIC MACs-proportional
    LUT. Writes ``pruned.json/.safetensors`` (dense NViT model), ``teacher.*``, history and plot; the loop
    checkpoints every ``prune_ckpt_every`` iterations and ``--resume`` continues it exactly.

    Args:
        model: ``vit`` (tenfold's ViT at the config's dims), ``timm:NAME`` (built locally, no download), or an
            NViT ``.json`` / run directory from an earlier prune or finetune.
        weights: a local weights file for ``vit`` or ``timm:NAME`` (safetensors or ``.pth``); empty: random init.
        lut: a ``lut.json`` or ``lut`` run directory; empty: a SYNTHETIC MACs-proportional LUT.
        latency_target: the goal as a fraction in (0, 1] of the dense model's LUT latency; 0: the config's.
        resume: continue the pruning loop from the run's last checkpoint (the CLI's ``--resume --out RUN``).
    """
    b = build(cfg)
    frac = _check_prune_options(cfg, latency_target=latency_target)
    run_dir = Path(run_dir)
    if resume and not Checkpointer(run_dir, method="nvit-prune").steps():
        raise CheckpointError(f"nothing to resume: no pruning checkpoint in {run_dir / 'checkpoints'}")
    # a resume reloads the teacher from --weights: a file changed in between mixed two models without a word
    check_inputs(run_dir, input_files({"--model": model, "--weights": weights, "--lut": lut, "data": cfg.data}),
                 resume=resume)
    seed_everything(cfg.seed)
    teacher = load_model(cfg, model, weights)
    # the student starts as the teacher itself: without weights the two load_model calls gave two random
    # initialisations, and the student was distilled towards an unrelated network (the second call stays, so
    # the random stream, and with it every run with weights, is unchanged)
    student = load_model(cfg, model, weights)
    student.load_state_dict(teacher.state_dict())
    gated = GatedViT(student)
    spec = spec_of(teacher)
    if lut:
        lat = load_lut(lut)
        check_lut_fits(lat, spec, lut, b["minimum"])
    else:
        top = {f: max(getattr(bb, f) for bb in spec.blocks) for f in ("num_heads", "qk_dim", "v_dim", "mlp_hidden")}
        axes = {"embed": sorted({1, spec.embed_dim}), "heads": sorted({1, top["num_heads"]}),
                "qk": sorted({1, top["qk_dim"]}), "v": sorted({1, top["v_dim"]}), "mlp": sorted({1, top["mlp_hidden"]})}
        lat = LatencyModel(synthetic_lut(axes, spec.tokens))
    ds = load_data(cfg.data, cfg.train_limit, cfg, seed=cfg.seed, num_classes=spec.num_classes, model=spec)
    if cfg.stop_on not in ("lut", "measured"):
        raise ConfigError(f"stop_on must be 'lut' or 'measured', got '{cfg.stop_on}'")
    measure = None
    if cfg.stop_on == "measured":  # the LUT prices units; measurements calibrate where the pruning stops
        def measure() -> float:
            return latency_ratio(teacher, gated.to_dense(), cfg.lut_batch, device=cfg.device, pairs=12)
    ckpt = Checkpointer(run_dir, method="nvit-prune")
    with MetricsLogger(run_dir, tensorboard=False, resume_step=ckpt.steps()[-1] if resume else None) as logger:
        res = prune_model(gated, teacher, ds, lat, target_fraction=frac, interval=cfg.interval,
                          prune_per_iter=cfg.prune_per_iter, group_norm=cfg.group_norm, group_size=b["group_size"],
                          minimum=b["minimum"], scale=b["scale"], momentum=cfg.pruning_momentum, eta=cfg.eta,
                          eta_mode=cfg.eta_mode, eta_rho=cfg.eta_rho, batch_size=cfg.batch_size,
                          lr=cfg.prune_lr * cfg.batch_size / 512, weight_decay=cfg.weight_decay,
                          kd_coef=cfg.kd_coef, temperature=cfg.kd_temperature, ce_coef=cfg.ce_coef,
                          label_smoothing=cfg.label_smoothing, max_iters=cfg.max_prune_iters,
                          lr_schedule=cfg.prune_lr_schedule, device=cfg.device,
                          seed=cfg.seed, logger=logger, checkpointer=ckpt,
                          ckpt_every=cfg.prune_ckpt_every, resume=resume, measure=measure, progress=True)
    dense = gated.cpu().to_dense().eval()
    save_dense(dense, run_dir / "pruned", extra={"lut_fraction": res["lut_final"] / res["lut_full"]})
    save_dense(teacher.cpu().eval(), run_dir / "teacher")
    write_json(run_dir / "history.json", res)
    plot_dims({"unpruned": (spec.embed_dim, list(spec.blocks)), "NViT": gated.dims()}, run_dir / "dims.png",
              f"NViT at {res['lut_final'] / res['lut_full']:.2f} of the LUT latency")
    macs0, params0 = macs_params(spec)
    macs, params = macs_params(spec_of(dense))
    return {"reached": res["reached"], "unreachable": res["unreachable"], "prune_steps": res["prune_steps"],
            "iterations": res["iterations"],
            "lut_fraction": res["lut_final"] / res["lut_full"], "macs": macs, "params": params,
            "macs_ratio": macs / macs0, "params_ratio": params / params0, "eta": res["eta"],
            "ce_first": res["ce_first"], "ce_last": res["ce_last"], "embed": dense.embed_dim,
            "model": str(run_dir / "pruned.json")}


def finetune(cfg: Config, run_dir: Path, *, model: str = "", teacher: str = "", resume: bool = False,
             scratch: bool = False, steps: int = 0) -> dict[str, Any]:
    """Fine-tune a pruned dense model (``model``: prune run dir or ``.json``) with KD from ``teacher``
    (default: the prune run's ``teacher.json``); ``scratch`` re-initialises it ("ReViT").

    Args:
        model: the pruned model: a prune run directory or its ``pruned.json``.
        teacher: the distillation teacher (NViT ``.json``); empty: the ``teacher.json`` beside ``model``, and
            no distillation when there is none.
        resume: continue from the run's last checkpoint (the CLI's ``--resume --out RUN``).
        scratch: re-initialise the pruned architecture and train it from scratch (the paper's "ReViT").
        steps: optimizer steps; 0: the config's ``finetune_steps``.
    """
    if not model:
        raise ConfigError("finetune needs --model (a prune run directory or pruned .json)")
    run_dir = Path(run_dir)
    if resume and not Checkpointer(run_dir, method="nvit").steps():  # it started over without a word
        raise CheckpointError(f"nothing to resume: no fine-tuning checkpoint in {run_dir / 'checkpoints'}")
    student = load_model(cfg, model)
    if scratch:
        student = build_dense(spec_of(student))
    src = Path(model)
    # a given --teacher must load (a missing one used to turn distillation off without a word); the default one
    # beside the model is optional
    tpath = Path(teacher) if teacher else (src if src.is_dir() else src.parent) / "teacher.json"
    # a resume reloads the teacher: a teacher.json replaced in between mixed two teachers without a word
    check_inputs(run_dir, input_files({"--model": model, "teacher": tpath, "data": cfg.data,
                                       "eval data": cfg.eval_data}, data=("data", "eval data")), resume=resume)
    try:
        t_model = load_model(cfg, str(tpath)) if teacher or tpath.exists() else None
    except CheckpointError as e:  # "NViT model file not found" did not say it was the teacher
        raise CheckpointError(f"teacher: {e}") from None
    if t_model is not None:
        check_teacher_fits(t_model, student, str(tpath))
    elif cfg.kd_coef > 0 and not resume:  # documented, but a model copied away from its run lost its teacher silently
        warnings.warn(f"no teacher: {tpath} is not there, so fine-tuning runs without distillation (cross-entropy "
                      "only); pass --teacher FILE (the prune run's teacher.json) to distil", TenfoldWarning,
                      stacklevel=2)
    classes = spec_of(student).num_classes
    ds = load_data(cfg.data, cfg.train_limit, cfg, seed=cfg.seed, num_classes=classes, model=spec_of(student))
    # the evaluation set is checked before training, not after it (a wrong one failed after the whole run)
    ev = load_data(cfg.eval_data, cfg.eval_limit, cfg, seed=cfg.seed + 1, num_classes=classes,
                   model=spec_of(student))
    n = steps or cfg.finetune_steps
    res = finetune_model(student, t_model, ds, run_dir, steps=n, batch_size=cfg.batch_size,
                         lr=cfg.finetune_lr * cfg.batch_size / 512, weight_decay=cfg.weight_decay,
                         warmup=cfg.finetune_warmup, kd_coef=cfg.kd_coef if t_model is not None else 0.0,
                         temperature=cfg.finetune_kd_temperature, ce_coef=cfg.ce_coef,
                         label_smoothing=cfg.label_smoothing, device=cfg.device, amp=cfg.amp, seed=cfg.seed,
                         resume=resume, progress=True, ckpt_every=cfg.finetune_ckpt_every, grad_clip=cfg.grad_clip)
    net = unwrap(student).cpu().eval()
    save_dense(net, run_dir / "model")
    if t_model is not None:  # export finds the unpruned model beside the fine-tuned one
        save_dense(t_model.cpu().eval(), run_dir / "teacher")
    acc = evaluate_classifier(net, ev, progress=False)
    return {"loss_start": res["loss_start"], "loss_end": res["loss_end"], "steps": res["steps"],
            "top1": acc["top1"], "eval_images": acc["n"], "model": str(run_dir / "model.json")}


def export(cfg: Config, run_dir: Path, *, model: str = "", lut: str = "", onnx: bool = True,
           repeats: int = 10) -> dict[str, Any]:
    """ONNX export (checked with onnxruntime) and the report: MACs, params, LUT and measured latency
    (batch 1 and ``lut_batch``) of the model next to its unpruned teacher when one is found.

    Args:
        model: a finetune or prune run directory, or an NViT ``.json``.
        lut: a ``lut.json`` or ``lut`` run directory, to report the LUT latency next to the measured one.
        onnx: write ``model.onnx`` and check it against PyTorch with onnxruntime.
        repeats: timed calls per latency measurement (after 2 warm-up calls).
    """
    if not model:
        raise ConfigError("export needs --model (a finetune/prune run directory or NViT .json)")
    run_dir = Path(run_dir)
    net = load_model(cfg, model).eval()
    src = Path(model)
    teacher = (src if src.is_dir() else src.parent) / "teacher.json"
    t = load_dense(teacher) if teacher.is_file() else None
    lat = None
    if lut:  # the checks prune makes: the LUT must price the unpruned model and the pruned one inside its grid
        lat = load_lut(lut)
        spec = spec_of(net)
        floor = {"emb": spec.embed_dim, **{s: min(getattr(b, f) for b in spec.blocks) for s, f in
                                           (("head", "num_heads"), ("qk", "qk_dim"), ("v", "v_dim"),
                                            ("mlp", "mlp_hidden")) if spec.blocks}}
        check_lut_fits(lat, spec_of(t) if t is not None else spec, lut, floor, "the pruned model's dims")
        if t is not None:
            check_lut_fits(lat, spec, lut)  # the pruned model's tokens (the teacher's reach covers its dims)
    out: dict[str, Any] = {}
    batches = (1, cfg.lut_batch)
    rep = cost_report(net, lat, batches=batches, repeats=repeats, device=cfg.device)
    save_dense(net, run_dir / "model")
    dims = {"pruned": (net.embed_dim, net.block_dims())}
    if t is not None:
        trep = cost_report(t, lat, batches=batches, repeats=repeats, device=cfg.device)
        out["teacher"] = trep
        dims["unpruned"] = (t.embed_dim, t.block_dims())
        for k in ("macs", "params", "lut_latency"):
            if k in rep and k in trep:
                out[f"{k}_ratio"] = rep[k] / trep[k]
        # the measured ratios come from interleaved single calls, as prune's measured stop reads them: the
        # medians above, timed one model after the other, move with the machine's load from export to export
        for b in batches:
            r = vit_ratio(t, net, b, device=cfg.device, pairs=max(repeats, 10))  # wall and CPU, as the keys say
            out[f"latency_b{b}_ratio"], out[f"cpu_latency_b{b}_ratio"] = r.wall_ratio, r.cpu_ratio
            out[f"latency_b{b}_ratio_spread"] = r.spread
    out["model"] = rep
    if onnx:
        p = export_onnx(net, run_dir / "model.onnx")
        C, H, W = net.input_size
        err = onnx_max_error(net, p, torch.rand(2, C, H, W))
        out["onnx"] = str(p)
        out["onnx_max_abs_error"] = err if err is not None else "onnxruntime not installed"
    plot_dims(dims, run_dir / "dims.png", "per-block dims")
    write_json(run_dir / "report.json", out)
    return {"macs": rep["macs"], "params": rep["params"], "latency_b1": rep["latency_b1"],
            **{k: v for k, v in out.items() if k.endswith("_ratio") or k.startswith("onnx")},
            "report": str(run_dir / "report.json")}


prune.check_options = _check_prune_options  # the CLI runs it before --dry-run prints
