"""Small test networks shared by the gradinversion tests."""

from __future__ import annotations

import torch
from torch import nn


def two_bn_net(seed: int, var: tuple[float, float], bn_weight: tuple[float, float] | None = None) -> nn.Module:
    """conv-BN-ReLU twice, pooled, linear to 5 classes, in eval mode; every BN layer gets running means in
    [-0.5, 0.5], running variances in ``var`` and (if given) affine weights in ``bn_weight``, so no statistic is the
    identity's and a formula that mixes them up fails."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(*var)
                if bn_weight is not None:
                    m.weight.uniform_(*bn_weight)
    return net.eval()
