"""``GradInversion.objective``: the attack's single-seed objective at given images, the diagnostic that tells a
search-limited attack (the truth scores lower than the output) from an objective-limited one. Known answers at
the truth, agreement with the loop's own first logged loss, and one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tenfold.core.io import InputError
from tenfold.gradinversion import PRESETS, build, simulate_client
from tenfold.gradinversion.attack import l2_prior, total_variation

torch.set_num_threads(1)
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def _problem(dtype: torch.dtype = torch.float64) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).to(dtype)
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 1.5)
    net.input_size = (3, 8, 8)
    net.eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=dtype)
    y = torch.tensor([3, 1])
    return net, simulate_client(net, x, y), x, y


@pytest.mark.parametrize("distance", ["cosine", "l2", "sq_l2"])
def test_truth_scores_its_priors_alone(distance: str) -> None:
    """At the true batch the gradient term is zero (float64) and the total is exactly the weighted priors of the
    truth in normalised space; any other image scores a positive gradient term."""
    net, g, x, y = _problem()
    cfg = dataclasses.replace(PRESETS["cpu"], grad_distance=distance, labels="oracle")
    inv = build(cfg)
    o = inv.objective(net, g, x, y, mean=MEAN, std=STD)
    z = (x - torch.tensor(MEAN, dtype=x.dtype).view(1, 3, 1, 1)) / torch.tensor(STD, dtype=x.dtype).view(1, 3, 1, 1)
    assert abs(o["grad"]) < 1e-9
    assert o["tv"] == pytest.approx(float(total_variation(z)), rel=1e-12)
    assert o["total"] == pytest.approx(cfg.alpha_tv * float(total_variation(z)) + cfg.alpha_l2 * float(l2_prior(z)),
                                       rel=1e-9, abs=1e-12)
    other = inv.objective(net, g, x.flip(-1), y, mean=MEAN, std=STD)
    assert other["grad"] > 1e-4
    wrong_labels = inv.objective(net, g, x, torch.tensor([3, 2]), mean=MEAN, std=STD)
    assert wrong_labels["grad"] > 1e-4  # the labels are part of the objective


def test_agrees_with_the_loops_first_logged_loss() -> None:
    """The loop logs its objective's terms at iteration 1, before the first step: at the seed's starting images
    objective() reads the same gradient term and TV (the BN prior on, so its path is covered as well)."""
    net, g, x, y = _problem()
    cfg = dataclasses.replace(PRESETS["cpu"], labels="oracle", iterations=1, warmup=0, group_size=1, pyramid=0,
                              init="rand", alpha_bn=1e-2, seed=5)
    inv = build(cfg)
    res = inv.run(net, g, num_images=2, mean=MEAN, std=STD, labels=y, snapshot_at=())
    first = res.history[0]
    gen = torch.Generator().manual_seed(5)
    start = torch.rand((1, 2, 3, 8, 8), generator=gen, dtype=torch.float64)[0]  # init=rand: uniform in [0, 1]
    assert res.labels.tolist() == [1, 3]  # the loop's slots hold the labels sorted
    o = inv.objective(net, g, start, res.labels, mean=MEAN, std=STD)
    assert o["grad"] == pytest.approx(first["grad"], rel=1e-9)
    assert o["tv"] == pytest.approx(first["tv"], rel=1e-9)
    assert o["bn"] == pytest.approx(first["bn"], rel=1e-9) and o["bn"] > 0


def test_the_logged_lr_is_the_one_each_step_took() -> None:
    """Session 23 review: the history read the lr after the scheduler stepped, so each row named the next step's lr
    (0.05 logged where warm-up step 1 of 4 took 0.025). Warm-up of 4 steps at lr 0.1, then cosine to 0."""
    net, g, _, y = _problem()
    cfg = dataclasses.replace(PRESETS["cpu"], labels="oracle", iterations=6, warmup=4, lr=0.1, group_size=1,
                              pyramid=0)
    res = build(cfg).run(net, g, num_images=2, mean=MEAN, std=STD, labels=y, snapshot_at=(), log_every=1)
    lrs = [h["lr"] for h in res.history]
    assert [h["iteration"] for h in res.history] == [1, 2, 3, 4, 5, 6]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4] == pytest.approx(0.1) and 0 < lrs[5] < 0.1  # the cosine starts at the peak


def test_bad_inputs_are_one_line() -> None:
    net, g, x, y = _problem()
    inv = build(dataclasses.replace(PRESETS["cpu"], labels="oracle"))
    with pytest.raises(InputError, match="labels"):
        inv.objective(net, g, x, y[:1], mean=MEAN, std=STD)
    with pytest.raises(InputError, match="images"):
        inv.objective(net, g, x[0], y, mean=MEAN, std=STD)
    with pytest.raises(InputError, match="images"):
        inv.objective(net, g, x * float("nan"), y, mean=MEAN, std=STD)
    with pytest.raises(InputError, match="mean and std"):
        inv.objective(net, g, x, y, mean=MEAN[:2], std=STD[:2])
