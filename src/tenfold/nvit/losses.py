"""Losses and the light augmentation NViT's prune and fine-tune loops use.

The paper's loss (spec §2) is ``1e5 * KL(teacher || student, T)`` (element-mean reduction, hence
the large coefficient) plus the DeiT loss (CE with label smoothing; the RegNetY hard-distillation
term is left out here: no RegNet teacher exists offline, and tenfold's ViT has no dist token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel translation (zero padding) and horizontal flip per image: ``(B, C, H, W)``.

    The standard CIFAR augmentation; drawn from torch's global RNG so the engine's resume restores it."""
    B, C, H, W = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (B,))
        dx = torch.randint(0, 2 * pad + 1, (B,))
        rows = (dy[:, None] + torch.arange(H)[None]).to(x.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(W)[None]).to(x.device)  # (B, W)
        bi = torch.arange(B, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
    flip = (torch.rand(B) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` with PyTorch's element-mean reduction (the reference's
    form, which is why its coefficient is 1e5): ``(B, K), (B, K) -> ()``."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).mean()  # (B, K) -> (): mean over B*K elements


def nvit_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, *,
              kd_coef: float, temperature: float, ce_coef: float = 1.0,
              label_smoothing: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``kd_coef * KL(T) + ce_coef * CE_ls`` (spec §2, loss while pruning / fine-tuning); returns the
    loss and its parts. ``teacher_logits=None`` drops the KD term (before the first prune step)."""
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    parts = {"ce": ce.detach()}
    loss = ce_coef * ce
    if teacher_logits is not None and kd_coef > 0:
        kl = kd_kl(student_logits, teacher_logits, temperature)
        parts["kd"] = kl.detach()
        loss = loss + kd_coef * kl
    return loss, parts
