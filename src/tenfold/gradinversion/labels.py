"""Step 1 of GradInversion: restore the batch's labels from the last FC layer's weight gradient.

With ``z = W h + b`` and cross-entropy averaged over the batch,
``dL/dW_{c,j} = (1/B) sum_i (p_ic - 1[y_i = c]) h_ij``. When ``h >= 0`` (post-ReLU, post-pool), a
class absent from the batch has a row with no negative entry, while a present class usually has
negative ones. Yin et al. (2021, Sec. 3.1) take the B rows with the most negative minimum.
"""

from __future__ import annotations

from typing import Literal

import torch

from tenfold.core.io import ConfigError, InputError, check_tensor

LabelRule = Literal["yin", "rowsum", "bias", "idlg"]
RULES: tuple[str, ...] = ("yin", "rowsum", "bias", "idlg")


def recover_labels(grad_fc_weight: torch.Tensor, B: int, rule: str = "yin",
                   grad_fc_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Labels ``(B,)`` (sorted; their order cannot be identified) from the FC weight gradient ``(C, d)``.

    Rules: ``yin`` m_c = min_j dW_{c,j}, the B smallest (Yin et al. 2021, assumes unique labels, B <= C);
    ``rowsum`` the B most negative row sums; ``bias`` classes with a negative bias gradient (most
    negative first, padded with the most negative remaining ones, which repeats none); ``idlg``
    B = 1 only, the most negative row sum (Zhao et al. 2020). For B > C (labels must repeat) the
    extra labels repeat the strongest classes in order.
    """
    check_tensor(grad_fc_weight, "grad_fc_weight", ("C", "d"))
    C = grad_fc_weight.shape[0]
    if B < 1:
        raise InputError(f"batch size B must be >= 1, got {B}")
    g = grad_fc_weight.detach()
    if rule == "yin":
        score = g.amin(dim=1)  # m_c, (C,)
    elif rule == "rowsum":
        score = g.sum(dim=1)  # (C,)
    elif rule == "idlg":
        if B != 1:
            raise ConfigError(f"label rule 'idlg' works for batch size 1 only, got B={B}; use 'yin' or 'rowsum'")
        score = g.sum(dim=1)
    elif rule == "bias":
        if grad_fc_bias is None:
            raise ConfigError("label rule 'bias' needs the FC bias gradient; the last layer has no bias")
        check_tensor(grad_fc_bias, "grad_fc_bias", (C,))
        score = grad_fc_bias.detach()
    else:
        raise ConfigError(f"unknown label rule '{rule}'; choose one of: {', '.join(RULES)}")
    order = torch.argsort(score)  # ascending: most negative first
    reps = -(-B // C)  # ceil(B / C): labels must repeat when B > C
    return order.repeat(reps)[:B].sort().values


def label_accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Multiset overlap ``|pred ∩ true| / B`` of two label vectors (order-free, repeats counted)."""
    check_tensor(pred, "pred", ("B",))
    check_tensor(true, "true", tuple(pred.shape))
    n = int(max(int(pred.max()), int(true.max())) + 1) if pred.numel() else 0
    hits = torch.minimum(torch.bincount(pred.long(), minlength=n), torch.bincount(true.long(), minlength=n))
    return float(hits.sum()) / max(1, pred.numel())
