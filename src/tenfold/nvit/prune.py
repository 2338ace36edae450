"""NViT's global, latency-aware pruning: saliency accumulation, the LUT model latency, one prune step.

Spec §2. Per batch b the unit gates give ``c_i,b = sum_{w in set(i)} w dL/dw``; the importance is
``I_i = mean_b (c_i,b / scale_s)^2`` (mean of squares), carried across prune steps by an EMA. The
latency-aware score is ``I_i - eta * dT_s``, where ``dT_s`` is the LUT latency saved by shrinking
structure ``s`` by one unit (summed over blocks for EMB). Units are sorted inside each structure
instance, chunked into groups whose score is the sum of their units', and all groups of the model
are ranked together; groups at or below the k-th smallest score are zeroed, k = max(0, floor(t P/G) - 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from tenfold.core.io import InputError
from tenfold.core.latency import LatencyTable
from tenfold.core.models import BlockDims
from tenfold.nvit.model import STRUCTURES, GatedViT

_AXIS = {"head": "heads", "qk": "qk", "v": "v", "mlp": "mlp"}
_FIELD = {"head": "num_heads", "qk": "qk_dim", "v": "v_dim", "mlp": "mlp_hidden"}


# --------------------------------------------------------------------------------------------
# Latency from the LUT
# --------------------------------------------------------------------------------------------
@dataclass
class LatencyModel:
    """Model latency = ``stem(E) + sum_l block(E, H_l, q_l, v_l, M_l)`` from lookup tables.

    ``block`` has axes (embed, heads, qk, v, mlp); ``stem`` (optional) has axis embed and covers the
    patch embedding, final norm and classifier, which the paper's per-block LUT leaves out."""

    block: LatencyTable
    stem: LatencyTable | None = None

    def __call__(self, E: int, blocks: Sequence[BlockDims]) -> float:
        """Predicted latency (the tables' unit, seconds) of a model with these dims."""
        if not blocks:
            return self.stem(embed=E) if self.stem is not None else 0.0
        arr = np.array([[b.num_heads, b.qk_dim, b.v_dim, b.mlp_hidden] for b in blocks], dtype=np.float64)
        t = float(np.sum(self.block(embed=np.full(len(blocks), float(E)), heads=arr[:, 0], qk=arr[:, 1],
                                    v=arr[:, 2], mlp=arr[:, 3])))
        return t + (self.stem(embed=E) if self.stem is not None else 0.0)

    def to_dict(self) -> dict:
        """JSON-ready dict of both tables."""
        return {"block": self.block.to_dict(), "stem": self.stem.to_dict() if self.stem is not None else None}


def delta_latency(lat: LatencyModel, E: int, blocks: Sequence[BlockDims], structure: str, block: int | None,
                  minimum: int) -> float:
    """LUT latency saved by removing one unit of ``structure`` (in ``block``; EMB: every block + stem).

    0 when the structure is already at ``minimum`` (spec §2: dT = 0 at the minimum dims)."""
    if structure == "emb":
        if minimum >= E:
            return 0.0
        return max(0.0, lat(E, blocks) - lat(E - 1, blocks))
    assert block is not None
    b = blocks[block]
    n = getattr(b, _FIELD[structure])
    if n <= minimum:
        return 0.0
    smaller = list(blocks)
    smaller[block] = BlockDims(**{**{f: getattr(b, f) for f in _FIELD.values()}, _FIELD[structure]: n - 1})
    one = lat.block(embed=E, heads=b.num_heads, qk=b.qk_dim, v=b.v_dim, mlp=b.mlp_hidden)
    two = lat.block(embed=E, heads=smaller[block].num_heads, qk=smaller[block].qk_dim, v=smaller[block].v_dim,
                    mlp=smaller[block].mlp_hidden)
    return max(0.0, one - two)


def synthetic_lut(axes: Mapping[str, Sequence[float]], tokens: int,
                  cost: Callable[[float, float, float, float, float, int], float] | None = None) -> LatencyTable:
    """SYNTHETIC: a block LUT from a formula (default: the block's MACs * 1e-9, i.e. "1 GMAC = 1 s").

    ``cost(E, H, q, v, M, N)``; used by the smoke preset and by tests that plant an expensive structure."""
    if cost is None:
        def cost(E: float, H: float, q: float, v: float, M: float, N: int) -> float:
            return 1e-9 * (N * E * H * (2 * q + v) + H * N * N * (q + v) + N * H * v * E + 2 * N * E * M)
    names = ["embed", "heads", "qk", "v", "mlp"]
    grids = [list(axes[n]) for n in names]
    vals = np.zeros([len(g) for g in grids])
    for idx in np.ndindex(*vals.shape):
        vals[idx] = cost(*(grids[k][i] for k, i in enumerate(idx)), tokens)
    return LatencyTable(dict(zip(names, grids)), vals, metadata={"synthetic": True, "tokens": tokens})


# --------------------------------------------------------------------------------------------
# Saliency
# --------------------------------------------------------------------------------------------
def accumulator_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for the saliency sums (sums of many small squares), float32 where the device has no float64 (Apple's
    ``mps``: a float64 tensor there is an error)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class Saliency:
    """Accumulates ``(c_i,b / scale_s)^2`` from the gate gradients of every backward pass.

    A tensor hook on each gate sees ``dL/dgate`` (= c_i,b for that micro-batch); call
    :meth:`batch_done` once per batch and :meth:`importance` at a prune step. ``scale`` maps a
    structure to its divisor (reference heuristic: EMB 12, head 12, QK 2, V 2, MLP 1, unverified
    in the paper); ``momentum`` is the EMA across prune steps (0.9 in the shipped config)."""

    def __init__(self, model: GatedViT, scale: Mapping[str, float], momentum: float) -> None:
        self.model, self.scale, self.momentum = model, dict(scale), float(momentum)
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.ema: dict[tuple[str, int], torch.Tensor] = {}
        self.batches = 0
        self._handles = []
        for s in STRUCTURES:
            for i, g in enumerate(model.gate_list(s)):
                key = (s, i)
                self.sums[key] = torch.zeros_like(g, dtype=accumulator_dtype(g.device))
                self._handles.append(g.register_hook(self._hook(key, float(self.scale[s]))))

    def _hook(self, key: tuple[str, int], scale: float) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            c = torch.nan_to_num(grad.detach().to(self.sums[key].dtype) / scale, nan=0.0, posinf=0.0, neginf=0.0)
            self.sums[key] += c * c
        return hook

    def batch_done(self) -> None:
        """Count one batch (its backward pass has run)."""
        self.batches += 1

    def importance(self) -> dict[tuple[str, int], torch.Tensor]:
        """``I`` per structure instance: mean over the batches since the last call, EMA-smoothed,
        0 for pruned units; resets the per-step sums. Under DDP the sums are averaged over ranks."""
        if self.batches == 0:
            raise InputError("no batches were accumulated since the last prune step")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for v in self.sums.values():
                torch.distributed.all_reduce(v)
                v /= torch.distributed.get_world_size()
        out = {}
        for key, s in self.sums.items():
            cur = s / self.batches
            prev = self.ema.get(key)
            imp = cur if prev is None else self.momentum * prev + (1 - self.momentum) * cur
            mask = self.model.masks(key[0])[key[1]].detach().to(imp)
            imp = imp * mask
            self.ema[key] = imp
            out[key] = imp.clone()
            s.zero_()
        self.batches = 0
        return out

    def reset_ema(self) -> None:
        """Zero the EMA, as the reference does when the student switches to eval mode after the first prune step
        (``averaged *= 0``): the next :meth:`importance` is ``(1 - momentum)`` times that step's mean, and the EMA
        builds up again from there."""
        self.ema = {k: torch.zeros_like(v) for k, v in self.ema.items()}

    def state_dict(self) -> dict:
        """The per-step sums, the EMA and the batch count (for an exact resume of the pruning loop)."""
        return {"sums": {f"{s}.{i}": v.clone() for (s, i), v in self.sums.items()},
                "ema": {f"{s}.{i}": v.clone() for (s, i), v in self.ema.items()}, "batches": self.batches}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` returned."""
        def key(k: str) -> tuple[str, int]:
            s, i = k.rsplit(".", 1)
            return s, int(i)
        for k, v in state["sums"].items():
            self.sums[key(k)].copy_(v)
        # on the gates' device (a checkpoint loads onto the CPU; a CUDA run failed at its next prune step)
        self.ema = {key(k): v.to(device=self.sums[key(k)].device, dtype=self.sums[key(k)].dtype).clone()
                    for k, v in state["ema"].items()}
        self.batches = int(state["batches"])

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []


# --------------------------------------------------------------------------------------------
# One prune step
# --------------------------------------------------------------------------------------------
@dataclass
class StepResult:
    """What a prune step did: groups ranked, threshold, groups removed, latency after, eta used."""

    k: int
    threshold: float
    removed: list[tuple[str, int, int]] = field(default_factory=list)  # (structure, block, units)
    groups: list[tuple[tuple[str, int], torch.Tensor]] = field(default_factory=list)  # (mask key, unit idx)
    latency: float = math.nan
    eta: float = 0.0
    reached: bool = False
    exhausted: bool = False  # no group left that could go without breaking a minimum: the target is out of reach


def prune_step(masks: Mapping[tuple[str, int], torch.Tensor], importance: Mapping[tuple[str, int], torch.Tensor],
               latency: LatencyModel, *, t: int, prune_per_iter: int, group_norm: int,
               group_size: Mapping[str, int], minimum: Mapping[str, int], eta: float, target: float,
               ) -> StepResult:
    """Spec §2 step 1-6 on ``masks`` (edited in place): rank every group, zero those at or below
    the k-th smallest score (lowest first), keep the minimums, stop as soon as ``latency <= target``.
    ``t``: prune steps done *before* this one (the reference's ``pruning_iterations_done``), so the first step
    has k = 0 and removes one group.

    ``masks``/``importance``: {(structure, block): (units,)}; EMB uses block 0. ``target`` is in the
    LUT's unit (the fraction times the unpruned latency)."""
    def dims() -> tuple[int, list[BlockDims]]:
        E = int(masks[("emb", 0)].sum())
        nb = sum(1 for s, _ in masks if s == "head")
        return E, [BlockDims(*(int(masks[(s, i)].sum()) for s in ("head", "qk", "v", "mlp"))) for i in range(nb)]

    E, blocks = dims()
    groups: list[tuple[float, tuple[str, int], torch.Tensor]] = []
    for key, imp in importance.items():
        s, i = key
        dT = delta_latency(latency, E, blocks, s, None if s == "emb" else i, minimum[s])
        score = imp.detach().cpu().double() - eta * dT  # (units,) latency-aware score, ranked on the CPU in float64
        order = torch.argsort(score, stable=True)
        g = group_size[s]
        for a in range(0, order.numel(), g):
            idx = order[a:a + g]
            groups.append((float(score[idx].sum()), key, idx))
    groups.sort(key=lambda r: r[0])
    k = max(0, math.floor(t * prune_per_iter / group_norm) - 1)
    k = min(k, len(groups) - 1)
    threshold = groups[k][0]
    res = StepResult(k=k, threshold=threshold, eta=eta)
    res.latency = latency(E, blocks)
    if res.latency <= target:  # (on the measured clock the caller may still find the target missed)
        res.reached = True
        res.exhausted = not any(_removable(masks[key], idx, minimum[key[0]]) for _, key, idx in groups)
        return res
    for score, key, idx in groups:
        if score > threshold:
            break
        m = masks[key]
        alive = (m[idx] > 0).cpu()  # idx lives on the CPU, where the scores were ranked
        n_alive = int(alive.sum())
        if n_alive == 0:
            continue  # already pruned
        left = int(m.sum()) - n_alive
        if left < max(1, minimum[key[0]]):
            continue  # keep the minimum (and at least one group) of every structure
        m[idx] = 0
        res.removed.append((key[0], key[1], n_alive))
        res.groups.append((key, idx[alive].clone()))
        E, blocks = dims()
        res.latency = latency(E, blocks)
        if res.latency <= target:
            res.reached = True
            break
    res.exhausted = not any(_removable(masks[key], idx, minimum[key[0]]) for _, key, idx in groups)
    return res


def _removable(mask: torch.Tensor, idx: torch.Tensor, minimum: int) -> bool:
    """Whether ``prune_step`` could zero group ``idx`` of ``mask``: it has live units and the rest keep the minimum."""
    n_alive = int((mask[idx] > 0).sum())
    return n_alive > 0 and int(mask.sum()) - n_alive >= max(1, minimum)


def relative_eta(importance: Mapping[tuple[str, int], torch.Tensor], masks: Mapping[tuple[str, int], torch.Tensor],
                 latency: LatencyModel, minimum: Mapping[str, int], rho: float) -> float:
    """``eta = rho * mean(I) / mean(dT)`` over the active units (spec's ``eta_mode="relative"``)."""
    E = int(masks[("emb", 0)].sum())
    nb = sum(1 for s, _ in masks if s == "head")
    blocks = [BlockDims(*(int(masks[(s, i)].sum()) for s in ("head", "qk", "v", "mlp"))) for i in range(nb)]
    imps, dts = [], []
    for (s, i), imp in importance.items():
        act = masks[(s, i)] > 0
        imps.append(imp[act].detach().cpu().double())
        dT = delta_latency(latency, E, blocks, s, None if s == "emb" else i, minimum[s])
        dts.append(torch.full((int(act.sum()),), dT, dtype=torch.float64))
    mi, md = float(torch.cat(imps).mean()), float(torch.cat(dts).mean())
    return rho * mi / md if md > 0 else 0.0


def masks_of(model: GatedViT) -> dict[tuple[str, int], torch.Tensor]:
    """{(structure, block): mask} views of the model's masks (edits act on the model)."""
    return {(s, i): m for s in STRUCTURES for i, m in enumerate(model.masks(s))}
