"""Step 1 of GradInversion: restore the batch's labels from the last FC layer's weight gradient.

With ``z = W h + b`` and cross-entropy averaged over the batch,
``dL/dW_{c,j} = (1/B) sum_i (p_ic - 1[y_i = c]) h_ij``. When ``h >= 0`` (post-ReLU, post-pool), a
class absent from the batch has a row with no negative entry, while a present class usually has
negative ones. Yin et al. (2021, Sec. 3.1) take the B rows with the most negative minimum.

Ties are broken by the row sum. In float32 a very confident prediction rounds ``p_y`` to exactly 1, so the true
class's row vanishes: its minimum is 0, the same as every absent class's whose features include a zero, while its
sum (0) is still below theirs (``p_c sum_j h_j > 0``). Without the tie-break 4 of the benchmark's 200 batch-1
images lost their label on the trained ResNet-20 (results/gradinversion_labels_200.json, float32 0.98 before, 1.00
now; the test names five bundled images of this kind). Nothing helps when another class's probability underflows
to 0 as well: the gradient then cannot tell the two apart.

Yin's rule is certain only about rows with a negative entry; when fewer than B rows have one, it fills the batch
with the rows whose minimum is smallest, i.e. the classes the batch predicts *least* (an absent class's row is
``(1/B) sum_i p_ic h_i``), which are absent. A present class without a negative entry must carry a large mass
(``sum_i p_ic h_i >= h_k`` elementwise, so ``pbar_c`` is large), so ``yin_mass`` (ours) keeps Yin's certain rows,
then (at B = 1) vanished all-zero rows, then the rest by *largest* row sum. On cifar10-train batches (``python -m
benchmarks.gradinversion --labels-on-tuning-pool``, 100 per cell, results/gradinversion_labels_pool.json) it lifts
unique batches of 4 / 8 from 0.90 / 0.90 to 1.00 / 1.00 on a BN-calibrated fresh ResNet-20 and from 0.73 / 0.81 to
0.80 / 0.88 on the trained one, and it is below Yin's order in no cell (unique and repeated labels, B = 1 to 32;
with 90 % of the gradient pruned, ``--label-prune-ratio 0.9``, -0.003 to +0.07 per cell).

Those rules return B *distinct* labels (for B <= C). Batches with repeated labels need counts: the
bias gradient is exactly ``db_c = pbar_c - n_c / B`` (``pbar``: the batch's mean softmax, ``n_c``: the
class count), so ``n_c = B (pbar_c - db_c)``; the ``count`` rule estimates ``pbar`` by a prior (uniform
by default, as for a fresh or calibrated net) and rounds the counts greedily. A class with
``db_c < 0`` is present for certain (``n_c / B = pbar_c - db_c > 0``), whatever the prior.

The uniform prior is right for a fresh network and wrong for a trained one, which errs little: there an absent
class reads ``db_c = pbar_c``, small but positive, so ``count`` gives it about the ``B / C`` share of a class the
batch predicts uniformly, and fills the batch with the classes the batch predicts *least* (Yin's padding mistake
again). ``count_mass`` (ours) keeps ``count``'s greedy but changes who competes:
- sure: every class with a negative weight-gradient entry (Yin's certain rows, h >= 0) or a negative ``db_c``;
- each remaining label goes to the sure class with the largest estimated count left, ``B (1/C - db_c) -
  assigned_c`` (a repeat), unless an unused class's estimate ``B (1/C - db_c)`` is at least as large; then to the
  unused class with the largest row sum (``yin_mass``'s fill: a present class without a negative entry carries a
  large mass);
- B = 1 is ``yin_mass`` (it also reads a float32-vanished row).
On a fresh network, where absent classes read ``db_c ~ 1/C``, repeats win; on a trained one, new classes do, and
the one chosen is the most predicted. Chosen on the tuning pool (``--labels-on-tuning-pool``, session 19) for
batches whose labels can repeat, as random batches of a client's data do (8 draws from 10 classes repeat one with
probability 0.98); the README's "Label rules" has the figures.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from tenfold.core.io import ConfigError, InputError, check_tensor

LabelRule = Literal["yin", "yin_mass", "rowsum", "bias", "idlg", "count", "count_mass"]
RULES: tuple[str, ...] = ("yin", "yin_mass", "rowsum", "bias", "idlg", "count", "count_mass")
# rules that assume h >= 0 (ReLU, then pooling)
NONNEGATIVE_FEATURE_RULES: tuple[str, ...] = ("yin", "yin_mass", "count_mass")
DISTINCT_RULES: tuple[str, ...] = ("yin", "yin_mass", "rowsum", "bias")  # B distinct labels (for B <= classes)


def count_labels(grad_fc_bias: torch.Tensor, B: int, prior: torch.Tensor | None = None) -> torch.Tensor:
    """Labels ``(B,)`` (sorted, repeats allowed) from the FC bias gradient ``(C,)`` of a mean cross-entropy.

    Every class with ``db_c < 0`` gets one label (exact: it is in the batch); the rest go one at a time to
    the class with the largest estimated count left, ``B (prior_c - db_c) - assigned_c`` (a D'Hondt-style
    greedy rounding of ``n_c = B (pbar_c - db_c)``). ``prior`` ``(C,)``: the expected mean softmax of the
    batch (uniform 1/C when None), e.g. the model's mean prediction on auxiliary data."""
    check_tensor(grad_fc_bias, "grad_fc_bias", ("C",))
    C = grad_fc_bias.shape[0]
    if B < 1:
        raise InputError(f"batch size B must be >= 1, got {B}")
    db = grad_fc_bias.detach().double().cpu()
    if prior is None:
        pi = torch.full((C,), 1.0 / C, dtype=torch.float64, device="cpu")
    else:
        check_tensor(prior, "prior", (C,))
        pi = prior.detach().double().cpu()
        if bool((pi < 0).any()) or abs(float(pi.sum()) - 1.0) > 1e-3:
            raise InputError(f"prior must be a probability vector over the {C} classes (>= 0, sums to 1)")
    est = B * (pi - db)  # estimated counts n_c
    present = torch.nonzero(db < 0).flatten()
    present = present[torch.argsort(db[present])][:B]  # most negative first, at most B
    counts = torch.zeros(C, dtype=torch.long, device="cpu")
    counts[present] = 1
    for _ in range(B - int(counts.sum())):
        counts[int(torch.argmax(est - counts.double()))] += 1
    return torch.repeat_interleave(torch.arange(C, device="cpu"), counts)


def count_mass_labels(grad_fc_weight: torch.Tensor, grad_fc_bias: torch.Tensor, B: int) -> torch.Tensor:
    """Labels ``(B,)`` (sorted, repeats allowed) by the ``count_mass`` rule (the module docstring): ``count``'s
    estimates ``B (1/C - db_c)`` decide between a repeat and a new class, the row sums decide which new class."""
    check_tensor(grad_fc_weight, "grad_fc_weight", ("C", "d"))
    C = grad_fc_weight.shape[0]
    check_tensor(grad_fc_bias, "grad_fc_bias", (C,))
    if B < 1:
        raise InputError(f"batch size B must be >= 1, got {B}")
    if B == 1:
        return recover_labels(grad_fc_weight, 1, "yin_mass").cpu()
    W, db = grad_fc_weight.detach().double().cpu(), grad_fc_bias.detach().double().cpu()
    m, s = W.amin(dim=1), W.sum(dim=1)
    idx = torch.arange(C)
    by_row, by_bias = idx[m < 0], idx[(m >= 0) & (db < 0)]  # certain rows: Yin's first (most negative), then db's
    sure = torch.cat([by_row[torch.argsort(m[by_row], stable=True)], by_bias[torch.argsort(db[by_bias], stable=True)]])
    counts = torch.zeros(C, dtype=torch.long)
    counts[sure[:B]] = 1
    est = B * (1.0 / C - db)  # count's estimated counts, uniform prior
    for _ in range(B - int(counts.sum())):
        used = counts > 0
        repeat = (est - counts.double()).masked_fill(~used, -math.inf)
        fresh = est.masked_fill(used, -math.inf)
        if bool((~used).any()) and float(fresh.max()) >= float(repeat.max()):
            counts[int(torch.argmax(s.masked_fill(used, -math.inf)))] += 1  # the unused class with the most mass
        else:
            counts[int(torch.argmax(repeat))] += 1
    return torch.repeat_interleave(idx, counts)


def recover_labels(grad_fc_weight: torch.Tensor, B: int, rule: str = "yin",
                   grad_fc_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Labels ``(B,)`` (sorted; their order cannot be identified) from the FC weight gradient ``(C, d)``.

    Rules: ``yin`` m_c = min_j dW_{c,j}, the B smallest, ties by row sum (Yin et al. 2021, assumes unique
    labels, B <= C); ``yin_mass`` the rows with m_c < 0 (most negative first), then (B = 1) all-zero rows,
    then the rest by largest row sum (ours, see the module docstring);
    ``rowsum`` the B most negative row sums; ``bias`` classes with a negative bias gradient (most
    negative first, padded with the most negative remaining ones, which repeats none); ``idlg``
    B = 1 only, the most negative row sum (Zhao et al. 2020); ``count`` label counts from the bias
    gradient (:func:`count_labels`, uniform prior; repeats labels, for batches that share classes); ``count_mass``
    ``count``'s counts with ``yin_mass``'s certain rows and fill (:func:`count_mass_labels`, ours; the rule for
    batches whose labels may repeat).
    For B > C the other rules repeat the strongest classes in order.
    """
    check_tensor(grad_fc_weight, "grad_fc_weight", ("C", "d"))
    C = grad_fc_weight.shape[0]
    if B < 1:
        raise InputError(f"batch size B must be >= 1, got {B}")
    g = grad_fc_weight.detach()
    tie = None  # secondary key, ascending
    if rule == "yin":
        score, tie = g.amin(dim=1), g.sum(dim=1)  # m_c, (C,); ties (vanished rows in float32) by row sum
    elif rule == "yin_mass":
        m, s = g.amin(dim=1), g.sum(dim=1)
        neg = m < 0
        # at B = 1 the present row is (p - 1) h <= 0, so without a negative entry it must have vanished (all zero);
        # at B >= 2 an all-zero row is mostly a pruned one (a defence), ranked by its mass (0) with the rest
        zero = (g == 0).all(dim=1) & ~neg if B == 1 else torch.zeros_like(neg)
        idx = torch.arange(C, device=g.device)
        sure, rest = idx[neg], idx[~neg & ~zero]
        order = torch.cat([sure[torch.argsort(m[sure], stable=True)], idx[zero],
                           rest[torch.argsort(s[rest], descending=True, stable=True)]])
        return order.repeat(-(-B // C))[:B].sort().values
    elif rule == "rowsum":
        score = g.sum(dim=1)  # (C,)
    elif rule == "idlg":
        if B != 1:
            raise ConfigError(f"label rule 'idlg' works for batch size 1 only, got B={B}; use 'yin' or 'rowsum'")
        score = g.sum(dim=1)
    elif rule in ("bias", "count", "count_mass"):
        if grad_fc_bias is None:
            raise ConfigError(f"label rule '{rule}' needs the FC bias gradient; the last layer has no trainable bias "
                              "(none, or frozen)")
        check_tensor(grad_fc_bias, "grad_fc_bias", (C,))
        if rule == "count":
            return count_labels(grad_fc_bias, B)
        if rule == "count_mass":
            return count_mass_labels(g, grad_fc_bias, B)
        score = grad_fc_bias.detach()
    else:
        raise ConfigError(f"unknown label rule '{rule}'; choose one of: {', '.join(RULES)}")
    order = torch.arange(C, device=score.device)
    if tie is not None:
        order = torch.argsort(tie, stable=True)
    order = order[torch.argsort(score[order], stable=True)]  # ascending: most negative first
    reps = -(-B // C)  # ceil(B / C): labels must repeat when B > C
    return order.repeat(reps)[:B].sort().values


def label_accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Multiset overlap ``|pred ∩ true| / B`` of two label vectors (order-free, repeats counted)."""
    check_tensor(pred, "pred", ("B",))
    check_tensor(true, "true", tuple(pred.shape))
    n = int(max(int(pred.max()), int(true.max())) + 1) if pred.numel() else 0
    hits = torch.minimum(torch.bincount(pred.long(), minlength=n), torch.bincount(true.long(), minlength=n))
    return float(hits.sum()) / max(1, pred.numel())
