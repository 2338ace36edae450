"""Mutation audit: a check that the test suite can fail.

Each entry of ``MUTANTS`` is one small, deliberate bug: an exact string replacement ``old -> new`` in one file
of the repository, with the pytest selection that is expected to catch it. The runner copies the repository's
tracked files (``git ls-files``, as they are in the working tree) once per worker into a temporary directory,
links ``../shared`` beside each copy (so data-dependent tests see the same data), applies ONE mutant at a time,
runs ``python -m pytest -x -q -p no:cacheprovider <selection>`` in the copy and restores the file. The working
tree is never written to.

A mutant is *killed* when the selection fails (a run past the per-mutant timeout counts as killed, marked
``timeout``) and *survived* when it passes. An ``old`` text that does not occur exactly once in the file is a
*stale* entry: an error, never counted as killed. Entries marked ``equivalent="why"`` change no behaviour the
tests can observe and are expected to survive. Before the mutants, each distinct selection is run once on the
unmutated copy (``baseline``): a selection that fails there could not tell a mutant from the original, so its
mutants are reported as ``error``.

The mutants come from six mutation-audit rounds (ids keep the original ones, prefixed by the round: ``r1-L05``);
the tests that kill them are committed in ``tests/``.

Run (from the repository root; the full table takes 20-40 minutes on 2 cores)::

    OMP_NUM_THREADS=1 python tools/mutation_audit.py --jobs 2
    python tools/mutation_audit.py --only r1-L05,r3-N1        # a few mutants
    python tools/mutation_audit.py --list                      # the table, nothing run

The result goes to ``tools/mutation_audit.json`` (``--out``): the command, the git commit read at the start
(``-dirty`` when tracked files differ from it), one row per mutant and the totals. The JSON is rewritten after
every mutant with ``"partial": true`` until the run ends. Exit code 1 when a non-equivalent mutant survives, an
entry is stale or a run is an error; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import git_commit  # noqa: E402  (the repository root is not on the path of a tools/ script)

Tests = tuple[str, ...]
Text = str | tuple[str, ...]  # one replacement, or several applied together (each must occur exactly once)


@dataclass(frozen=True)
class M:
    """One mutant: replace ``old`` by ``new`` in ``path`` and run ``tests`` (with ``-k k`` when given)."""

    id: str
    path: str
    old: Text
    new: Text
    tests: Tests
    k: str | None = None
    equivalent: str | None = None  # why the change cannot be observed; such a mutant is expected to survive
    note: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        olds = (self.old,) if isinstance(self.old, str) else self.old
        news = (self.new,) if isinstance(self.new, str) else self.new
        if len(olds) != len(news):
            raise ValueError(f"{self.id}: {len(olds)} old texts but {len(news)} new ones")
        return list(zip(olds, news, strict=True))

    def selection(self) -> list[str]:
        return [*self.tests, *(["-k", self.k] if self.k else [])]


NOT_TORCHRUN = "not torchrun"

# ---- pytest selections
LSGM_ALL: Tests = ("tests/lsgm",)
GI_ATTACK: Tests = ("tests/gradinversion/test_gradinversion.py",
                    "tests/gradinversion/test_gradinversion_invariants.py")
GI_OBJECTIVE: Tests = ("tests/gradinversion/test_objective.py",)
GI_PYRAMID: Tests = ("tests/gradinversion/test_pyramid.py",)
KAMA_ARTICULATE: Tests = ("tests/kama/test_articulate.py", "tests/kama/test_bad_input.py")
NVIT_PRUNE: Tests = ("tests/nvit/test_prune.py",)
NVIT_LOSSES: Tests = ("tests/nvit/test_losses.py", "tests/nvit/test_prune.py", "tests/nvit/test_model.py")
CORE_METRICS: Tests = ("tests/core/test_metrics.py",)
CORE_GEOMETRY: Tests = ("tests/core/test_geometry.py", "tests/core/test_metrics.py")
CORE_LATENCY: Tests = ("tests/core/test_latency.py",)
CORE_ENGINE: Tests = ("tests/core/test_engine.py",)
LSGM_DATA: Tests = ("tests/lsgm/test_lsgm_data_fd_eval.py",
                    "tests/lsgm/test_lsgm_model.py",
                    "tests/lsgm/test_lsgm_invariants.py")
GI_DEFENCES: Tests = ("tests/gradinversion/test_defences_and_metrics.py", "tests/gradinversion")
CORE_DATA: Tests = ("tests/core/test_data.py",)
CORE_CONFIG: Tests = ("tests/core/test_config.py",)
CORE_IO: Tests = ("tests/core/test_io.py", "tests/core/test_io_chumpy.py")
NVIT_MODEL: Tests = ("tests/nvit/test_model.py",)
CORE_MODELS: Tests = ("tests/core/test_models.py",)
KAMA_BODY: Tests = ("tests/kama/test_body_model.py", "tests/kama/test_verbs.py", "tests/kama/test_articulate.py")
KAMA_VERBS: Tests = ("tests/kama/test_verbs.py", "tests/kama/test_bad_input.py")
LSGM_NETS: Tests = ("tests/lsgm/test_lsgm_math.py",
                    "tests/lsgm/test_lsgm_model.py",
                    "tests/lsgm/test_lsgm_invariants.py")
LSGM_CONFIG: Tests = ("tests/lsgm/test_lsgm_model.py", "tests/lsgm/test_lsgm_math.py")
NVIT_MODEL_PRUNE: Tests = ("tests/nvit/test_model.py", "tests/nvit/test_prune.py")
NVIT_API: Tests = ("tests/nvit/test_prune.py", "tests/nvit/test_bad_input.py")
GI_VERBS: Tests = ("tests/gradinversion/test_gradinversion.py",)
BENCH_LSGM: Tests = ("tests/benchmarks/test_helpers.py", "tests/lsgm/test_benchmark_goals.py")
BENCH_GI: Tests = ("tests/benchmarks/test_helpers.py", "tests/gradinversion/test_benchmark_goals.py")
BENCH_GI_VERBS: Tests = ("tests/benchmarks/test_helpers.py", "tests/gradinversion/test_gradinversion.py")
BENCH_NVIT: Tests = ("tests/benchmarks/test_helpers.py", "tests/nvit/test_benchmark_goals.py")
BENCH_KAMA: Tests = ("tests/benchmarks/test_helpers.py", "tests/kama/test_benchmark_goals.py")
BENCH_COMMON: Tests = ("tests/benchmarks/test_helpers.py",
                       "tests/kama/test_benchmark_goals.py",
                       "tests/gradinversion/test_benchmark_goals.py")

MUTANTS: list[M] = [
    # ---- round 1 (agent A): lsgm sde/objective/ode/vae/nets, gradinversion labels/attack/registration
    M("r1-L01", "src/tenfold/lsgm/sde.py",
      "return torch.exp(-0.5 * self.beta0 * t - 0.25",
      "return torch.exp(-self.beta0 * t - 0.25",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L02", "src/tenfold/lsgm/sde.py",
      "return -torch.expm1(log_m2) + self.sigma2_0 * torch.exp(log_m2)",
      "return -torch.expm1(log_m2)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L03", "src/tenfold/lsgm/sde.py",
      "math.exp(self.beta0 ** 2 / (2 * self.delta))",
      "math.exp(self.beta0 / (2 * self.delta))",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L04", "src/tenfold/lsgm/sde.py",
      "return sde.beta(t) / (2.0 * sde.var(t))",
      "return sde.beta(t) / sde.var(t)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L05", "src/tenfold/lsgm/sde.py",
      "        wq = (1.0 - time_eps) * w_ll(sde, t)\n",
      "        wq = w_ll(sde, t)\n",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L06", "src/tenfold/lsgm/sde.py",
      "wp = wq = 0.5 * (hi - lo) / (1.0 - var)",
      "wp = wq = 0.5 * (hi - lo) / var",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L07", "src/tenfold/lsgm/sde.py",
      "        wq = wp / var\n",
      "        wq = wp\n",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L08", "src/tenfold/lsgm/objective.py",
      "sigma = sde.var(t).sqrt()\n    return",
      "sigma = sde.var(t)\n    return",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L09", "src/tenfold/lsgm/objective.py",
      "math.log(2 * math.pi * math.e * var_eps)",
      "math.log(2 * math.pi * var_eps)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L10", "src/tenfold/lsgm/objective.py",
      'nelbo = -out["rec"] - out["H"] + ce_q',
      'nelbo = -out["rec"] + out["H"] + ce_q',
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L11", "src/tenfold/lsgm/objective.py",
      '        loss = (-out["rec"] + kl_coef * (-out["H"] + ce_q)).mean()\n',
      '        loss = (-out["rec"] + kl_coef * ce_q).mean()\n',
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L12", "src/tenfold/lsgm/objective.py",
      "loss_p = (w_p * (noise - eps_p.float())",
      "loss_p = (w_q * (noise - eps_p.float())",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L13", "src/tenfold/lsgm/ode.py",
      "return -0.5 * beta * (z - eps_fn(z, tb).to(z.dtype) / sigma)",
      "return -0.5 * beta * (z - eps_fn(z, tb).to(z.dtype) * sigma)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L14", "src/tenfold/lsgm/ode.py",
      "div = (g * v).reshape(B, D).sum(1)",
      "div = -(g * v).reshape(B, D).sum(1)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L15", "src/tenfold/lsgm/ode.py",
      "        if i < steps - 1:\n            noise",
      "        if False:\n            noise",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L16", "src/tenfold/lsgm/ode.py",  # re-pointed in session 21: the ancestral step's noise, halved
      "            z = z + math.sqrt(v_s * (1.0 - a2) / v_t) * noise",
      "            z = z + 0.5 * math.sqrt(v_s * (1.0 - a2) / v_t) * noise",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L17", "src/tenfold/lsgm/vae.py",
      "return 0.5 * (mu * mu + torch.exp(2 * log_sigma) - 1.0) - log_sigma",
      "return 0.5 * (mu * mu + torch.exp(log_sigma) - 1.0) - log_sigma",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L18", "src/tenfold/lsgm/vae.py",
      "z = mu + torch.exp(ls) * noise",
      "z = mu + torch.exp(0.5 * ls) * noise",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L19", "src/tenfold/lsgm/vae.py",
      "(0.5 * LOG_2PI_E + log_sigma)",
      "(LOG_2PI_E + log_sigma)",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L20", "src/tenfold/lsgm/nets.py",
      "return (1.0 - a) * sigma_t[:, None, None, None] * z_t + a * eps_net",
      "return a * sigma_t[:, None, None, None] * z_t + (1.0 - a) * eps_net",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-L21", "src/tenfold/lsgm/ode.py",
      'v = (torch.randint(0, 2, z0.shape, generator=generator, device="cpu").to(z0.dtype) * 2 - 1)',
      'v = (torch.randint(0, 2, z0.shape, generator=generator, device="cpu").to(z0.dtype) * 2)',
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-G01", "src/tenfold/gradinversion/labels.py",
      "order = order[torch.argsort(score[order], stable=True)]",
      "order = order[torch.argsort(score[order], descending=True, stable=True)]",
      GI_ATTACK),
    M("r1-G02", "src/tenfold/gradinversion/labels.py",
      "score, tie = g.amin(dim=1), g.sum(dim=1)",
      "score, tie = g.amin(dim=1), -g.sum(dim=1)",
      GI_ATTACK),
    M("r1-G03", "src/tenfold/gradinversion/labels.py",
      "present = present[torch.argsort(db[present])][:B]",
      "present = present[torch.argsort(db[present], descending=True)][:B]",
      GI_ATTACK),
    M("r1-G04", "src/tenfold/gradinversion/labels.py",
      "counts[int(torch.argmax(est - counts.double()))] += 1",
      "counts[int(torch.argmax(est))] += 1",
      GI_ATTACK),
    M("r1-G05", "src/tenfold/gradinversion/labels.py",
      "rest[torch.argsort(s[rest], descending=True, stable=True)]",
      "rest[torch.argsort(s[rest], stable=True)]",
      GI_ATTACK),
    M("r1-G06", "src/tenfold/gradinversion/attack.py",
      "return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()",
      "return 2 * (x[..., :, 1:] - x[..., :, :-1]).abs().mean()",
      GI_ATTACK),
    M("r1-G07", "src/tenfold/gradinversion/attack.py",
      "m = first_bn_multiplier if i == 0 else 1.0",
      "m = first_bn_multiplier if i == len(stats) - 1 else 1.0",
      GI_ATTACK),
    M("r1-G08", "src/tenfold/gradinversion/attack.py",
      "E_frames = warp(Eb, invert(A.flatten(0, 1))).view(X.shape)",
      "E_frames = warp(Eb, A.flatten(0, 1)).view(X.shape)",
      GI_ATTACK),
    M("r1-G09", "src/tenfold/gradinversion/attack.py",
      "X.grad += self.langevin_sigma * lr_t * noise.to(dev)",
      "X.grad += self.langevin_sigma * noise.to(dev)",
      GI_ATTACK),
    M("r1-G10", "src/tenfold/gradinversion/attack.py",
      "            return (s + 1) / warmup\n",
      "            return s / warmup\n",
      GI_ATTACK),
    M("r1-G11", "src/tenfold/gradinversion/attack.py",
      "scale = -1.0 / (local_lr * local_steps)",
      "scale = -1.0 / local_lr",
      GI_ATTACK),
    M("r1-G12", "src/tenfold/gradinversion/attack.py",
      "idx = torch.argsort(flat.abs(), stable=True)[:k]",
      "idx = torch.argsort(flat.abs(), stable=True)[:max(k - 1, 1)]",
      GI_ATTACK),
    M("r1-G13", "src/tenfold/gradinversion/registration.py",
      "off = torch.where(den.abs() > 1e-12, 0.5 * (c_m - c_p) / den",
      "off = torch.where(den.abs() > 1e-12, 0.5 * (c_p - c_m) / den",
      GI_ATTACK),
    M("r1-G14", "src/tenfold/gradinversion/registration.py",
      "return torch.cat([Mi, -(Mi @ A[:, :, 2:])], dim=2)",
      "return torch.cat([Mi, -A[:, :, 2:]], dim=2)",
      GI_ATTACK),
    M("r1-G15", "src/tenfold/gradinversion/registration.py",
      "        E = warp(flat, A).view(xs.shape).mean(0)\n",
      "        E = flat.view(xs.shape).mean(0)\n",
      GI_ATTACK),
    M("r1-G16", "src/tenfold/gradinversion/attack.py",
      "group_on = G > 1 and self.alpha_group > 0 and it > start_group",
      "group_on = G > 1 and self.alpha_group > 0 and it > start_group + 1",
      GI_ATTACK),
    M("r1-G17", "src/tenfold/gradinversion/attack.py",
      "shared = f.update(xg * sd + mu, y,",
      "shared = f.update((xg * sd + mu).clamp(0, 1), y,",
      GI_ATTACK),
    M("r1-G18", "src/tenfold/gradinversion/attack.py",
      "self.stats[i] = (h.mean(dims), h.var(dims, unbiased=False))",
      "self.stats[i] = (h.mean(dims), h.var(dims, unbiased=True))",
      GI_ATTACK),
    M("r1-G19", "src/tenfold/gradinversion/attack.py",
      "return [c - t0 for c, t0 in zip(cur, theta)]",
      "return [t0 - c for c, t0 in zip(cur, theta)]",
      GI_ATTACK),
    M("r1-G20", "src/tenfold/gradinversion/attack.py",
      "rbn = bn_prior(*recorder.paired(refs), self.first_bn_multiplier)",
      "rbn = bn_prior(*recorder.paired(refs), 1.0)",
      GI_ATTACK),
    M("r1-L12b", "src/tenfold/lsgm/objective.py",
      "loss_p = (w_p * (noise - eps_hat.float())",
      "loss_p = (w_q * (noise - eps_hat.float())",
      LSGM_ALL, k=NOT_TORCHRUN),
    M("r1-G06b", "src/tenfold/gradinversion/attack.py",
      "return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()",
      "return (x[..., :, 1:] - x[..., :, :-1]).abs().mean()",
      GI_ATTACK),
    M("r1-L12c", "src/tenfold/lsgm/objective.py",
      ("loss_p = (w_p * (noise - eps_p.float())", "loss_p = (w_p * (noise - eps_hat.float())"),
      ("loss_p = (w_q * (noise - eps_p.float())", "loss_p = (w_q * (noise - eps_hat.float())"),
      LSGM_ALL, k=NOT_TORCHRUN),
    # ---- round 1 (agent B): kama articulate, nvit prune/losses, core metrics/geometry/latency/engine
    M("r1-K1", "src/tenfold/kama/articulate.py",
      "beta = beta - torch.linalg.solve(",
      "beta = beta + torch.linalg.solve(",
      KAMA_ARTICULATE),
    M("r1-K2", "src/tenfold/kama/articulate.py",
      "(JtW @ r[..., None])[..., 0] + damping * beta)",
      "(JtW @ r[..., None])[..., 0])",
      KAMA_ARTICULATE),
    M("r1-K3", "src/tenfold/kama/articulate.py",
      "torch.minimum(c[:, i], c[:, j])",
      "torch.maximum(c[:, i], c[:, j])",
      KAMA_ARTICULATE),
    M("r1-K4", "src/tenfold/kama/articulate.py",
      "return torch.where(back, -delta, delta) - psi",
      "return torch.where(back, -delta, delta) + psi",
      KAMA_ARTICULATE),
    M("r1-K5", "src/tenfold/kama/articulate.py",
      "Rs = _split(Rrel, 3)",
      "Rs = _split(Rrel, 2)",
      KAMA_ARTICULATE),
    M("r1-K6", "src/tenfold/kama/articulate.py",
      "rot = Gpar.transpose(-1, -2) @ Gs",
      "rot = Gs @ Gpar.transpose(-1, -2)",
      KAMA_ARTICULATE),
    M("r1-K7", "src/tenfold/kama/articulate.py",
      "lm = ((rot[:, 1:] - eye)",
      "lm = ((rot[:, 1:].transpose(-1, -2) - eye)",
      KAMA_ARTICULATE),
    M("r1-K8", "src/tenfold/kama/articulate.py",
      "L - n + (Jb @ beta0[..., None])[..., 0]",
      "L - n - (Jb @ beta0[..., None])[..., 0]",
      KAMA_ARTICULATE),
    M("r1-K9", "src/tenfold/kama/articulate.py",
      "body = x[:, 3:72]",  # (session 26: the residual's body pose, shared by its two prior terms)
      "body = x[:, 0:69]",
      KAMA_ARTICULATE),
    M("r1-K10", "src/tenfold/kama/articulate.py",
      "w_p * (aa[:, 1:] ** 2).sum()",
      "w_p * (aa ** 2).sum()",
      KAMA_ARTICULATE),
    M("r1-K11", "src/tenfold/kama/articulate.py",
      "out.append(h / h.norm(",
      "out.append(-h / h.norm(",
      KAMA_ARTICULATE),
    M("r1-K12", "src/tenfold/kama/articulate.py",
      "mu = torch.where(ok, mu / 3, mu * 4)",
      "mu = torch.where(ok, mu * 4, mu / 3)",
      KAMA_ARTICULATE),
    M("r1-K13", "src/tenfold/kama/articulate.py",
      "Rn = _split(Rrel, 2)",
      "Rn = _split(Rrel, 3)",
      KAMA_ARTICULATE),
    M("r1-N1", "src/tenfold/nvit/prune.py",
      "grad.detach().to(self.sums[key].dtype) / scale",
      "grad.detach().to(self.sums[key].dtype) * scale",
      NVIT_PRUNE),
    M("r1-N2", "src/tenfold/nvit/prune.py",
      "self.momentum * prev + (1 - self.momentum) * cur",
      "(1 - self.momentum) * prev + self.momentum * cur",
      NVIT_PRUNE),
    M("r1-N3", "src/tenfold/nvit/prune.py",
      "k = max(0, math.floor(t * prune_per_iter / group_norm) - 1)",
      "k = max(0, math.floor(t * prune_per_iter / group_norm))",
      NVIT_PRUNE),
    M("r1-N4", "src/tenfold/nvit/prune.py",
      "if score > threshold:",
      "if score >= threshold:",
      NVIT_PRUNE),
    M("r1-N5", "src/tenfold/nvit/prune.py",
      "max(0.0, lat(E, blocks) - lat(E - 1, blocks))",
      "max(0.0, lat(E - 1, blocks) - lat(E, blocks))",
      NVIT_PRUNE),
    M("r1-N6", "src/tenfold/nvit/prune.py",
      "idx = order[a:a + g]",
      "idx = order[a:a + g + 1]",
      NVIT_PRUNE),
    M("r1-N7", "src/tenfold/nvit/prune.py",
      "rho * mi / md",
      "rho * md / mi",
      NVIT_PRUNE),
    M("r1-N8", "src/tenfold/nvit/prune.py",
      "score = imp.detach().cpu().double() - eta * dT",
      "score = imp.detach().cpu().double() + eta * dT",
      NVIT_PRUNE),
    M("r1-N9", "src/tenfold/nvit/losses.py",
      "(log_p_t.exp() * (log_p_t - log_p_s)).mean()",
      "(log_p_s.exp() * (log_p_s - log_p_t)).mean()",
      NVIT_LOSSES),
    M("r1-N10", "src/tenfold/nvit/losses.py",
      "log_p_s = F.log_softmax(student_logits / temperature, dim=-1)",
      "log_p_s = F.log_softmax(student_logits, dim=-1)",
      NVIT_LOSSES),
    M("r1-C1", "src/tenfold/core/metrics.py",
      "data_range**2 / mse",
      "data_range / mse",
      CORE_METRICS),
    M("r1-C2", "src/tenfold/core/metrics.py",
      "(0.03 * data_range) ** 2",
      "(0.03 * data_range)",
      CORE_METRICS),
    M("r1-C3", "src/tenfold/core/metrics.py",
      "- (win_size - 1) / 2",
      "- win_size / 2",
      CORE_METRICS),
    M("r1-C4", "src/tenfold/core/metrics.py",
      "aligned = s[:, None, None] * pred @",
      "aligned = pred @",
      CORE_METRICS),
    M("r1-C5", "src/tenfold/core/geometry.py",
      "var_p = (w * (Pc * Pc).sum(-1)).sum(-1)",
      "var_p = (Pc * Pc).sum(-1).mean(-1)",
      CORE_GEOMETRY),
    M("r1-C6", "src/tenfold/core/geometry.py",
      "sign = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))",
      "sign = torch.ones_like(torch.linalg.det(V @ U.transpose(-1, -2)))",
      CORE_GEOMETRY),
    M("r1-C7", "src/tenfold/core/latency.py",
      'np.searchsorted(g, x, side="right") - 1',
      'np.searchsorted(g, x, side="left") - 1',
      CORE_LATENCY, equivalent="piecewise-multilinear interpolation is continuous: at a grid point x == g[k] "
      "side='left' takes cell k-1 with fraction 1, the same value as cell k with fraction 0; elsewhere both agree"),
    M("r1-C8", "src/tenfold/core/latency.py",
      "np.where(corners[:, None, :] == 1, fr, 1.0 - fr)",
      "np.where(corners[:, None, :] == 0, fr, 1.0 - fr)",
      CORE_LATENCY),
    M("r1-C9", "src/tenfold/core/latency.py",
      "rel = (p - m) / m",
      "rel = (p - m) / p",
      CORE_LATENCY),
    M("r1-C15", "src/tenfold/core/metrics.py",
      "fc.T @ fc / (f.shape[0] - 1)",
      "fc.T @ fc / f.shape[0]",
      CORE_METRICS),
    M("r1-C16", "src/tenfold/core/metrics.py",
      "curve = (e[None, :] <= t[:, None])",
      "curve = (e[None, :] < t[:, None])",
      CORE_METRICS),
    M("r1-C17", "src/tenfold/core/geometry.py",
      "Z = (-b + disc.sqrt())",
      "Z = (-b - disc.sqrt())",
      CORE_GEOMETRY),
    M("r1-C18", "src/tenfold/core/metrics.py",
      "tr_covmean = ev.sqrt().sum()",
      "tr_covmean = ev.sum().sqrt()",
      CORE_METRICS),
    M("r1-C19", "src/tenfold/core/geometry.py",
      "swing = R @ twist.transpose(-1, -2)",
      "swing = twist.transpose(-1, -2) @ R",
      CORE_GEOMETRY),
    M("r1-E1", "src/tenfold/core/engine.py",
      "w = 1.0 - self.current_decay()",
      "w = self.current_decay()",
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-E2", "src/tenfold/core/engine.py",  # two hunks: the EMA update moved before the optimizer step
      ("                if ema_obj is not None and not skipped:\n                    ema_obj.update(raw)\n"
       "                step += 1",
       "                gnorm = clip_gradients(params, grad_clip)"),
      ("                step += 1",
       "                gnorm = clip_gradients(params, grad_clip)\n                if ema_obj is not None:\n"
       "                    ema_obj.update(raw)"),
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-E3", "src/tenfold/core/engine.py",
      '("ema", ema_obj, state["ema"]),',
      "",
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-E4", "src/tenfold/core/engine.py",
      "(1.0 + self.num_updates) / (10.0 + self.num_updates)",
      "(1.0 + self.num_updates) / (11.0 + self.num_updates)",
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-E5", "src/tenfold/core/engine.py",
      "sampler.start = position * accum * micro",
      "sampler.start = position * micro",
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-N7b", "src/tenfold/nvit/prune.py",
      "imps.append(imp[act].detach().cpu().double())",
      "imps.append(imp.detach().cpu().double())",
      NVIT_PRUNE),
    M("r1-N11", "src/tenfold/nvit/losses.py",
      "log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)",
      "log_p_t = F.log_softmax(teacher_logits, dim=-1)",
      NVIT_LOSSES),
    M("r1-N12", "src/tenfold/nvit/losses.py",
      "loss = loss + kd_coef * kl",
      "loss = loss + kd_coef * kl * temperature ** 2",
      NVIT_LOSSES),
    M("r1-K14", "src/tenfold/kama/articulate.py",
      "JtW = Jb.transpose(1, 2) * W[:, None]",
      "JtW = Jb.transpose(1, 2)",
      KAMA_ARTICULATE),
    M("r1-K15", "src/tenfold/kama/articulate.py",
      "w = c.repeat_interleave(3, 1)                                           # (B, 78)",
      "w = torch.ones_like(c).repeat_interleave(3, 1)",
      KAMA_ARTICULATE),
    M("r1-E6", "src/tenfold/core/engine.py",
      "scaled = loss / accum",
      "scaled = loss",
      CORE_ENGINE, k=NOT_TORCHRUN),
    M("r1-C20", "src/tenfold/core/metrics.py",
      "per_pair = hit.sum(1).to(pred.dtype) / nvis.clamp_min(1).to(pred.dtype)",
      "per_pair = hit.sum(1).to(pred.dtype) / hit.shape[1]",
      CORE_METRICS),
    # ---- round 2: lsgm fd/data/train, gradinversion defences/evaluation/verbs, core data/config/io, nvit
    M("r2-M01", "src/tenfold/lsgm/fd.py",
      "    fa, fb = features(net, a), features(net, b)",
      "    fa, fb = features(net, a), features(net, a)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M02", "src/tenfold/lsgm/fd.py",
      "fn(x[i:i + batch]).flatten(1)",
      "fn(x[i:i + batch - 1]).flatten(1)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M03", "src/tenfold/lsgm/fd.py",
      "(net(x[i:i + 500]).argmax(1)",
      "(net(x[i:i + 500]).argmin(1)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M04", "src/tenfold/lsgm/fd.py",
      "epochs = max(epochs, -(-min_steps",
      "epochs = min(epochs, -(-min_steps",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M05", "src/tenfold/lsgm/fd.py",
      "x[:bs // 2] = torch.bernoulli(x[:bs // 2], generator=g)",
      "pass",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M06", "src/tenfold/lsgm/data.py",
      "tr, va, ho = perm[:7500], perm[7500:8000]",
      "tr, va, ho = perm[:7500], perm[7499:8000]",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M07", "src/tenfold/lsgm/data.py",
      "torch.nonzero(drawer <= 15)",
      "torch.nonzero(drawer <= 16)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M08", "src/tenfold/lsgm/data.py",
      'x = 1.0 - F.interpolate(x, size=(image_size, image_size), mode="area")',
      'x = F.interpolate(x, size=(image_size, image_size), mode="area")',
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M09", "src/tenfold/lsgm/data.py",
      "perm[:1337], perm[1337:1437], perm[1437:]",
      "perm[:1337], perm[1337:1437], perm[1436:]",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M10", "src/tenfold/lsgm/data.py",
      "n_ho, n_va = n // 5, max(1, n // 20)",
      "n_ho, n_va = n // 4, max(1, n // 20)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M11", "src/tenfold/lsgm/data.py",
      "torch.round(x[ho] * (num_levels - 1)) / (num_levels - 1)",
      "torch.round(x[ho] * num_levels) / num_levels",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M12", "src/tenfold/lsgm/data.py",
      "held, x[ho], y[tr], y[ho], desc)",
      "held, x[ho], y[tr], y[tr][:len(ho)], desc)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M13", "src/tenfold/lsgm/train.py",
      "return nats / (dims * math.log(2))",
      "return nats / (dims * math.log(10))",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M14", "src/tenfold/lsgm/train.py",
      "dims = x[0].numel()",
      "dims = x[0, 0].numel()",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M15", "src/tenfold/lsgm/train.py",
      "b = min(batch, n - i)",
      "b = batch",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M16", "src/tenfold/lsgm/train.py",
      '"nfe": sum(nfes) / len(nfes)',
      '"nfe": sum(nfes)',
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M17", "src/tenfold/lsgm/train.py",
      "float(v.std() / math.sqrt(len(v)))",
      "float(v.std())",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M18", "src/tenfold/gradinversion/attack.py",
      "idx = torch.argsort(flat.abs(), stable=True)[:k]",
      "idx = torch.argsort(flat.abs(), stable=True, descending=True)[:k]",
      GI_DEFENCES),
    M("r2-M19", "src/tenfold/gradinversion/attack.py",
      "g = g + noise_sigma * torch.randn(",
      "g = g + noise_sigma ** 2 * torch.randn(",
      GI_DEFENCES),
    M("r2-M20", "src/tenfold/gradinversion/attack.py",
      "        g = g.detach().clone()\n",
      "        g = g.detach().clone()\n        gen = torch.Generator().manual_seed(seed)\n",
      GI_DEFENCES),
    M("r2-M21", "src/tenfold/gradinversion/attack.py",
      "k = min(round(prune_ratio * g.numel()), g.numel() - 1)",
      "k = min(round(prune_ratio * grads[0].numel()), g.numel() - 1)",
      GI_DEFENCES),
    M("r2-M22", "src/tenfold/gradinversion/evaluation.py",
      "hits += int(int(same[int(d.argmin())]) == ti)",
      "hits += int(int(same[int(d.argmax())]) == ti)",
      GI_DEFENCES),
    M("r2-M23", "src/tenfold/gradinversion/evaluation.py",
      "same = (ref_labels == c).nonzero().flatten()",
      "same = torch.arange(len(ref_labels))",
      GI_DEFENCES),
    M("r2-M24", "src/tenfold/gradinversion/evaluation.py",
      "r = rec[perm].clamp(0, 1)",
      "r = rec.clamp(0, 1)",
      GI_DEFENCES),
    M("r2-M25", "src/tenfold/gradinversion/evaluation.py",
      '"psnr_max": float(p.max())',
      '"psnr_max": float(p.min())',
      GI_DEFENCES),
    M("r2-M26", "src/tenfold/gradinversion/verbs.py",
      "g = apply_defences(clean, sigma, ratio, seed=batch_seed)",
      "g = apply_defences(clean, 0.0, ratio, seed=batch_seed)",
      GI_DEFENCES),
    M("r2-M27", "src/tenfold/gradinversion/verbs.py",
      'worst = min(rows, key=lambda r: r["psnr"])',
      'worst = max(rows, key=lambda r: r["psnr"])',
      GI_DEFENCES),
    M("r2-M28", "src/tenfold/gradinversion/verbs.py",
      "rec_sorted = res.images[torch.tensor(order)]",
      "rec_sorted = res.images",
      GI_DEFENCES),
    M("r2-M29", "src/tenfold/core/data.py",
      'dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))',
      'dims = tuple(int(d) for d in np.frombuffer(raw, dtype="<u4", count=ndim, offset=4))',
      CORE_DATA),
    M("r2-M30", "src/tenfold/core/data.py",
      "return (0, int(stem)) if stem.isascii() and stem.isdigit() else (1, stem)",
      "return (1, stem)",
      CORE_DATA),
    M("r2-M31", "src/tenfold/core/data.py",
      "x = np.rint(d.images * (255.0 / 16.0))",
      "x = np.floor(d.images * (255.0 / 16.0))",
      CORE_DATA),
    M("r2-M32", "src/tenfold/core/data.py",
      "a = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)",
      "a = np.asarray(im).astype(np.float64) * (256.0 / 65536.0)",
      CORE_DATA),
    M("r2-M33", "src/tenfold/core/data.py",
      "return x.float().div_(255.0), y",
      "return x.float().div_(256.0), y",
      CORE_DATA),
    M("r2-M34", "src/tenfold/core/data.py",
      'lp = base.with_name(base.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))',
      "lp = base.with_name(base.name)",
      CORE_DATA),
    M("r2-M35", "src/tenfold/core/config.py",
      'k, v = item.split("=", 1)',
      'k, v = item.split("=")[:2]',
      CORE_CONFIG),
    M("r2-M36", "src/tenfold/core/config.py",
      're.split(r"[,\\s]+", v.strip("()[] "))',
      're.split(r"[\\s]+", v.strip("()[] "))',
      CORE_CONFIG),
    M("r2-M37", "src/tenfold/core/config.py",
      'out[k.strip().replace("-", "_")] = v',
      "out[k.strip()] = v",
      CORE_CONFIG),
    M("r2-M38", "src/tenfold/core/io.py",
      "        if os.path.exists(tmp):\n            os.unlink(tmp)\n        raise",
      "        raise",
      CORE_IO),
    M("r2-M39", "src/tenfold/core/io.py",
      '    return base, base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")',
      '    return base, base.with_suffix(".json"), base.with_suffix(".safetensors")',
      CORE_IO),
    M("r2-M40", "src/tenfold/core/io.py",
      "        os.replace(tmp, p)\n",
      "        os.replace(tmp, p)\n        os.chmod(p, 0o600)\n",
      CORE_IO),
    M("r2-M41", "src/tenfold/nvit/model.py",
      'sd[p + "attn.proj.weight"] = a.proj.weight[e][:, keep_v]',
      'sd[p + "attn.proj.weight"] = a.proj.weight[e][:, keep_v.flip(0)]',
      NVIT_MODEL),
    M("r2-M42", "src/tenfold/nvit/model.py",
      '"head.weight": vit.head.weight[:, e]',
      '"head.weight": vit.head.weight[:, e.flip(0)]',
      NVIT_MODEL),
    M("r2-M43", "src/tenfold/lsgm/data.py",
      "return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))",
      "return torch.bernoulli(x)",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M44", "src/tenfold/lsgm/train.py",
      "real = split.heldout_grey if c.binarize else split.heldout",
      "real = split.heldout",
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M45", "src/tenfold/lsgm/train.py",
      'out["FD-CNN_mean"] = fd(feature_cnn(split.train, split.train_labels, key=c.data), gen["mean"], real)',
      'out["FD-CNN_mean"] = fd(feature_cnn(split.train, split.train_labels, key=c.data), gen["draw"], real)',
      LSGM_DATA, k=NOT_TORCHRUN),
    M("r2-M46", "src/tenfold/core/data.py",
      "members.sort(key=lambda t: (cidx[t[0]], _num_key(t[1])))",
      "members.sort(key=lambda t: (_num_key(t[1]), cidx[t[0]]))",
      CORE_DATA),
    M("r2-M47", "src/tenfold/core/config.py",
      '"0": "False", "no": "False"',
      '"0": "True", "no": "False"',
      CORE_CONFIG),
    # ---- round 3: core models, kama body_model/verbs/keypoints, lsgm nets/config, nvit model/api, gi verbs
    M("r3-C1", "src/tenfold/core/models.py",
      "        lo = self.extra // 2",
      "        lo = 0",
      CORE_MODELS),
    M("r3-C2", "src/tenfold/core/models.py",
      "x = x[:, :, :: self.stride, :: self.stride]",
      "x = x[:, :, 1:: self.stride, 1:: self.stride]",
      CORE_MODELS),
    M("r3-C3", "src/tenfold/core/models.py",
      "return x * keep / (1.0 - self.p)",
      "return x * keep",
      CORE_MODELS),
    M("r3-C4", "src/tenfold/core/models.py",
      "torch.linspace(0, drop_path_rate, len(block_dims))",
      "torch.linspace(drop_path_rate, 0, len(block_dims))",
      CORE_MODELS),
    M("r3-C5", "src/tenfold/core/models.py",
      "        self.scale = qk_dim ** -0.5",
      "        self.scale = v_dim ** -0.5",
      CORE_MODELS),
    M("r3-C6", "src/tenfold/core/models.py",
      "return F.relu(out + self.shortcut(x))",
      "return F.relu(out) + self.shortcut(x)",
      CORE_MODELS),
    M("r3-C7", "src/tenfold/core/models.py",
      "        return out.mean(dim=(2, 3))  # global",
      "        return out.amax(dim=(2, 3))  # global",
      CORE_MODELS),
    M("r3-K1", "src/tenfold/kama/body_model.py",
      'return T + torch.einsum("vcb,nb->nvc", S, betas)',
      'return T - torch.einsum("vcb,nb->nvc", S, betas)',
      KAMA_BODY),
    M("r3-K2", "src/tenfold/kama/body_model.py",
      'return self.J_template + torch.einsum("jcb,nb->njc", self.J_shapedirs, betas)',
      'return self.J_template + 0 * torch.einsum("jcb,nb->njc", self.J_shapedirs, betas)',
      KAMA_BODY),
    M("r3-K3", "src/tenfold/kama/body_model.py",
      "P = (R[:, 1:] - eye).reshape(B, -1)",
      "P = (R[:, 1:] - eye).transpose(-1, -2).reshape(B, -1)",
      KAMA_BODY),
    M("r3-K4", "src/tenfold/kama/body_model.py",
      "A[..., :3, 3] = G[..., :3, 3] - (G[..., :3, :3] @ Jr[..., None])[..., 0]",
      "A[..., :3, 3] = G[..., :3, 3] - Jr",
      KAMA_BODY),
    M("r3-K5", "src/tenfold/kama/body_model.py",
      "G_pos.append(G_pos[p] + (G_rot[p] @ (Jr[:, j] - Jr[:, p])[..., None])[..., 0])",
      "G_pos.append(G_pos[p] + (G_rot[j] @ (Jr[:, j] - Jr[:, p])[..., None])[..., 0])",
      KAMA_BODY),
    M("r3-K6", "src/tenfold/kama/body_model.py",
      "w = self.weights if vertex_ids is None else self.weights[vertex_ids]",
      "w = self.weights if vertex_ids is None else self.weights[vertex_ids].flip(0)",
      KAMA_BODY),
    M("r3-K7", "src/tenfold/kama/body_model.py",
      "            joints = joints + transl.to(dt)[:, None]",
      "            joints = joints",
      KAMA_BODY),
    M("r3-V2", "src/tenfold/kama/verbs.py",
      '                conf = np.asarray(data["confidence"], dtype=np.float64) if "confidence" in data else None',
      "                conf = None",
      KAMA_VERBS),
    M("r3-V3", "src/tenfold/kama/verbs.py",
      'betas = first["betas"].median(0).values.expand_as',
      'betas = first["betas"][:1].expand_as',
      KAMA_VERBS),
    M("r3-V4", "src/tenfold/kama/verbs.py",
      "    per_frame = (res * seen).sum(1) / seen.sum(1)",
      "    per_frame = res.mean(1)",
      KAMA_VERBS),
    M("r3-V5", "src/tenfold/kama/verbs.py",
      "acc = (v[2:] - 2 * v[1:-1] + v[:-2])",
      "acc = (v[2:] - v[:-2])",
      KAMA_VERBS),
    M("r3-V6", "src/tenfold/kama/verbs.py",
      "    s = _synthetic_bodies(model, n, cfg.seed + 1, noise_mm)",
      "    s = _synthetic_bodies(model, n, cfg.seed + 1, 0.0)",
      KAMA_VERBS),
    M("r3-V1", "src/tenfold/kama/verbs.py",
      "        arr, conf = arr[..., :3], arr[..., 3]",
      "        arr = arr[..., :3]",
      KAMA_VERBS),
    M("r3-V7", "src/tenfold/kama/verbs.py",
      '            "max_keypoint_error_mm": float(res.max() * 1e3)',
      '            "max_keypoint_error_mm": float(res[seen].mean() * 1e3)',
      KAMA_VERBS),
    M("r3-P1", "src/tenfold/kama/keypoints.py",
      "    small = (dist < MIN_SPAN_M) & (seen[..., 0].sum(1) >= 3)",
      "    small = (dist < MIN_SPAN_M) & (seen[..., 0].sum(1) >= 2)",
      KAMA_BODY),
    M("r3-P2", "src/tenfold/kama/keypoints.py",
      "    out[:, _LM_SLOTS] = landmarks",
      "    out[:, _LM_SLOTS] = landmarks.flip(1)",
      KAMA_BODY),
    M("r3-N1", "src/tenfold/lsgm/nets.py",
      "    return torch.cat([a.sin(), a.cos()], dim=1)",
      "    return torch.cat([a.cos(), a.sin()], dim=1)",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N2", "src/tenfold/lsgm/nets.py",
      "torch.exp(-math.log(10000.0) *",
      "torch.exp(-math.log(1000.0) *",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N3", "src/tenfold/lsgm/nets.py",
      "        return (self.skip(x) + h) / math.sqrt(2.0)",
      "        return self.skip(x) + h",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N4", "src/tenfold/lsgm/nets.py",
      "        eps_net = self.net(z_t * self.active[None, :, None, None], t).float()",
      "        eps_net = self.net(z_t, t).float()",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N5", "src/tenfold/lsgm/nets.py",
      "h = self.up[k](torch.cat([h, s], 1), temb)",
      "h = self.up[k](torch.cat([s, h], 1), temb)",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N6", "src/tenfold/lsgm/nets.py",
      "                s = hs.pop()",
      "                s = hs.pop(0) if hs[0].shape == h.shape else hs.pop()",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N7", "src/tenfold/lsgm/nets.py",
      "torch.full_like(self.mix_logit, -15.0)",
      "torch.full_like(self.mix_logit, 15.0)",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N8", "src/tenfold/lsgm/nets.py",
      "            total = total + m.weight.abs().max()",
      "            total = total + m.weight.abs().mean()",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-N9", "src/tenfold/lsgm/nets.py",
      "        h = self.c1(F.silu(self.n1(x))) + self.temb(temb)[:, :, None, None]",
      "        h = self.c1(F.silu(self.n1(x)))",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-G1", "src/tenfold/lsgm/config.py",
      "        if self.pad < 0:",
      "        if self.pad < -1:",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G2", "src/tenfold/lsgm/config.py",
      "        if self.inactive_kl < 0:",
      "        if self.inactive_kl < -1:",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G3", "src/tenfold/lsgm/config.py",
      "        if not self.score_mult or min(self.score_mult) < 1:",
      "        if not self.score_mult:",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G4", "src/tenfold/lsgm/config.py",
      "        if not (self.dropout < 1 and self.ema < 1):",
      "        if not (self.dropout <= 1 and self.ema <= 1):",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G5", "src/tenfold/lsgm/config.py",
      "        if not self.time_scale > 0:",
      "        if self.time_scale < 0:",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G6", "src/tenfold/lsgm/config.py",
      "        if self.num_levels < 2:",
      "        if self.num_levels < 1:",
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-G7", "src/tenfold/lsgm/config.py",
      '        for name in ("beta0", "beta1", "ode_tol", "ode_eps"):',
      '        for name in ("beta0", "beta1", "ode_tol"):',
      LSGM_CONFIG, k=NOT_TORCHRUN),
    M("r3-T1", "src/tenfold/nvit/model.py",
      "        params += E * qkv_out + bias * qkv_out + h * v * E + E  # qkv, proj",
      "        params += E * qkv_out + qkv_out + h * v * E + E  # qkv, proj",
      NVIT_MODEL_PRUNE),
    M("r3-T2", "src/tenfold/nvit/model.py",
      "        if not full_e:\n            t = t * m_e",
      "        if False:\n            t = t * m_e",
      NVIT_MODEL_PRUNE, equivalent="the residual stream's pruned channels are never read: every LayerNorm is masked "
      "(pruned outputs 0, pruned inputs ignored, so no gradient reaches them) and every block input is gated by ge"),
    M("r3-T3", "src/tenfold/nvit/model.py",
      "        k = k.reshape(B, N, h, dq).transpose(1, 2) * m_qk * gh",
      "        k = k.reshape(B, N, h, dq).transpose(1, 2) * m_qk",
      NVIT_MODEL_PRUNE),
    M("r3-T4", "src/tenfold/nvit/model.py",
      "            keep_v = (mh[:, None] & mv[None, :]).reshape(-1)",
      "            keep_v = (mh[:, None] & mv[None, :]).T.reshape(-1)",
      NVIT_MODEL_PRUNE),
    M("r3-T5", "src/tenfold/nvit/model.py",
      '"head.weight": vit.head.weight[:, e], "head.bias": vit.head.bias,',
      '"head.weight": vit.head.weight[:, e], "head.bias": vit.head.bias * 0,',
      NVIT_MODEL_PRUNE),
    M("r3-T6", "src/tenfold/nvit/model.py",
      "    params = pe * E + E + E + N * E + 2 * E + E * spec.num_classes + spec.num_classes",
      "    params = pe * E + E + E + N * E + 2 * E + E * spec.num_classes",
      NVIT_MODEL_PRUNE),
    M("r3-T7", "src/tenfold/nvit/model.py",
      "    P = N - 1",
      "    P = N",
      NVIT_MODEL_PRUNE),
    M("r3-T8", "src/tenfold/nvit/model.py",
      "        blk.attn.scale = s  # d0",
      "        blk.attn.scale = blk.attn.qk_dim ** -0.5  # d0",
      NVIT_MODEL_PRUNE),
    M("r3-A1", "src/tenfold/nvit/api.py",
      '        "tokens": (cfg.img_size // cfg.patch_size) ** 2 + 1,',
      '        "tokens": (cfg.img_size // cfg.patch_size) ** 2,',
      NVIT_API),
    M("r3-A2", "src/tenfold/nvit/api.py",
      "             if k in lat.block.axes and v > lat.block.axes[k][-1]]",
      '             if k in lat.block.axes and v > lat.block.axes[k][-1] and k != "mlp"]',
      NVIT_API),
    M("r3-A3", "src/tenfold/nvit/api.py",
      "    side = int(round(math.sqrt(tokens - 1))) * patch",
      "    side = int(round(math.sqrt(tokens))) * patch",
      NVIT_API, equivalent="tokens = n * n patches + the class token; round(sqrt(n * n + 1)) == n for every n >= 1"),
    M("r3-A4", "src/tenfold/nvit/api.py",
      "        bad = int((~(np.isfinite(vals) & (vals > 0))).sum())",
      "        bad = int((~np.isfinite(vals)).sum())",
      NVIT_API),
    M("r3-A5", "src/tenfold/nvit/api.py",
      '        "grid": {"embed": _ints(cfg.lut_embed, "lut_embed"), "heads": _ints(cfg.lut_heads, "lut_heads"),',
      '        "grid": {"embed": _ints(cfg.lut_embed, "lut_embed"), "heads": _ints(cfg.lut_qk, "lut_heads"),',
      NVIT_API),
    M("r3-R1", "src/tenfold/gradinversion/verbs.py",
      '    write_json(run_dir / "threat_model.json", cfg.threat_model())',
      '    write_json(run_dir / "threat_model.json", Config().threat_model())',
      GI_VERBS),
    M("r3-R2", "src/tenfold/gradinversion/verbs.py",
      "            if (B, name) in done:\n                rows.append(done[(B, name)])\n                continue",
      "            if False:\n                continue",
      GI_VERBS),
    M("r3-R3", "src/tenfold/gradinversion/verbs.py",
      '    tm = {**cfg.threat_model(), "defences": "per row: each row\'s noise_sigma and prune_ratio"}',
      '    tm = {**Config().threat_model(), "defences": "per row: each row\'s noise_sigma and prune_ratio"}',
      GI_VERBS),
    M("r3-R4", "src/tenfold/gradinversion/verbs.py",
      "            g = apply_defences(clean, sigma, ratio, seed=batch_seed)",
      "            g = apply_defences(clean, 0.0, ratio, seed=batch_seed)",
      GI_VERBS),
    M("r3-V8", "src/tenfold/kama/verbs.py",
      '    return {"bodies": int(X.shape[0]), "keypoint_error_mm": float(res[seen].mean() * 1e3),',
      '    return {"bodies": int(X.shape[0]), "keypoint_error_mm": float(res.mean() * 1e3),',
      KAMA_VERBS),
    M("r3-V9", "src/tenfold/kama/verbs.py",
      "    meshes = min(X.shape[0], MAX_MESHES)",
      "    meshes = min(X.shape[0], 1)",
      KAMA_VERBS),
    M("r3-N2b", "src/tenfold/lsgm/nets.py",
      "/ max(half - 1, 1))",
      "/ half)",
      LSGM_NETS, k=NOT_TORCHRUN),
    M("r3-T9", "src/tenfold/nvit/model.py",
      "vit.blocks[0].attn.qkv.bias is not None if len(vit.blocks) else True,",
      "True,",
      NVIT_MODEL_PRUNE),
    M("r3-R5", "src/tenfold/gradinversion/verbs.py",
      "            c = dataclasses.replace(cfg, noise_sigma=sigma, prune_ratio=ratio)",
      "            c = cfg",
      GI_VERBS),
    # ---- round 4: benchmarks/*.py helpers (and gradinversion verbs' pick_batch)
    M("r4-L1", "benchmarks/lsgm.py",
      '"diff_se": float(d.std() / math.sqrt(len(d)))',
      '"diff_se": float(d.std())',
      BENCH_LSGM, note="paired SE without sqrt(n)"),
    M("r4-L2", "benchmarks/lsgm.py",
      "    d = a - b\n",
      "    d = b - a\n",
      BENCH_LSGM, note="paired difference sign flipped"),
    M("r4-L3", "benchmarks/lsgm.py",
      "float(a.mean() / b.mean() - 1)",
      "float(b.mean() / a.mean() - 1)",
      BENCH_LSGM, note="paired relative inverted"),
    M("r4-L4", "benchmarks/lsgm.py",
      "        sr = gaussian_stats(fr[ir])",
      "        ib = ia\n        sr = gaussian_stats(fr[ir])",
      BENCH_LSGM, note="fd_diff_se: a and b share resample indices"),
    M("r4-L5", "benchmarks/lsgm.py",
      "(torch.randint(len(f), (len(f),), generator=g) for f in",
      "(torch.randperm(len(f), generator=g) for f in",
      BENCH_LSGM, note="fd_diff_se: resample without replacement"),
    M("r4-L6", "benchmarks/lsgm.py",
      "frechet_distance(*gaussian_stats(fb[ib]), *sr)",
      ("frechet_distance(*gaussian_stats(fb[ib]), *gaussian_stats(fr[torch.randint(len(fr), (len(fr),), "
       "generator=g)]))"),
      BENCH_LSGM, note="fd_diff_se: real resampled separately per term"),
    M("r4-L7", "benchmarks/lsgm.py",
      "return float(torch.tensor(diffs).std())",
      "return float(torch.tensor(diffs).var())",
      BENCH_LSGM, note="fd_diff_se: variance not SD"),
    M("r4-L8", "benchmarks/lsgm.py",
      "key=lambda c: abs(n_params(UNet(1, ch=c, ch_mult=DATA_MULT, num_res_blocks=1)) - params))",
      "key=lambda c: n_params(UNet(1, ch=c, ch_mult=DATA_MULT, num_res_blocks=1)) - params)",
      BENCH_LSGM, note="data_channels without abs"),
    M("r4-L9", "benchmarks/lsgm.py",
      "key=lambda c: abs(n_params(UNet(1, ch=c, ch_mult=DATA_MULT, num_res_blocks=1))",
      "key=lambda c: abs(n_params(UNet(1, ch=c, ch_mult=(1, 2, 2, 2), num_res_blocks=2))",
      BENCH_LSGM, note="data_channels counts another U-Net than the trained one"),
    M("r4-L10", "benchmarks/lsgm.py",
      "best, ordered = min(sweep, key=sweep.get), sorted(sweep)",
      "best, ordered = max(sweep, key=sweep.get), sorted(sweep)",
      BENCH_LSGM, note="pick_lr takes the worst lr"),
    M("r4-L11", "benchmarks/lsgm.py",
      "lrs = [best * 3]",
      "lrs = [best / 3]",
      BENCH_LSGM, note="pick_lr widens the wrong way at the upper edge"),
    M("r4-L12", "benchmarks/lsgm.py",
      "if len(sweep) < a.max_sweep and best == ordered[-1]:",
      "if len(sweep) <= a.max_sweep and best == ordered[-1]:",
      BENCH_LSGM, note="pick_lr cap off by one"),
    M("r4-L13", "benchmarks/lsgm.py",
      "return torch.bernoulli(x) + torch.rand_like(x) - 1.0",
      "return x + torch.rand_like(x) - 1.0",
      BENCH_LSGM, note="dequantise without binarisation"),
    M("r4-L14", "benchmarks/lsgm.py",
      "return torch.bernoulli(x) + torch.rand_like(x) - 1.0",
      "return torch.bernoulli(x) + torch.rand_like(x) - 0.5",
      BENCH_LSGM, note="dequantise wrong offset"),
    M("r4-G1", "benchmarks/gradinversion.py",
      "for r, w in enumerate(pmf)) / true.numel()",
      "for r, w in enumerate(pmf)) / C",
      BENCH_GI, note="expected_overlap denominator C"),
    M("r4-G2", "benchmarks/gradinversion.py",
      "(1 / C) ** r * (1 - 1 / C) ** (pads - r)",
      "(1 / C) ** r * (1 - 1 / C) ** pads",
      BENCH_GI, note="expected_overlap binomial pmf wrong"),
    M("r4-G3", "benchmarks/gradinversion.py",
      "min(f[c] + r, t[c])",
      "min(f[c], t[c])",
      BENCH_GI, note="expected_overlap ignores padding"),
    M("r4-G4", "benchmarks/gradinversion.py",
      "    return float(hit) / true.numel()",
      "    return float(hit) / max(pred.numel(), 1)",
      BENCH_GI, note="_overlap over predictions, not the batch"),
    M("r4-G5", "benchmarks/gradinversion.py",
      "hit = torch.minimum(",
      "hit = torch.maximum(",
      BENCH_GI, note="_overlap max instead of min"),
    M("r4-G6", "benchmarks/gradinversion.py",
      "return lab[lab >= 0], int((lab < 0).sum())",
      "return lab[lab > 0], int((lab < 0).sum())",
      BENCH_GI, note="unpadded drops class 0"),
    M("r4-G7", "benchmarks/gradinversion.py",
      "        torch.randint = real\n    return lab",
      "        pass\n    return lab",
      BENCH_GI, note="unpadded leaves torch.randint patched"),
    M("r4-G8", "benchmarks/gradinversion.py",
      "return statistics.mean(r[key] for r in runs)",
      "return runs[0][key]",
      BENCH_GI, note="_cell_row first seed only"),
    M("r4-G9", "benchmarks/gradinversion.py",
      'round(statistics.mean(r["psnr_vs_iterations"][it] for r in runs), 3)',
      'round(runs[-1]["psnr_vs_iterations"][it], 3)',
      BENCH_GI, note="_cell_row snapshots from last seed only"),
    M("r4-G10", "benchmarks/gradinversion.py",
      "return 1000 * k + 10 * B + REGIMES.index(regime)",
      "return 1000 * k + 10 * B",
      BENCH_GI, note="_attack_seed ignores regime"),
    M("r4-G11", "src/tenfold/gradinversion/verbs.py",
      "        if c not in seen:",
      "        if True:",
      BENCH_GI_VERBS, note="pick_batch unique allows repeats"),
    M("r4-G12", "src/tenfold/gradinversion/verbs.py",
      "        return perm[:B]",
      "        return perm[1:B + 1]",
      BENCH_GI_VERBS, note="pick_batch non-unique off by one"),
    M("r4-G13", "benchmarks/gradinversion.py",
      "torch.eye(C)[:, None, :].expand(C, r[0].numel(), C)",
      "torch.zeros(C)[None, None, :].expand(C, r[0].numel(), C)",
      BENCH_GI, note="oracle fits no offsets"),
    M("r4-G14", "benchmarks/gradinversion.py",
      "    rec = images[order]\n",
      "    rec = images\n",
      BENCH_GI, note="oracle unmatched order"),
    M("r4-N1", "benchmarks/nvit.py",
      "d.std() / len(d) ** 0.5",
      "d.std() / len(d)",
      BENCH_NVIT, note="paired_margin SE without sqrt"),
    M("r4-N2", "benchmarks/nvit.py",
      "if (t > target) == increasing:",
      "if (t > target) != increasing:",
      BENCH_NVIT, note="bisect wrong direction"),
    M("r4-N3", "benchmarks/nvit.py",
      "if best is None or abs(t - target) < abs(best[2] - target):",
      "if True:",
      BENCH_NVIT, note="bisect returns last, not best"),
    M("r4-N4", "benchmarks/nvit.py",
      "return r.median, r.cpu_median",
      "return r.cpu_median, r.median",
      BENCH_NVIT, note="measured swaps wall and CPU"),
    M("r4-K1", "benchmarks/kama.py",
      "ang = matrix_to_axis_angle(dg.transpose(-1, -2) @ dw).norm(dim=-1).rad2deg()",
      "ang = matrix_to_axis_angle(dg.transpose(-1, -2) @ dw).norm(dim=-1)",
      BENCH_KAMA, note="rotation angle in radians"),
    M("r4-K2", "benchmarks/kama.py",
      "dw = W @ W[:1].transpose(-1, -2)",
      "dw = W",
      BENCH_KAMA, note="BVH rotation not relative to frame 0"),
    M("r4-K3", "benchmarks/kama.py",
      "    return forward_kinematics(axis_angle_to_matrix(pose.double()), torch.zeros(24, 3, dtype=torch.float64),",
      "    return forward_kinematics(axis_angle_to_matrix(pose.double()).transpose(-1, -2),\n"
      "                              torch.zeros(24, 3, dtype=torch.float64),",
      BENCH_KAMA, note="the benchmark's world rotations inverted (since session 21 they come from core's "
      "forward_kinematics; this mutated its own tree walk, composed in the wrong order)"),
    M("r4-K4", "benchmarks/kama.py",
      "ang.quantile(0.9)",
      "ang.quantile(0.5)",
      BENCH_KAMA, note="p90 is the median"),
    M("r4-K5", "benchmarks/kama.py",
      "e = {k: torch.cat([d[k] for d in errs[m]]) for k in errs[m][0]}",
      "e = {k: torch.stack([d[k].mean() for d in errs[m]]) for k in errs[m][0]}",
      BENCH_KAMA, note="errors: mean of chunk means"),
    M("r4-K6", "benchmarks/kama.py",
      "round(statistics.median(cpu[m]), 3)",
      "round(statistics.mean(cpu[m]), 3)",
      BENCH_KAMA, note="cpu mean not median"),
    M("r4-K7", "benchmarks/kama.py",
      "cpu[m].append(1e3 * sec / X.shape[0])",
      "cpu[m].append(1e3 * sec / chunk)",
      BENCH_KAMA, note="cpu per nominal chunk size"),
    M("r4-C1", "benchmarks/common.py",
      'return sha + ("-dirty" if dirty else "")',
      'return sha + ("-dirty" if not dirty else "")',
      BENCH_COMMON, note="dirty flag inverted"),
    M("r4-C2", "benchmarks/common.py",
      '"--untracked-files=no"',
      '"--untracked-files=all"',
      BENCH_COMMON, note="untracked files make it dirty"),
    M("r4-C3", "benchmarks/common.py",
      "if (now := git_commit()) != COMMIT_AT_START:",
      "if (now := git_commit()) or True:",
      BENCH_COMMON, note="commit_at_write always"),
    M("r4-C4", "benchmarks/common.py",
      '"python -m benchmarks." + name + " " + shlex.join(sys.argv[1:])',
      '"python -m benchmarks." + name + " " + " ".join(sys.argv[1:])',
      BENCH_COMMON, note="command loses shell quoting"),
    M("r4-C5", "benchmarks/common.py",
      'env.update({"commit": COMMIT_AT_START,',
      'env.update({"commit": git_commit(),',
      BENCH_COMMON, note="commit read at write time"),
    # round 6 (session 17): the image pyramid of the gradinversion attack
    M("r6-P1", "src/tenfold/gradinversion/attack.py",
      'up = F.interpolate(q.flatten(0, -4), size=size, mode="bilinear", align_corners=False)',
      'up = F.interpolate(q.flatten(0, -4), size=size, mode="nearest")',
      GI_PYRAMID, note="nearest upsampling"),
    M("r6-P2", "src/tenfold/gradinversion/attack.py",
      '"lr": self.lr * self.pyramid_decay ** k}',
      '"lr": self.lr * self.pyramid_decay ** (k + 1)}',
      GI_PYRAMID, note="decay off by one level"),
    M("r6-P3", "src/tenfold/gradinversion/attack.py",
      "                    for q in P:\n                        q.grad.sign_()",
      "                    P[0].grad.sign_()",
      GI_PYRAMID, note="coarse levels unsigned"),
    M("r6-P4", "src/tenfold/gradinversion/attack.py",
      "                    P[0].copy_(X - coarse)\n",
      "",
      GI_PYRAMID, note="P_0 does not absorb the clamp"),
    M("r6-P5", "src/tenfold/gradinversion/attack.py",
      "            elif P:  # X is not the optimiser's variable then: clear its gradient here\n"
      "                X.grad.zero_()\n",
      "",
      GI_PYRAMID, note="pixel gradient accumulates across iterations"),
    M("r6-P6", "src/tenfold/gradinversion/attack.py",
      '                for k, q in enumerate(P):\n                    q.copy_(st["pyramid"][str(k)].to(dev))\n',
      "",
      GI_PYRAMID, note="resume drops the levels"),
    M("r6-P7", "src/tenfold/gradinversion/attack.py",
      "if levels < 0 or 2 ** levels > min(H, W):",
      "if levels < 0:",
      GI_PYRAMID, note="no size check"),
    # round 7 (session 18): the objective diagnostic (GradInversion.objective, the attack verb's search_limited)
    M("r7-O1", "src/tenfold/gradinversion/attack.py",
      "xg = (images.to(dev, dt) - mu) / sd",
      "xg = images.to(dev, dt)",
      GI_OBJECTIVE, note="objective forgets the normalisation"),
    M("r7-O2", "src/tenfold/gradinversion/attack.py",
      "loss = self.alpha_grad * d + self.alpha_tv * tv + self.alpha_l2 * l2",
      "loss = self.alpha_grad * d + self.alpha_tv * tv",
      GI_OBJECTIVE, note="the l2 prior drops out of the objective (and the loop)"),
    M("r7-O3", "src/tenfold/gradinversion/verbs.py",
      '"search_limited": obj_truth["total"] < obj_output["total"],',
      '"search_limited": obj_truth["total"] > obj_output["total"],',
      ("tests/gradinversion/test_gradinversion.py",), k="warm", note="search_limited reads the wrong way"),
    M("r7-O4", "src/tenfold/gradinversion/attack.py",
      "labels.to(dev).long(), mu, sd, create_graph=False,",  # (session 25: split_bn follows)
      "labels.to(dev).long().sort().values, mu, sd, create_graph=False,",
      GI_OBJECTIVE, note="objective re-sorts the labels, pairing them with the wrong images"),
    M("r7-O5", "src/tenfold/gradinversion/verbs.py",
      '"grad_distance_truth": o_truth["grad"]',
      '"grad_distance_truth": o_output["grad"]',
      ("tests/gradinversion/test_gradinversion.py",), k="audit_table",
      note="audit: the output's distance as the truth's"),
    M("r7-O6", "src/tenfold/gradinversion/verbs.py",
      "o_truth, o_output = _objectives(c, net, g, x, y, res, mean, std, ubn)",
      "o_truth, o_output = _objectives(c, net, clean, x, y, res, mean, std, ubn)",
      ("tests/gradinversion/test_gradinversion.py",), k="audit_table",
      note="audit: distances against the undefended gradient"),
    M("r7-N1", "src/tenfold/nvit/prune.py",
      'return torch.float32 if torch.device(device).type == "mps" else torch.float64',
      "return torch.float64",
      NVIT_PRUNE, k="mps", note="float64 saliency sums on mps"),
    M("r7-N2", "src/tenfold/nvit/prune.py",
      "v.to(device=self.sums[key(k)].device, dtype=self.sums[key(k)].dtype)",
      "v.to(device=self.sums[key(k)].device, dtype=torch.float64)",
      NVIT_PRUNE, k="mps", note="a resume puts a float64 EMA beside float32 sums"),
    # round 8 (session 19): the count_mass label rule
    M("r8-G1", "src/tenfold/gradinversion/labels.py",
      "counts[int(torch.argmax(s.masked_fill(used, -math.inf)))] += 1",
      "counts[int(torch.argmin(s.masked_fill(used, math.inf)))] += 1",
      GI_ATTACK, k="count"),
    M("r8-G2", "src/tenfold/gradinversion/labels.py",
      "est = B * (1.0 / C - db)  # count's estimated counts, uniform prior",
      "est = B * (1.0 / C + db)  # count's estimated counts, uniform prior",
      GI_ATTACK, k="count"),
    M("r8-G3", "src/tenfold/gradinversion/labels.py",
      "    if B == 1:\n        return recover_labels(grad_fc_weight, 1, \"yin_mass\").cpu()",
      "    if B == 0:\n        return recover_labels(grad_fc_weight, 1, \"yin_mass\").cpu()",
      GI_ATTACK, k="vanishes"),
    M("r8-G4", "src/tenfold/gradinversion/labels.py",
      "if bool((~used).any()) and float(fresh.max()) >= float(repeat.max()):",
      "if bool((~used).any()):",
      GI_ATTACK, k="count"),
    # round 9 (session 20): the benchmark's seed-split merge and the group goal's paired report
    M("r9-B1", "benchmarks/gradinversion.py",
      "    return [(at[k], bt[k]) for k in sorted(set(at) & set(bt))]",
      "    return list(zip(pa, pb))",
      BENCH_GI, k="seed"),
    M("r9-B2", "benchmarks/gradinversion.py",
      "        return sum(v * n for v, n in zip(vals, w)) / sum(w)",
      "        return sum(vals) / len(vals)",
      BENCH_GI, k="seed"),
    M("r9-B3", "benchmarks/gradinversion.py",
      "    out[\"psnr_per_seed\"] = [per_seed[i] for i in order]",
      "    out[\"psnr_per_seed\"] = per_seed",
      BENCH_GI, k="seed"),
    M("r9-B4", "benchmarks/gradinversion.py",
      "    if len(set(flat)) != len(flat):",
      "    if False:",
      BENCH_GI, k="seed"),
    M("r9-B5", "benchmarks/gradinversion.py",
      "                    \"batches_won\": sum(d > 0 for d in diffs), \"batches\": len(diffs)}",
      "                    \"batches_won\": sum(d >= 0 for d in diffs), \"batches\": len(diffs)}",
      BENCH_GI, k="group"),
    # ---- round 10 (session 21): the fixes of the user review
    M("r10-N1", "src/tenfold/nvit/prune.py",
      "    return n_alive > 0 and int(mask.sum()) - n_alive >= max(1, minimum)",
      "    return n_alive > 0 and int(mask.sum()) - n_alive >= max(1, minimum) + 1",
      NVIT_PRUNE, k="unreachable"),
    M("r10-N2", "src/tenfold/nvit/api.py",
      "                if not reached and res.exhausted:",
      "                if False:",
      NVIT_PRUNE, k="unreachable"),
    M("r10-N3", "src/tenfold/nvit/config.py",
      "        if self.embed_dim % self.num_heads:",
      "        if False:",
      ("tests/nvit/test_bad_input.py",), k="config_refuses"),
    M("r10-N4", "src/tenfold/nvit/api.py",
      "    if num_classes and ds.num_classes > num_classes:",
      "    if False:",
      ("tests/nvit/test_bad_input.py",), k="more_classes"),
    M("r10-G1", "src/tenfold/gradinversion/attack.py",
      "    if shape is None:\n        return linears[-1][0]",
      "    if True:\n        return linears[-1][0]",
      ("tests/gradinversion/test_bad_inputs.py",), k="classifier"),
    M("r10-G2", "src/tenfold/gradinversion/attack.py",
      "            return list(torch.autograd.grad(loss, self.leaves, create_graph=create_graph, allow_unused=True,\n"
      "                                            materialize_grads=True))",
      "            return list(torch.autograd.grad(loss, self.leaves, create_graph=create_graph))",
      ("tests/gradinversion/test_bad_inputs.py",), k="classifier"),
    M("r10-G3", "src/tenfold/gradinversion/verbs.py",
      "    if cfg.noise_sigma or cfg.prune_ratio:",
      "    if False:",
      ("tests/gradinversion/test_bad_inputs.py",), k="global_defence"),
    M("r10-G4", "src/tenfold/gradinversion/verbs.py",
      "        fields = {k: getattr(cfg, k) for k in (*CLIENT_FIELDS, \"client_mode\") if k in conf}",
      "        fields = {}",
      ("tests/gradinversion/test_bad_inputs.py",), k="client_settings"),
    M("r10-L1", "src/tenfold/lsgm/ode.py",
      "        z = (1.0 - a2) * m_s / v_t * x0 + math.sqrt(a2) * v_s / v_t * z",
      "        z = (1.0 - a2) * m_s / v_t * x0 + a2 * v_s / v_t * z",
      ("tests/lsgm/test_lsgm_invariants.py",), k="ancestral"),
    M("r10-L2", "src/tenfold/lsgm/data.py",
      "            seen = [k in exclude for k in _keys_in_order(x)]",
      "            seen = [False for k in _keys_in_order(x)]",
      ("tests/lsgm/test_lsgm_model.py",), k="another_dataset or relative_folder"),
    M("r10-L3", "src/tenfold/lsgm/nets.py",
      "            return torch.where(self.active[None, :, None, None] > 0, eps_net, normal.to(eps_net.dtype))",
      "            return eps_net",
      ("tests/lsgm/test_lsgm_math.py",), k="mixed_score"),
    M("r10-L4", "src/tenfold/lsgm/train.py",
      "    if absolute_spec(cfg.data) != cfg.data:",
      "    if False:",
      ("tests/lsgm/test_lsgm_model.py",), k="relative_folder"),
    M("r10-C1", "src/tenfold/core/io.py",
      "t.cpu().clone(memory_format=torch.contiguous_format) if shares",
      "t.cpu().clone() if shares",
      CORE_IO, k="tied"),
    M("r10-K1", "src/tenfold/kama/keypoints.py",
      "isinstance(v, int) and not isinstance(v, bool)",
      "isinstance(v, int)",
      ("tests/kama/test_bad_input.py",), k="landmark_override"),
    # ---- round 11 (session 21, later): the fixes of the engine, benchmark, metrics and data reviews
    M("r11-K1", "src/tenfold/kama/articulate.py",
      "sp * body, sa * (body - a0)], 1)",
      "sp * body, sa * body], 1)",
      ("tests/kama/test_articulate.py",), k="exact_fit_exact and lm"),
    M("r11-K2", "src/tenfold/kama/articulate.py",
      "            loss = loss + w_anchor * ((aa[:, 1:] - anchor) ** 2).sum()",
      "            loss = loss + w_anchor * (aa[:, 1:] ** 2).sum()",
      ("tests/kama/test_articulate.py",), k="exact_fit_exact and lbfgs"),
    M("r11-C1", "src/tenfold/core/io.py",
      "    if str(header.get(\"digest\", \"\")).startswith(\"crc32:\") and _digest(raw) != header[\"digest\"]:",
      "    if False:",
      CORE_IO, k="damaged"),
    M("r11-C2", "src/tenfold/core/data.py",
      "        return top if len(parts) == 1 else parts[0]",
      "        return top if len(parts) == 1 else \"/\".join(parts[:-1])",
      CORE_DATA, k="folder"),
    M("r11-C3", "src/tenfold/core/metrics.py",
      "    if span > 1.01 * data_range:",
      "    if False:",
      CORE_METRICS, k="span"),
    M("r11-C4", "src/tenfold/core/data.py",
      "    for f in files:  # headers only, of every file",
      "    for f in chosen:  # headers only, of every file",
      CORE_DATA, k="follows_links"),
    M("r11-N1", "src/tenfold/nvit/api.py",
      "              ckpt_every=min(ckpt_every, steps) if ckpt_every > 0 else steps,",
      "              ckpt_every=steps,",
      ("tests/nvit/test_bad_input.py",), k="checkpoints_before"),
    M("r11-L1", "src/tenfold/lsgm/train.py",
      "    if fd_samples == 1:",
      "    if False:",
      ("tests/lsgm/test_lsgm_model.py",), k="grad_clip"),
    M("r11-C5", "src/tenfold/core/latency.py",
      "            vals = np.array(_nan_for_none(d[\"values\"]), dtype=np.float64)",
      "            vals = np.array(_nan_for_none(d[\"values\"]), dtype=np.float64).reshape(\n"
      "                tuple(len(g) for g in d[\"axes\"].values()))",
      CORE_LATENCY, k="review_of_session21"),
    M("r11-C6", "src/tenfold/core/config.py",
      "            v = float(\"nan\")",
      "            v = None",
      CORE_CONFIG, k="round_trips_nan"),
    M("r11-C7", "src/tenfold/core/latency.py",
      "        with torch.random.fork_rng(devices=[]):  # the block's init leaves the global RNG as it was",
      "        with contextlib.nullcontext():",
      CORE_LATENCY, k="review_of_session21"),
    M("r11-L2", "src/tenfold/lsgm/vae.py",
      "            mu = mu + coef[:, 0 if c == 1 else 1] * out[0]",
      "            mu = mu + coef[:, 1 if c == 1 else 0] * out[0]",
      ("tests/lsgm/test_lsgm_math.py",), k="draws_follow"),
    M("r11-L3", "src/tenfold/lsgm/train.py",
      "            torch.manual_seed(0)\n        for i in range(0, len(x), batch):",
      "            pass\n        for i in range(0, len(x), batch):",
      ("tests/lsgm/test_lsgm_math.py",), k="channel_kl_is_deterministic"),
    # ---- round 12 (session 22): the own-model and figures reviews
    M("r12-G1", "src/tenfold/gradinversion/attack.py",
      "    if ran and ran[-1][1].shape == logits.shape:\n        return ran[-1][0]",
      "    same = [n for n, o in ran if o.shape[-1:] == logits.shape[-1:]]\n    if len(set(same)) == 1:\n"
      "        return same[0]",
      ("tests/gradinversion/test_bad_inputs.py",), k="bottleneck"),
    M("r12-G2", "src/tenfold/gradinversion/attack.py",
      "        return ts[0] if len(ts) == 1 else None",
      "        return ts[0] if ts else None",
      ("tests/gradinversion/test_bad_inputs.py",), k="several_tensors"),
    M("r12-G3", "src/tenfold/gradinversion/attack.py",
      "                loss = F.cross_entropy(_as_logits(self.net(x)), y)",
      "                loss = F.cross_entropy(self.net(x), y)",
      ("tests/gradinversion/test_bad_inputs.py",), k="named_tuple"),
    M("r12-G4", "src/tenfold/gradinversion/attack.py",
      "    return inv.run(model, target_grads, num_images=num_images, mean=mean, std=std, labels=labels,",
      "    return inv.run(model, target_grads, num_images=num_images, mean=mean, std=std,\n"
      "                   labels=labels if cfg.labels == \"oracle\" else None,",
      GI_VERBS, k="wrapper_refuses"),
    M("r12-G5", "src/tenfold/gradinversion/attack.py",
      "            why = (\"alpha_bn = 0\" if self.alpha_bn == 0 else",
      "            why = (\"alpha_bn = 0\" if True else",
      GI_VERBS, k="records_the_bn_prior"),
    M("r12-G6", "src/tenfold/gradinversion/attack.py",
      "        if self.client_mode == \"train\" and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0",
      "        if False and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0",
      GI_VERBS, k="records_the_bn_prior"),
    M("r12-N1", "src/tenfold/nvit/model.py",
      "    options += [\"no_embed_class=True\"] * bool(getattr(model, \"no_embed_class\", False))",
      "    options += []",
      NVIT_MODEL, k="timm_options"),
    M("r12-N2", "src/tenfold/nvit/model.py",
      "    if want != got:  # any variant not named above",
      "    if False:  # any variant not named above",
      NVIT_MODEL, k="not_named"),
    M("r12-N3", "src/tenfold/nvit/model.py",
      "    mean = tuple(mean if mean is not None else cfg.get(\"mean\", (0.0,) * in_chans))",
      "    mean = tuple(cfg.get(\"mean\", (0.0,) * in_chans))",
      NVIT_MODEL, k="not_named"),
    M("r12-B1", "benchmarks/lsgm.py",
      ", \"process_cpu_seconds\": old.get(\"process_cpu_seconds\")}",
      "}",
      ("tests/benchmarks/test_helpers.py",), k="merge_earlier"),
    # ---- round 12, later (session 22): the resume and own-data reviews
    M("r12-C1", "src/tenfold/core/engine.py",
      "    def __init__(self, run_dir: str | os.PathLike, *, method: str, keep: int | None = 2,",
      "    def __init__(self, run_dir: str | os.PathLike, *, method: str, keep: int | None = 1,",
      CORE_ENGINE, k="keeps_two"),
    M("r12-C2", "src/tenfold/core/engine.py",
      "                for t in self.dir.glob(\".*.tmp\"):",
      "                for t in []:",
      CORE_ENGINE, k="keeps_two"),
    M("r12-C3", "src/tenfold/gradinversion/attack.py",
      "            st, header, _ = checkpointer.load_newest()",
      "            st, header = checkpointer.load()",
      GI_VERBS, k="resumes_exactly"),
    M("r12-C4", "src/tenfold/core/io.py",
      "        if input_digest(f) != saved[name].get(\"digest\"):",
      "        if False:",
      CORE_IO, k="changed_since"),
    M("r12-C5", "src/tenfold/core/io.py",
      "            h.update(f\"{f.relative_to(p).as_posix()}\\0{one(f)}\\n\".encode())",
      "            h.update(one(f).encode())",
      CORE_IO, k="changed_since"),
    M("r12-C6", "src/tenfold/cli.py",
      "                    for name in getattr(fn, \"resume_files\", ())))",
      "                    for name in ()))",
      ("tests/test_cli.py",), k="own_progress"),
    M("r12-C7", "src/tenfold/cli.py",
      "        elif i and args[i - 1] in flags and a.lower() in _BOOL_WORDS:",
      "        elif False:",
      ("tests/test_cli.py",), k="spellings"),
    M("r12-C8", "src/tenfold/lsgm/data.py",
      "        if not bool(tinted.any()):",
      "        if False:",
      ("tests/lsgm/test_lsgm_model.py",), k="bad_inputs"),
    M("r12-C9", "src/tenfold/core/data.py",
      "                    if int(alpha.min()) < 255:",
      "                    if int(alpha.min()) < 0:",
      CORE_DATA, k="transparency"),
    M("r12-L1", "src/tenfold/lsgm/fd.py",
      "    bs = min(64, len(train))",
      "    bs = 64",
      LSGM_DATA, k="feature_cnn"),
    M("r12-L2", "src/tenfold/lsgm/train.py",
      "    if split.heldout.shape[1] != model.vae.image_channels:",
      "    if False:",
      ("tests/lsgm/test_lsgm_model.py",), k="relative_folder"),
    M("r12-L3", "src/tenfold/lsgm/train.py",
      "    check_inputs(run_dir, input_files({\"data\": c.data}), resume=True,",
      "    check_inputs(run_dir, input_files({\"training data\": c.data}), resume=True,",
      ("tests/lsgm/test_lsgm_model.py",), k="relative_folder"),
    M("r12-N4", "src/tenfold/nvit/api.py",
      "    check_inputs(run_dir, input_files({\"--model\": model, \"teacher\": tpath, \"data\": cfg.data,",
      "    check_inputs(run_dir, input_files({\"--model\": model, \"data\": cfg.data,",
      ("tests/nvit/test_bad_input.py",), k="changed_since"),
    M("r12-K1", "src/tenfold/kama/keypoints.py",
      "    return seen & (((P[..., 4, :] - P[..., 3, :]) * front).sum(-1) < 0)",
      "    return seen & (((P[..., 4, :] - P[..., 3, :]) * front).sum(-1) > 0)",
      ("tests/kama/test_verbs.py",), k="swapped_or_mirrored"),
    M("r12-K2", "src/tenfold/kama/articulate.py",  # (moved from kama/verbs.py into the library's fit, session 23)
      "    per_body = (residual.detach().cpu() * seen).sum(-1) / seen.sum(-1).clamp(min=1) * 1e3  # mm",
      "    per_body = (residual.detach().cpu() * seen).sum(-1) / seen.sum(-1).clamp(min=1)  # mm",
      ("tests/kama/test_verbs.py",), k="swapped_or_mirrored"),
    # ---- round 12, last (session 22): the Python-API and benchmark reviews
    M("r12-E1", "src/tenfold/core/engine.py",
      "                    grad_bad |= ~torch.isfinite(gnorm.to(grad_bad.device))",
      "                    pass",
      CORE_ENGINE, k="non_scalar"),
    M("r12-E2", "src/tenfold/core/engine.py",
      "                if sched is not None and not skipped:",
      "                if sched is not None:",
      CORE_ENGINE, k="fp16_steps"),
    M("r12-E3", "src/tenfold/core/engine.py",
      "                        if loss.numel() != 1 or not loss.requires_grad:",
      "                        if loss.numel() != 1:",
      CORE_ENGINE, k="non_scalar"),
    M("r12-L4", "src/tenfold/lsgm/train.py",
      "                 binary=c.binarize, levels=None if c.binarize else c.num_levels)",
      "                 binary=False, levels=None if c.binarize else c.num_levels)",
      ("tests/lsgm/test_lsgm_model.py",), k="in_memory"),
    M("r12-L5", "src/tenfold/lsgm/train.py",
      "    with torch.random.fork_rng(devices=devices):",
      "    with contextlib.nullcontext():",
      ("tests/lsgm/test_lsgm_model.py",), k="in_memory"),
    M("r12-L6", "src/tenfold/lsgm/data.py",
      "    if size is not None and h != size:",
      "    if False:",
      ("tests/lsgm/test_lsgm_model.py",), k="in_memory"),
    M("r12-B2", "benchmarks/common.py",
      "        payload[\"process_cpu_seconds\"] = round(_cpu_with_children() - (cpu0 or 0.0), 1)",
      "        payload[\"process_cpu_seconds\"] = round(_cpu_with_children(), 1)",
      ("tests/benchmarks/test_helpers.py",), k="same_span"),
    # ---- round 12, robustness review (session 22)
    M("r12-R1", "src/tenfold/core/io.py",
      "                    os.close(os.open(cand / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))",
      "                    pass",
      CORE_IO, k="never_overwrites"),
    M("r12-R2", "src/tenfold/cli.py",
      "        previous = signal.signal(signal.SIGTERM, _on_sigterm)",
      "        previous = None",
      ("tests/test_cli.py",), k="sigterm"),
    M("r12-R3", "src/tenfold/cli.py",
      "    except (MemoryError, RecursionError) as e:",
      "    except MemoryError as e:",
      ("tests/test_cli.py",), k="sigterm"),
    M("r12-R4", "src/tenfold/cli.py",
      "                or (p.is_file() and not p.is_symlink() and p.stat().st_size == 0) for p in entries):",
      "                for p in entries):",
      ("tests/test_cli.py",), k="sigterm"),
    M("r12-R5", "src/tenfold/nvit/api.py",
      "        if not 1 <= batch <= len(self.y):",
      "        if not 1 <= batch:",
      ("tests/nvit/test_bad_input.py",), k="batch_larger"),
    M("r12-R6", "src/tenfold/core/io.py",
      "        glob = re.search(r\"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\\w.]+)\", text)",
      "        glob = None",
      ("tests/core/test_models.py",), k="missing_or_bad"),
    M("r12-E4", "src/tenfold/core/engine.py",
      "        if not last_logged and step == steps and log_file.is_file():",
      "        if False:",
      CORE_ENGINE, k="finished_run_returns"),
    # round 13 (session 23): fixes and tests from the spec-conformance reviews
    M("r13-N1", "src/tenfold/nvit/config.py",
      '    lut_mlp: str = ",".join(["1"] + [str(128 * k) for k in range(1, 25)])',
      '    lut_mlp: str = "1,768,1536,2304,3072"',
      NVIT_PRUNE, k="lut_grid_is_the_references"),
    M("r13-K1", "src/tenfold/kama/articulate.py",
      '        warn_doubtful(X, c, out["residual"])',
      "        pass",
      KAMA_ARTICULATE, k="mirrored_and_shuffled"),
    M("r13-G1", "src/tenfold/gradinversion/attack.py",
      '            row["lr"] = lr_used',
      '            row["lr"] = opt.param_groups[0]["lr"]',
      GI_OBJECTIVE, k="logged_lr"),
    M("r13-L1", "src/tenfold/lsgm/ode.py",
      '    v = (torch.randint(0, 2, z0.shape, generator=generator, device="cpu").to(z0.dtype) * 2 - 1).to(z0.device)',
      "    v = torch.ones_like(z0)",
      ("tests/lsgm/test_lsgm_math.py",), k="gaussian"),
    M("r13-L2", "src/tenfold/lsgm/sde.py",
      "        wq = wp * w_ll(sde, t)",
      "        wq = wp * w_ll(sde, t) * 1.02",
      ("tests/lsgm/test_lsgm_math.py",), k="cross_entropy or unbiased"),
    M("r13-G2", "src/tenfold/gradinversion/attack.py",
      "            cur = [t - local_lr * gi for t, gi in zip(cur, g)]",
      "            cur = [t - local_lr * gi for t, gi in zip(theta, g)]",
      GI_ATTACK, k="sgd_client"),
    M("r13-K2", "src/tenfold/kama/articulate.py",
      "    whole = swing_rotation(chain, t_d)",  # (the limbs one batch since session 25: u0 + s0 = J_dist - J_prox)
      "    whole = swing_rotation((Gp @ (u0 + s0)[..., None])[..., 0], t_d)",
      KAMA_ARTICULATE, k="hidden_elbow"),
    M("r13-K3", "src/tenfold/kama/articulate.py",
      "    root_ok = (seen[:, 3] & (seen[:, 1] | seen[:, 2]) & ((seen[:, ids]).sum(-1) >= 3)) | seen[:, :3].all(-1)",
      "    root_ok = seen[:, 3] & (seen[:, 1] | seen[:, 2]) & ((seen[:, ids]).sum(-1) >= 3)",
      KAMA_ARTICULATE, k="pelvis_and_both_hips"),
    M("r13-K4", "src/tenfold/kama/articulate.py",
      "DOUBTFUL_MM = 100.0",
      "DOUBTFUL_MM = 50.0",
      KAMA_ARTICULATE, k="mirrored_and_shuffled"),
    M("r13-K5", "src/tenfold/kama/verbs.py",
      "        first = _fit(cfg, model, X, c, refine=False, betas=None, warn=False)",
      "        first = _fit(cfg, model, X, c, refine=False, betas=None)",
      ("tests/kama/test_verbs.py",), k="warns_of_its_reported"),
    M("r13-N2", "src/tenfold/nvit/api.py",
      "    if frozen and not resume:",
      "    if False:",
      NVIT_PRUNE, k="never_pruned"),
    # round 14 (session 24): the LSGM training-length study on a GPU, one model per process joined by --merge
    M("r14-L1", "benchmarks/lsgm_time_scale.py",
      '            row[f"nfe_ratio_data_over_lsgm_{key}"] = (row["data_space"][key]["nfe_median"]',
      '            row[f"nfe_ratio_data_over_lsgm_{key}"] = (row["data_space"][key]["nfe_batches"][0]',
      ("tests/benchmarks/test_helpers.py",), k="time_scale_merge"),
    M("r14-L2", "benchmarks/lsgm_time_scale.py",
      "        if any(f.get(k) != figs[0].get(k) for k in same):",
      "        if False:",
      ("tests/benchmarks/test_helpers.py",), k="time_scale_merge"),
    M("r14-L3", "benchmarks/lsgm_time_scale.py",
      "    if len(models) != len(set(models)):",
      "    if False:",
      ("tests/benchmarks/test_helpers.py",), k="time_scale_merge"),
    M("r14-L4", "benchmarks/lsgm_time_scale.py",
      "        if len({tuple(v) for v in tols.values()}) > 1:",
      "        if False:",
      ("tests/benchmarks/test_helpers.py",), k="time_scale_merge"),
    # ---- round 15 (session 25): kama's limbs and ankles as one batch of rows (limb-major) instead of a loop
    M("r15-K1", "src/tenfold/kama/articulate.py",
      "        return t[:, idx].transpose(0, 1).reshape(NL * B, *t.shape[2:])",
      "        return t[:, idx].reshape(NL * B, *t.shape[2:])",  # body-major rows: limbs mixed up at B > 1
      KAMA_ARTICULATE),
    M("r15-K2", "src/tenfold/kama/articulate.py",
      "        a2s = torch.cat(parts, 0)",
      "        pass",  # the foot's reference for a nearly straight leg dropped
      KAMA_ARTICULATE),
    M("r15-K3", "src/tenfold/kama/articulate.py",
      "    G[ankles[0]], G[ankles[1]] = G_ank[:B], G_ank[B:]",
      "    G[ankles[0]], G[ankles[1]] = G_ank[B:], G_ank[:B]",
      KAMA_ARTICULATE),
    M("r15-K4", "src/tenfold/kama/articulate.py",
      "    back = near & ((n * a2s).sum(-1) < 0) & leg",
      "    back = near & ((n * a2s).sum(-1) < 0)",  # the near-straight rule on the arms too
      KAMA_ARTICULATE),
    M("r15-K5", "src/tenfold/kama/articulate.py",
      "    Gk = torch.cat([G[k] for k in knees])",
      "    Gk = torch.cat([G[k] for k in knees[::-1]])",
      KAMA_ARTICULATE),
    # ---- round 15 (session 25): GradInversion's BN prior added after the sign (bn_after_sign)
    M("r15-G1", "src/tenfold/gradinversion/attack.py",
      "                (P[0].grad if P else X.grad).add_(d_bn, alpha=self.alpha_bn)",
      "                pass",
      GI_ATTACK, k="bn_prior_after_the_sign"),
    M("r15-G2", "src/tenfold/gradinversion/attack.py",
      "                        d_bn[g] = gbn * (math.sqrt(gbn.numel()) / gbn.norm().clamp_min(1e-30))",
      "                        d_bn[g] = gbn / gbn.norm().clamp_min(1e-30)",
      GI_ATTACK, k="bn_prior_after_the_sign"),
    M("r15-G3", "src/tenfold/gradinversion/attack.py",
      "            bn_post = self.bn_after_sign and self.signed and recorder is not None",
      "            bn_post = False",
      GI_ATTACK, k="bn_prior_after_the_sign"),
    M("r15-K6", "src/tenfold/kama/articulate.py",
      "        xd = fwAD.make_dual(x.repeat_interleave(P, 0), eye.repeat(B, 1))",
      "        xd = fwAD.make_dual(x.repeat_interleave(P, 0), eye.repeat_interleave(B, 0))",
      KAMA_ARTICULATE, k="dual_number"),
    M("r15-K7", "src/tenfold/kama/articulate.py",
      "    return J.reshape(B, P, -1).transpose(1, 2)",
      "    return J.reshape(B, -1, P)",
      KAMA_ARTICULATE, k="dual_number"),
    # ---- round 15, after the review of session 25's diff
    M("r15-K8", "src/tenfold/kama/articulate.py",
      "        ref = rows(twist_ref.to(dt), list(range(NL)))",
      "        ref = twist_ref.to(dt).reshape(NL * B, 3)",  # body-major: each limb takes another's reference
      KAMA_ARTICULATE, k="twist_references"),
    M("r15-K9", "src/tenfold/kama/articulate.py",
      "    degenerate = (straight & both).view(NL, B).T.contiguous()",
      "    degenerate = (straight & both).view(B, NL)",
      KAMA_ARTICULATE, k="twist_references"),
    M("r15-K10", "src/tenfold/kama/articulate.py",
      "    seen_a = torch.cat([seen[:, q] for q in pts])",
      "    seen_a = torch.cat([seen[:, q] for q in pts[::-1]])",
      KAMA_ARTICULATE, k="one_foot_seen"),
    M("r15-K11", "src/tenfold/kama/articulate.py",
      "    if torch.is_inference_mode_enabled():",
      "    if False:",
      KAMA_ARTICULATE, k="inference_mode"),
    M("r15-G4", "src/tenfold/gradinversion/attack.py",
      "                (P[0].grad if P else X.grad).add_(d_bn, alpha=self.alpha_bn)",
      "                X.grad.add_(d_bn, alpha=self.alpha_bn)",  # a pyramid has pushed X.grad to its levels already
      GI_ATTACK, k="bn_prior_after_the_sign"),
    M("r15-G5", "src/tenfold/gradinversion/attack.py",
      "                        d_bn[g] = gbn * (math.sqrt(gbn.numel()) / gbn.norm().clamp_min(1e-30))",
      "                        d_bn[0] = gbn * (math.sqrt(gbn.numel()) / gbn.norm().clamp_min(1e-30))",
      GI_ATTACK, k="bn_prior_after_the_sign"),
    M("r15-G6", "src/tenfold/gradinversion/attack.py",
      "                parts.pop(\"bn_graph\", None)",
      "                loss = loss + self.alpha_bn * parts.pop(\"bn_graph\", 0.0)",
      GI_ATTACK, k="bn_after_sign_objective"),
    M("r15-G7", "src/tenfold/gradinversion/attack.py",
      "        if self.bn_after_sign and not use_bn:",
      "        if False:",
      GI_ATTACK, k="bn_after_sign_objective"),
    # session 26: refine_lm's Jacobian from the keypoints' alone (a constant block for the priors), and keypoints
    # computed without constant operands (forward-mode AD's slow Python path)
    M("r16-K1", "src/tenfold/kama/articulate.py",
      "    lin[nb:nb + 69, 3:72] = sp * eye(69)",
      "    lin[nb:nb + 69, 0:69] = sp * eye(69)",  # the default w_pose is 0: only a weighted prior sees it
      KAMA_ARTICULATE, k="lm_jacobian"),
    M("r16-K2", "src/tenfold/kama/articulate.py",
      "        return torch.cat([sc_rows * Jk, lin.expand(x.shape[0], -1, -1)], 1)",
      "        return torch.cat([Jk, lin.expand(x.shape[0], -1, -1)], 1)",
      KAMA_ARTICULATE),
    M("r16-K3", "src/tenfold/kama/articulate.py",
      '                warnings.filterwarnings("ignore", r".*torch\\.jit\\.script", FutureWarning)',
      "                pass",
      KAMA_ARTICULATE, k="fast_forward_ad"),
    M("r16-K4", "src/tenfold/kama/keypoints.py",
      "    t = F.pad(aa, (0, 1), value=1e-8).pow(2).sum(-1, keepdim=True).sqrt()",
      "    t = (aa * aa).sum(-1, keepdim=True).add(1e-16).sqrt()",  # the same t, by an add of a constant
      KAMA_ARTICULATE, k="fast_forward_ad"),
    M("r16-K5", "src/tenfold/kama/keypoints.py",
      "(self.T - (rest @ self.Pd).reshape(-1, 3))[..., None]",
      "self.T[..., None]",
      KAMA_BODY),
    M("r16-K6", "src/tenfold/kama/keypoints.py",
      "    return torch.diag_embed(c.expand(k.shape)) + torch.sin(t)[..., None] * K + (1 - c)[..., None] * kkT",
      "    return torch.diag_embed(c.expand(k.shape)) + torch.sin(t)[..., None] * K + (1 - c)[..., None] * K @ K",
      KAMA_BODY),
]


# ---------------------------------------------------------------------------------------------- runner
def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def apply(text: str, mutant: M) -> tuple[str | None, str]:
    """The mutated text, or ``(None, reason)`` when an ``old`` text does not occur exactly once."""
    for old, new in mutant.pairs():
        n = text.count(old)
        if n != 1:
            return None, f"old text occurs {n} times in {mutant.path}: {old[:80]!r}"
        text = text.replace(old, new)
    return text, ""


def check_stale(mutant: M) -> str | None:
    """Why the entry is stale against the working tree (at HEAD unless dirty), or None."""
    p = ROOT / mutant.path
    if not p.is_file():
        return f"no file {mutant.path}"
    mutated, why = apply(p.read_text(), mutant)
    return why if mutated is None else None


def make_copy(base: Path, files: list[str]) -> Path:
    """A copy of the tracked files under ``base/<repo name>`` with ``base/shared`` -> the real ``../shared``."""
    dst = base / ROOT.name
    for f in files:
        src = ROOT / f
        if not src.is_file():  # deleted in the working tree, or a submodule
            continue
        out = dst / f
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
    shared = (ROOT / ".." / "shared").resolve()
    if shared.exists():
        (base / "shared").symlink_to(shared, target_is_directory=True)
    return dst


def run_pytest(copy: Path, selection: list[str], timeout: float) -> tuple[int | None, float, str]:
    """(return code or None on timeout, seconds, a short excerpt of the output)."""
    env = dict(os.environ, PYTHONPATH=f"{copy / 'src'}{os.pathsep}{copy}", OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")  # no .pyc: a mutant's bytecode can never outlive it
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    dt = time.monotonic() - t0
    lines = (out or "").strip().splitlines()
    first = next((ln for ln in lines if ln.startswith(("FAILED", "ERROR"))), "")
    return rc, dt, (first + " | " if first else "") + (lines[-1] if lines else "")


@dataclass
class Row:
    id: str
    path: str
    status: str  # killed | survived | timeout | stale | error
    seconds: float
    detail: str
    tests: str
    equivalent: str | None = None

    def as_json(self) -> dict[str, object]:
        d: dict[str, object] = {"id": self.id, "path": self.path, "status": self.status,
                                "seconds": round(self.seconds, 1), "tests": self.tests, "detail": self.detail}
        if self.equivalent:
            d["equivalent"] = self.equivalent
        return d


def classify(rc: int | None) -> str:
    if rc is None:
        return "timeout"
    if rc == 0:
        return "survived"
    if rc in (1, 2, 3):  # test failures, a collection/import error the mutant caused, an internal error
        return "killed"
    return "error"  # 4: usage error, 5: no tests collected: the selection is wrong, not the code


def totals(rows: list[Row], n_selected: int) -> dict[str, int]:
    eq = [r for r in rows if r.equivalent]
    ne = [r for r in rows if not r.equivalent]
    return {
        "mutants": n_selected,
        "run": len(rows),
        "killed": sum(r.status in ("killed", "timeout") for r in rows),
        "survived": sum(r.status == "survived" for r in ne),
        "equivalent": sum(r.status == "survived" for r in eq),
        "equivalent_killed": sum(r.status in ("killed", "timeout") for r in eq),
        "stale": sum(r.status == "stale" for r in rows),
        "timeouts": sum(r.status == "timeout" for r in rows),
        "errors": sum(r.status == "error" for r in rows),
    }


def write(out: Path, meta: dict[str, object], rows: list[Row], n_selected: int, partial: bool) -> dict[str, int]:
    order = {m.id: i for i, m in enumerate(MUTANTS)}
    tot = totals(rows, n_selected)
    data = {**meta, "partial": partial, "totals": tot,
            "rows": [r.as_json() for r in sorted(rows, key=lambda r: order[r.id])]}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, out)
    return tot


@contextmanager
def workers(n: int, files: list[str]) -> Iterator[queue.Queue[Path]]:
    """A queue of ``n`` private copies of the repository (removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="mutation_audit_"))
    pool: queue.Queue[Path] = queue.Queue()
    try:
        for i in range(n):
            base = tmp / f"w{i}"
            base.mkdir()
            pool.put(make_copy(base, files))
        yield pool
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated ids (default: every entry)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own copy")
    ap.add_argument("--out", default=str(ROOT / "tools" / "mutation_audit.json"), help="the JSON result")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per pytest run (a timeout kills)")
    ap.add_argument("--no-baseline", action="store_true", help="skip running each selection unmutated first")
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    a = ap.parse_args(argv)

    ids = [i for i in a.only.split(",") if i]
    known = {m.id for m in MUTANTS}
    if len(known) != len(MUTANTS):
        raise SystemExit("duplicate ids in MUTANTS")
    if unknown := [i for i in ids if i not in known]:
        raise SystemExit(f"unknown ids: {', '.join(unknown)}")
    selected = [m for m in MUTANTS if not ids or m.id in ids]
    if a.list:
        for m in selected:
            print(f"{m.id:9s} {m.path}  {shlex.join(m.selection())}" + ("  [equivalent]" if m.equivalent else ""))
        return 0

    t_start = time.monotonic()
    meta: dict[str, object] = {
        "command": shlex.join(["python", "tools/mutation_audit.py", *(sys.argv[1:] if argv is None else argv)]),
        "commit": git_commit(),
        "pytest": "python -m pytest -x -q -p no:cacheprovider <tests> [-k K]",
        "timeout_s": a.timeout,
        "jobs": a.jobs,
    }
    out = Path(a.out)
    rows: list[Row] = []
    lock = threading.Lock()

    def record(row: Row) -> None:
        with lock:
            rows.append(row)
            write(out, {**meta, "wall_s": round(time.monotonic() - t_start, 1)}, rows, len(selected), True)
            print(f"{row.id:9s} {row.status:9s} {row.seconds:6.1f}s  {row.detail[:110]}", flush=True)

    runnable: list[M] = []
    for m in selected:
        why = check_stale(m)
        if why:
            record(Row(m.id, m.path, "stale", 0.0, why, shlex.join(m.selection()), m.equivalent))
        else:
            runnable.append(m)

    files = git("ls-files", "-z").split("\0")
    files = [f for f in files if f]
    with ThreadPoolExecutor(max(1, a.jobs)) as ex, workers(max(1, a.jobs), files) as pool:
        bad_baseline: dict[tuple[str, ...], str] = {}
        if not a.no_baseline:
            sels = sorted({tuple(m.selection()) for m in runnable})

            def baseline(sel: tuple[str, ...]) -> tuple[tuple[str, ...], int | None, float, str]:
                copy = pool.get()
                try:
                    return (sel, *run_pytest(copy, list(sel), a.timeout))
                finally:
                    pool.put(copy)

            for fut in as_completed([ex.submit(baseline, s) for s in sels]):
                sel, rc, dt, detail = fut.result()
                print(f"baseline  {'ok' if rc == 0 else 'FAILED':9s} {dt:6.1f}s  {shlex.join(sel)}", flush=True)
                if rc != 0:
                    bad_baseline[sel] = f"baseline rc={rc}: {detail}"
            meta["baseline_failures"] = {shlex.join(s): d for s, d in bad_baseline.items()}

        def one(m: M) -> Row:
            sel = m.selection()
            if tuple(sel) in bad_baseline:
                return Row(m.id, m.path, "error", 0.0, bad_baseline[tuple(sel)], shlex.join(sel), m.equivalent)
            copy = pool.get()
            target = copy / m.path
            original = target.read_text()
            try:
                mutated, why = apply(original, m)
                if mutated is None:
                    return Row(m.id, m.path, "stale", 0.0, why, shlex.join(sel), m.equivalent)
                target.write_text(mutated)
                rc, dt, detail = run_pytest(copy, sel, a.timeout)
                return Row(m.id, m.path, classify(rc), dt, f"rc={rc} {detail}", shlex.join(sel), m.equivalent)
            finally:
                target.write_text(original)
                pool.put(copy)

        for fut in as_completed([ex.submit(one, m) for m in runnable]):
            record(fut.result())

    wall = time.monotonic() - t_start
    tot = write(out, {**meta, "wall_s": round(wall, 1)}, rows, len(selected), False)
    print(json.dumps(tot), f"wall {wall / 60:.1f} min -> {out}")
    for r in rows:
        if r.status in ("survived", "stale", "error") and not (r.status == "survived" and r.equivalent):
            m = next(x for x in MUTANTS if x.id == r.id)
            print(f"  {r.status.upper()}: {r.id} {r.path}: {m.pairs()!r}")
    return 1 if tot["survived"] or tot["stale"] or tot["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `--list | head`: the reader left; no traceback
        os._exit(0)
