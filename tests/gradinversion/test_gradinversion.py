"""GradInversion: label rules, the objective's terms, registration, the attack loop's invariants."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.io import ConfigError, InputError, TenfoldWarning
from tenfold.core.metrics import psnr
from tenfold.gradinversion import (
    PRESETS,
    GradInversion,
    apply_defences,
    bn_batch_stats,
    bn_prior,
    build,
    consensus,
    count_labels,
    grad_match_loss,
    label_accuracy,
    recover_labels,
    register_similarity,
    register_translation,
    simulate_client,
    total_variation,
)
from tenfold.gradinversion.evaluation import match_order
from tenfold.gradinversion.registration import similarity_matrix, warp

from .nets import two_bn_net


def _tiny_net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    net.input_size = (3, 6, 6)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.to(dtype).eval()


@pytest.fixture(scope="module")
def resnet_and_images():
    from tenfold.core.data import load_dataset
    from tenfold.core.models import build_model, default_weights

    model = build_model("cifar10-resnet20", weights=default_weights("cifar10-resnet20")).eval()
    x, y = load_dataset("cifar10-mini", limit=40).tensors()  # real CIFAR-10 test images, bundled
    return model, x, y


# ---------------------------------------------------------------------------------------------
# Step 1: labels
# ---------------------------------------------------------------------------------------------
def test_label_rules_on_planted_fc_gradient():
    """dW = (1/B) Σ (p_i - e_{y_i}) h_i^T with h >= 0 and unique labels: Yin's rule finds exactly the labels."""
    g = torch.Generator().manual_seed(0)
    C, d, B = 10, 32, 6
    for _ in range(20):
        y = torch.randperm(C, generator=g)[:B]
        h = torch.rand(B, d, generator=g)  # post-ReLU features
        p = torch.softmax(torch.randn(B, C, generator=g), dim=1)
        resid = p - F.one_hot(y, C).float()  # (B, C)
        dW = resid.T @ h / B  # (C, d)
        assert torch.equal(recover_labels(dW, B, "yin"), y.sort().values)
        # the bias rule reads the signs of Σ_i (p_ic - 1[y_i = c]): exact when each image is its own class's winner
        resid_b = torch.softmax(5 * F.one_hot(y, C).float(), dim=1) - F.one_hot(y, C).float()
        got = recover_labels(resid_b.T @ h / B, B, "bias", resid_b.mean(0))
        assert torch.equal(got, y.sort().values)


def test_count_rule_recovers_repeated_labels_exactly_when_the_prediction_is_known():
    """A classifier whose FC weights are zero predicts softmax(b) for every image, so the bias gradient is exactly
    softmax(b) - n / B: the count rule with that prior returns the planted multiset (repeats included); with
    b = 0 the default uniform prior is the right one. The rules that cannot repeat a label miss."""
    g = torch.Generator().manual_seed(0)
    C, B = 10, 12
    for k in range(10):
        net = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(48, C))
        net.input_size = (3, 4, 4)
        nn.init.zeros_(net[2].weight)
        with torch.no_grad():
            net[2].bias.copy_(torch.randn(C, generator=g) if k % 2 else torch.zeros(C))
        y = torch.randint(0, 4, (B,), generator=g)  # at most 4 classes: labels repeat
        gr = simulate_client(net, torch.rand(B, 3, 4, 4, generator=g), y)
        prior = torch.softmax(net[2].bias.detach(), 0)
        assert torch.equal(count_labels(gr[-1], B, prior), y.sort().values), k
        if k % 2 == 0:
            assert torch.equal(recover_labels(gr[-2], B, "count", gr[-1]), y.sort().values)
            assert label_accuracy(recover_labels(gr[-2], B, "bias", gr[-1]), y) < 1.0
    # every class with a negative bias gradient is kept, whatever the prior says
    db = torch.tensor([-0.30, 0.25, -0.01, 0.06])
    assert torch.equal(count_labels(db, 2, torch.tensor([0.0, 1.0, 0.0, 0.0])), torch.tensor([0, 2]))
    with pytest.raises(InputError, match="probability vector"):
        count_labels(db, 2, torch.tensor([0.5, 0.5, 0.5, 0.5]))
    with pytest.raises(ConfigError, match="needs the FC bias gradient"):
        recover_labels(torch.randn(4, 3), 2, "count")


def _linear_layer_gradients(logits: torch.Tensor, H: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The weight and bias gradients of a mean cross-entropy through a Linear layer whose weights turn the features
    ``H (B, d)`` (d >= B) into exactly ``logits (B, C)``: what a client shares for the last layer."""
    fc = nn.Linear(H.shape[1], logits.shape[1]).double()
    with torch.no_grad():
        fc.weight.copy_(torch.linalg.lstsq(H, logits).solution.T)
        fc.bias.zero_()
    assert torch.allclose(fc(H), logits, atol=1e-9)
    return torch.autograd.grad(F.cross_entropy(fc(H), y), (fc.weight, fc.bias))


def test_count_mass_rule_repeats_where_count_and_yin_mass_pad():
    """count_mass on planted last-layer gradients. A trained-like batch (two images of class 0 that the network
    mistakes for class 1 at 0.6, one confident class-1 image): class 1's row has no negative entry and a positive
    bias gradient, every absent class a tiny one. ``count`` pads with an absent class (the uniform prior gives each
    ~B/C), ``yin_mass`` adds no repeat; count_mass repeats 0 and adds the class of largest mass, 1: exact. A
    fresh-like batch (uniform predictions, repeated labels): the estimates are the counts themselves, so it is
    exact too, where the distinct-label rules cannot be."""
    g = torch.Generator().manual_seed(0)
    C = 5
    P = torch.tensor([[0.39, 0.6] + [0.01 / 3] * 3, [0.39, 0.6] + [0.01 / 3] * 3, [0.0025, 0.99] + [0.0025] * 3],
                     dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    H = 0.5 + torch.rand(3, 6, generator=g, dtype=torch.float64)  # h >= 0, as after ReLU and pooling
    gW, gb = _linear_layer_gradients(P.log(), H, y)
    assert float(gW[1].min()) > 0 and float(gb[1]) > 0 and float(gb[2:].max()) < 0.01  # the case described
    assert torch.equal(recover_labels(gW, 3, "count_mass", gb), torch.tensor([0, 0, 1]))
    assert label_accuracy(recover_labels(gW, 3, "count", gb), y) < 1.0
    assert label_accuracy(recover_labels(gW, 3, "yin_mass", gb), y) < 1.0
    C, B = 10, 8
    for k in range(5):
        y = torch.randint(0, 3, (B,), generator=g)  # at most 3 classes: labels repeat
        H = torch.rand(B, 12, generator=g, dtype=torch.float64)
        gW, gb = _linear_layer_gradients(torch.zeros(B, C, dtype=torch.float64), H, y)
        assert torch.equal(recover_labels(gW, B, "count_mass", gb), y.sort().values), k
        assert label_accuracy(recover_labels(gW, B, "yin_mass", gb), y) < 1.0
    with pytest.raises(ConfigError, match="needs the FC bias gradient"):
        recover_labels(gW, B, "count_mass")


def test_label_accuracy_is_a_multiset_overlap():
    assert label_accuracy(torch.tensor([1, 1, 2]), torch.tensor([2, 1, 3])) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([3, 1]), torch.tensor([1, 3])) == 1.0
    assert label_accuracy(torch.tensor([1, 1]), torch.tensor([1, 2])) == 0.5


def test_label_restoration_exact_at_batch_1_float64_real_resnet20(resnet_and_images):
    """Real ResNet-20, real CIFAR-10 test images, gradients in float64: Yin, row-sum and iDLG are exact."""
    model, x, y = resnet_and_images
    m64 = model.double()
    for i in range(0, 40, 2):
        gr = simulate_client(m64, x[i:i + 1].double(), y[i:i + 1])
        for rule in ("yin", "rowsum", "idlg"):
            assert int(recover_labels(gr[-2], 1, rule)) == int(y[i]), (i, rule)
    model.float()


def test_yin_rule_exact_at_batch_1_float32_when_the_true_row_vanishes():
    """Real ResNet-20, float32: on these bundled images the prediction is so confident that p_y rounds to 1 and the
    true class's weight-gradient row is exactly zero. Yin's minimum then ties (0) with every absent class; the row
    sum breaks the tie, so the rule stays exact."""
    from tenfold.core.data import load_dataset
    from tenfold.core.models import build_model, default_weights

    model = build_model("cifar10-resnet20", weights=default_weights("cifar10-resnet20")).eval()
    x, y = load_dataset("cifar10-mini").tensors()
    vanished = 0
    for i in (223, 297, 333, 403, 477):
        gr = simulate_client(model, x[i:i + 1], y[i:i + 1])
        if float(gr[-2][y[i]].abs().max()) == 0.0:  # the case this test is about (here on this machine's BLAS)
            vanished += 1
            assert float(gr[-2].amin(1).max()) == 0.0 and float(gr[-2].amin(1).min()) == 0.0, i  # minima tie
        assert int(recover_labels(gr[-2], 1, "yin")) == int(y[i]), i
        assert int(recover_labels(gr[-2], 1, "yin_mass")) == int(y[i]), i  # the vanished row goes first
        assert int(recover_labels(gr[-2], 1, "count_mass", gr[-1])) == int(y[i]), i  # B = 1: yin_mass's answer
    assert vanished >= 3  # otherwise these images no longer exercise the tie (another BLAS rounds differently)
    # the planted form of the same case, and the tie-break keeps Yin's order where the minima differ
    dW = torch.tensor([[0.0, 3e-9], [0.0, 0.0], [0.0, 1e-12], [-1e-3, 5.0]])
    assert torch.equal(recover_labels(dW, 1, "yin"), torch.tensor([3]))
    assert torch.equal(recover_labels(dW, 2, "yin"), torch.tensor([1, 3]))


def test_yin_mass_finds_the_favourite_class_that_yin_misses():
    """A fresh network predicts one class for every image (here class 0, p ~ 0.98). When that class is in the batch
    its weight-gradient row has no negative entry (sum_i p_i0 h_i >= h_k), so Yin's rule ranks it with the absent
    classes and fills the batch with the class the batch predicts least. ``yin_mass`` ranks the rows without a
    negative entry by their mass (largest row sum first) and finds it; both agree on the rows Yin is sure of."""
    g = torch.Generator().manual_seed(0)
    C, d, B = 10, 32, 4
    for _ in range(20):
        y = torch.cat([torch.tensor([0]), 1 + torch.randperm(C - 1, generator=g)[:B - 1]])
        h = 1.0 + 0.2 * torch.rand(B, d, generator=g)  # post-ReLU features with a common part
        p = torch.softmax(torch.randn(B, C, generator=g) + 4 * F.one_hot(torch.zeros(B, dtype=torch.long), C), 1)
        dW = (p - F.one_hot(y, C).float()).T @ h / B
        assert float(dW[0].amin()) > 0  # the case this test is about: the present favourite looks absent to Yin
        assert torch.equal(recover_labels(dW, B, "yin_mass"), y.sort().values)
        yin = recover_labels(dW, B, "yin")
        assert 0 not in yin.tolist() and label_accuracy(yin, y) == (B - 1) / B
        # pruned rows (a defence zeroes small entries, whole rows of absent classes) do not jump the queue at B > 1
        absent = [c for c in range(C) if c not in y.tolist()]
        dW[absent[:3]] = 0.0
        assert torch.equal(recover_labels(dW, B, "yin_mass"), y.sort().values)
    # more negative rows than B (e.g. a noise defence): the most negative minima win, as in Yin's rule
    dW = torch.tensor([[-0.3, 1.0], [-0.1, 2.0], [-0.5, 0.1], [-0.2, 0.0], [0.0, 5.0], [0.1, 0.2]])
    assert torch.equal(recover_labels(dW, 2, "yin_mass"), torch.tensor([0, 2]))
    assert torch.equal(recover_labels(dW, 3, "yin_mass"), recover_labels(dW, 3, "yin"))
    # unique labels from a non-degenerate prediction: the same answer as Yin's (every present row has a negative)
    for _ in range(20):
        y = torch.randperm(C, generator=g)[:6]
        h = torch.rand(6, d, generator=g)
        dW = (torch.softmax(torch.randn(6, C, generator=g), 1) - F.one_hot(y, C).float()).T @ h / 6
        assert torch.equal(recover_labels(dW, 6, "yin_mass"), recover_labels(dW, 6, "yin"))


def test_label_rule_errors():
    with pytest.raises(ConfigError, match="batch size 1"):
        recover_labels(torch.randn(10, 4), 2, "idlg")
    with pytest.raises(ConfigError, match="unknown label rule"):
        recover_labels(torch.randn(10, 4), 2, "magic")
    with pytest.raises(InputError):
        recover_labels(torch.randn(10), 2, "yin")


def test_yin_rule_refuses_negative_features():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Linear(8, 4))  # FC input can be negative
    net.input_size = (3, 2, 2)
    g = simulate_client(net, torch.rand(1, 3, 2, 2), torch.tensor([1]))
    for rule in ("yin", "yin_mass"):
        with pytest.raises(ConfigError, match="non-negative"):
            GradInversion(iterations=1, group_size=1, label_rule=rule).restore_labels(net, g, 1)
    inv = GradInversion(iterations=1, group_size=1, force_label_rule=True)
    assert inv.restore_labels(net, g, 1).shape == (1,)


# ---------------------------------------------------------------------------------------------
# Step 2: the objective
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["l2", "sq_l2", "cosine", "layer_cosine"])
def test_matching_loss_gradcheck_float64(distance):
    """x̂ -> D(∇W(x̂), ∇W) through double backprop: analytic gradient equals finite differences."""
    net = _tiny_net(torch.float64)
    params = [p for p in net.parameters()]
    x_true = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    y = torch.tensor([1, 3])
    target = simulate_client(net, x_true, y)

    def f(x):
        loss = F.cross_entropy(net(x), y)
        gh = torch.autograd.grad(loss, params, create_graph=True)
        return grad_match_loss(gh, target, distance, normalize=True)

    x0 = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x0,), eps=1e-6, atol=1e-5)


def test_matching_loss_is_zero_at_the_true_batch_and_positive_elsewhere(resnet_and_images):
    model, x, y = resnet_and_images
    for update in ("gradient", "fedavg"):
        g = simulate_client(model, x[:3], y[:3], update=update, local_steps=2, local_lr=0.1)
        again = simulate_client(model, x[:3], y[:3], update=update, local_steps=2, local_lr=0.1)
        assert float(grad_match_loss(again, g)) == 0.0
        other = simulate_client(model, x[3:6], y[:3], update=update, local_steps=2, local_lr=0.1)
        assert float(grad_match_loss(other, g)) > 0.0
    # the FedAvg update of one step is -lr times the gradient
    g1 = simulate_client(model, x[:3], y[:3])
    u1 = simulate_client(model, x[:3], y[:3], update="fedavg", local_steps=1, local_lr=0.5)
    assert all(torch.allclose(u, -0.5 * a, atol=1e-6) for u, a in zip(u1, g1))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_fedavg_update_is_what_an_sgd_client_sends(mode):
    """Session 23 review: k local steps of plain SGD on a copy of the model (torch.optim.SGD, the client's batch every
    step, in the client's mode) end at theta_k; the shared update is theta_k - theta_0 for every trainable parameter.
    Two BN layers, so train mode's batch statistics (and the buffers it would update) are part of it."""
    import copy

    from tests.gradinversion.nets import two_bn_net

    net = two_bn_net(4, (0.5, 1.5)).double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.tensor([0, 3, 1, 4])
    k, lr = 3, 0.05
    client = copy.deepcopy(net).train(mode == "train")
    opt = torch.optim.SGD(client.parameters(), lr=lr)
    for _ in range(k):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(client(x), y).backward()
        opt.step()
    want = [a.detach() - b.detach() for a, b in zip(client.parameters(), net.parameters())]
    got = simulate_client(net, x, y, mode=mode, update="fedavg", local_steps=k, local_lr=lr)
    assert len(got) == len(want) and all(torch.allclose(u, w, rtol=1e-9, atol=1e-12) for u, w in zip(got, want))
    assert all(float(w.abs().max()) > 1e-4 for w in want[-2:])  # the steps moved the classifier


def test_grad_distances_known_values():
    a = [torch.tensor([3.0, 0.0]), torch.tensor([0.0])]
    b = [torch.tensor([0.0, 4.0]), torch.tensor([1.0])]
    assert float(grad_match_loss(a, b, "l2")) == pytest.approx(5.0 + 1.0)
    assert float(grad_match_loss(a, b, "sq_l2")) == pytest.approx(0.5 * 26.0)
    assert float(grad_match_loss(a, b, "cosine")) == pytest.approx(1.0)
    assert float(grad_match_loss(a, b, "l2", normalize=True)) == pytest.approx(6.0 / 5.0)
    assert float(grad_match_loss(a, b, "sq_l2", normalize=True)) == pytest.approx(13.0 / 8.5)
    # cosine over all layers as one vector: <(3, 0, 4), (3, 4, 0)> / (5 * 5) = 9 / 25
    c, d = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])], [torch.tensor([3.0, 4.0]), torch.tensor([0.0])]
    from tenfold.gradinversion.attack import GradMatch

    match = GradMatch(d, "cosine")  # the target's norm is computed once and reused
    assert float(match(c)) == pytest.approx(1.0 - 9.0 / 25.0)
    assert float(match([2.0 * t for t in c])) == pytest.approx(1.0 - 9.0 / 25.0)
    assert float(match(d)) == pytest.approx(0.0, abs=1e-7)
    # layer cosine: each layer's cosine counts equally, cos((3, 0), (3, 4)) = 0.6 and a zero target layer gives 0
    layer = GradMatch(d, "layer_cosine")
    assert float(layer(c)) == pytest.approx(1.0 - (0.6 + 0.0) / 2)
    assert float(layer([2.0 * t for t in c])) == pytest.approx(0.7)
    assert float(GradMatch(c, "layer_cosine")(c)) == pytest.approx(0.0, abs=1e-7)


def test_bn_prior_zero_at_stored_statistics_and_hook_matches_manual():
    net = _tiny_net()
    x = torch.randn(8, 3, 6, 6)
    stats = bn_batch_stats(net, x)
    with torch.no_grad():
        h = net[0](x)  # the BN layer's input
    mu, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    assert torch.allclose(stats[0][0], mu, atol=1e-6) and torch.allclose(stats[0][1], var, atol=1e-6)
    assert float(bn_prior(stats, stats)) == 0.0
    bn = net[1]
    refs = [(bn.running_mean, bn.running_var)]
    expected = 10.0 * float((mu - bn.running_mean).norm() + (var - bn.running_var).norm())
    assert float(bn_prior(stats, refs, 10.0)) == pytest.approx(expected, rel=1e-5)


def test_train_mode_bn_statistics_past_the_first_layer_match_a_manual_train_forward():
    # a train-mode client normalises layer 1 by the batch's own statistics, so layer 2 sees a different input
    # than in an eval-mode forward; the statistics it reveals (and the BN prior's reference) are those
    net = two_bn_net(2, var=(2.0, 3.0), bn_weight=(0.5, 1.5))
    before = [b.clone() for b in net.buffers()]
    x = torch.rand(3, 3, 6, 6)
    with torch.no_grad():
        h1 = net[0](x)
        m1, v1 = h1.mean((0, 2, 3)), h1.var((0, 2, 3), unbiased=False)
        n1 = (h1 - m1[:, None, None]) / torch.sqrt(v1[:, None, None] + net[1].eps)
        h2 = net[3](torch.relu(n1 * net[1].weight[:, None, None] + net[1].bias[:, None, None]))
    tr, ev = bn_batch_stats(net, x, "train"), bn_batch_stats(net, x, "eval")
    assert torch.allclose(tr[0][0], m1, atol=1e-6) and torch.allclose(tr[0][1], v1, atol=1e-6)
    assert torch.allclose(tr[1][0], h2.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(tr[1][1], h2.var((0, 2, 3), unbiased=False), atol=1e-5)
    assert torch.allclose(ev[0][0], m1, atol=1e-6)  # the first layer's input does not depend on the mode
    assert float((ev[1][0] - tr[1][0]).abs().max()) > 1e-2  # past it, it does
    assert all(torch.equal(a, b) for a, b in zip(before, net.buffers()))  # and the model's buffers are untouched


def test_total_variation_known_values():
    x = torch.zeros(1, 1, 3, 3)
    assert float(total_variation(x)) == 0.0
    x[..., :, 2] = 1.0  # one vertical edge: |dx| = 1 on 3 of the 6 horizontal pairs
    assert float(total_variation(x)) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# The attack loop
# ---------------------------------------------------------------------------------------------
def test_planted_linear_layer_with_bias_batch_1_is_recovered_exactly():
    """Single image, linear classifier with bias: ∇W = (p - e_y) x^T fixes x; the attack reaches PSNR > 40 dB."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    net.input_size = (3, 8, 8)
    x = torch.rand(1, 3, 8, 8)
    y = torch.tensor([4])
    g = simulate_client(net, x, y)
    inv = GradInversion(iterations=400, lr=0.05, warmup=10, langevin_sigma=0.0, grad_distance="sq_l2",
                        normalize_grad=True, alpha_grad=1.0, alpha_tv=0.0, alpha_l2=0.0, alpha_bn=0.0,
                        group_size=1)
    res = inv.run(net, g, num_images=1, mean=[0.5] * 3, std=[0.25] * 3)
    assert int(res.labels) == 4  # restored by Yin's rule (features = pixels >= 0)
    assert float(psnr(res.images, x)) > 40.0
    assert res.loss_end < res.loss_start


def test_attack_never_mutates_the_model_and_checks_its_inputs():
    net = _tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([0, 2])
    g = simulate_client(net, x, y, mode="train")
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=6, client_mode="train", alpha_bn=0.1)
    res = build(cfg).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training
    assert res.images.shape == (2, 3, 6, 6) and res.seeds.shape == (2, 2, 3, 6, 6)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    with pytest.raises(InputError, match="list of"):
        build(cfg).run(net, g[:-1], num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    bad = list(g)
    bad[0] = bad[0][:1]
    with pytest.raises(InputError, match="shape"):
        build(cfg).run(net, bad, num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    bad[0] = torch.full_like(g[0], math.nan)
    with pytest.raises(InputError, match="NaN"):
        build(cfg).run(net, bad, num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(InputError, match="mean and std"):
        build(cfg).run(net, g, num_images=2, mean=[0.5], std=[0.5])


def test_warmup_longer_than_the_run_warns(capsys, tmp_path):
    """A warm-up >= iterations leaves the LR rising to the last step (it is clamped, not decayed): the API
    warns with TenfoldWarning, the CLI prints it as one 'warning:' line; a normal schedule stays silent."""
    import warnings

    from tenfold import cli
    from tenfold.core.io import TenfoldWarning

    net = _tiny_net()
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([1])
    g = simulate_client(net, x, y)
    kw = dict(num_images=1, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.warns(TenfoldWarning, match=r"warm-up of 5 steps >= the run's 3 iterations.*--set warmup=N"):
        build(dataclasses.replace(PRESETS["smoke"], iterations=3, warmup=5, group_size=1)).run(net, g, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        build(dataclasses.replace(PRESETS["smoke"], iterations=6, warmup=5, group_size=1)).run(net, g, **kw)
    argv = ["gradinversion", "attack", "--preset", "smoke", "--data", "cifar10-mini", "--batch-size", "1",
            "--iterations", "2", "--set", "group_size=1", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    # the attack's objective at the true batch (gradient term 0) and at its output, and which of them is lower
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert abs(m["objective_truth"]["grad"]) < 1e-5 and m["objective_output"]["grad"] > 1e-3
    assert m["search_limited"] is (m["objective_truth"]["total"] < m["objective_output"]["total"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warm-up" in ln]
    assert err == ["warning: warm-up of 4 steps >= the run's 2 iterations: the learning rate rises through the "
                   "whole run and never decays; set warmup below iterations (CLI: --set warmup=N)"]


def test_attack_resumes_exactly_after_a_kill(tmp_path):
    """A long attack saves its loop state (images, Adam, schedule, noise generator, group consensus); killed after
    iteration 7 and resumed from the checkpoint at 5 it ends on the very images of an uninterrupted run."""
    from tenfold.core.engine import Checkpointer
    from tenfold.core.io import CheckpointError

    net = _tiny_net()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([0, 2])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=12, group_size=2, group_warmup=0.25, group_every=3,
                              langevin_sigma=0.5, signed=False, labels="oracle")  # noise, group term: all state counts
    kw = dict(num_images=2, mean=[0.5] * 3, std=[0.5] * 3, labels=y)
    full = build(cfg).run(net, g, **kw)

    class Killed(Exception):
        pass

    def kill(it, row):
        if it == 7:
            raise Killed

    ckpt = Checkpointer(tmp_path, method="gradinversion-attack")
    with pytest.raises(Killed):
        build(cfg).run(net, g, **kw, log=kill, log_every=1, checkpointer=ckpt, ckpt_every=5)
    assert ckpt.steps() == [5]
    again = build(cfg).run(net, g, **kw, checkpointer=ckpt, ckpt_every=5, resume=True)
    assert torch.equal(again.seeds, full.seeds) and torch.equal(again.images, full.images)
    assert again.loss_start == full.loss_start and again.history[-1] == full.history[-1]
    with pytest.raises(CheckpointError, match="another attack"):  # another client's update
        build(cfg).run(net, simulate_client(net, x.flip(0), y), **kw, checkpointer=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        build(cfg).run(net, g, **kw, checkpointer=Checkpointer(tmp_path / "empty", method="x"), resume=True)
    # session 22: killed after 11 with pairs at 5 and 10 kept, the newest damaged: it resumes from 5, to the same end
    ck2 = Checkpointer(tmp_path / "two", method="gradinversion-attack")

    def kill11(it, row):
        if it == 11:
            raise Killed

    with pytest.raises(Killed):
        build(cfg).run(net, g, **kw, log=kill11, log_every=1, checkpointer=ck2, ckpt_every=5)
    assert ck2.steps() == [5, 10]
    with open(ck2.path_for(10).with_suffix(".safetensors"), "r+b") as fh:
        fh.truncate(100)
    with pytest.warns(TenfoldWarning, match="step-00000010"):
        again = build(cfg).run(net, g, **kw, checkpointer=ck2, ckpt_every=5, resume=True)
    assert torch.equal(again.seeds, full.seeds) and torch.equal(again.images, full.images)


def test_defences():
    g = [torch.arange(1.0, 101.0).view(10, 10)]
    pruned = apply_defences(g, prune_ratio=0.9)[0]
    assert int((pruned != 0).sum()) == 10 and float(pruned.max()) == 100.0
    noisy = apply_defences(g, noise_sigma=1.0, seed=3)[0]
    assert 0.7 < float((noisy - g[0]).std()) < 1.3
    assert torch.equal(apply_defences(g)[0], g[0])
    for kw in ({"noise_sigma": float("nan")}, {"noise_sigma": float("inf")}, {"noise_sigma": -1.0},
               {"prune_ratio": float("nan")}, {"prune_ratio": 1.0}):  # NaN noise used to poison the gradient silently
        with pytest.raises(ConfigError, match="noise_sigma"):
            apply_defences(g, **kw)


def test_threat_model_says_when_the_bn_reference_is_unused():
    on = dataclasses.replace(PRESETS["paper"], bn_stats="user", alpha_bn=0.1).threat_model()
    off = dataclasses.replace(PRESETS["cpu"], bn_stats="user").threat_model()  # the cpu preset has alpha_bn = 0
    assert on["bn_stats"] == "user" and on["client_mode"] == "train"
    assert off["bn_stats"] == "user (BN prior off: alpha_bn = 0)" and off["client_mode"] == "train"
    assert dataclasses.replace(PRESETS["cpu"], bn_stats="none").threat_model()["bn_stats"] == "none"


# ---------------------------------------------------------------------------------------------
# Step 3: registration and group consistency
# ---------------------------------------------------------------------------------------------
def _smooth_images(n: int, size: int = 24) -> torch.Tensor:
    """Textured test images: uniform noise blurred by a 3x3 box (sharp enough for registration to matter)."""
    g = torch.Generator().manual_seed(5)
    return F.avg_pool2d(torch.rand(n, 3, size, size, generator=g), 3, stride=1, padding=1, count_include_pad=False)


def test_fft_registration_recovers_planted_shift_and_flip():
    ref = _smooth_images(3)
    H, W = ref.shape[-2:]
    shifts = torch.tensor([[2.0, -3.0], [-1.5, 2.25], [0.0, 4.0]])  # (dy, dx) in pixels, some sub-pixel
    flip = torch.tensor([0.0, 0.0, 1.0])
    from tenfold.gradinversion.registration import invert, shift_matrix

    A_true = shift_matrix(shifts[:, 0], shifts[:, 1], H, W, flip=flip)
    moved = warp(ref, invert(A_true))  # ref seen through the inverse transform
    A = register_translation(moved, ref)
    crop = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    err_before = (moved - ref)[crop].abs().mean()
    err_after = (warp(moved, A) - ref)[crop].abs().mean()
    err_true = (warp(moved, A_true) - ref)[crop].abs().mean()  # bilinear resampling blurs sub-pixel shifts
    assert float(err_after) < 0.2 * float(err_before) and float(err_after) < 1.5 * float(err_true)
    assert torch.allclose(A[:, 0, 0], A_true[:, 0, 0])  # flips found
    assert torch.allclose(A, A_true, atol=0.03)  # shifts within ~0.3 px


def test_similarity_registration_recovers_rotation_and_scale():
    ref = _smooth_images(2, size=32)
    p = torch.tensor([[0.06, 0.12, 0.05, -0.04], [-0.05, -0.1, 0.0, 0.06]])
    moved = warp(ref, similarity_matrix(p))
    crop = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    e_trans = (warp(moved, register_translation(moved, ref)) - ref)[crop].pow(2).mean()
    e_sim = (warp(moved, register_similarity(moved, ref, steps=60, lr=0.02)) - ref)[crop].pow(2).mean()
    assert float(e_sim) < 0.5 * float(e_trans)


def test_registered_consensus_beats_the_plain_mean_on_shifted_copies():
    truth = _smooth_images(2)
    H, W = truth.shape[-2:]
    from tenfold.gradinversion.registration import shift_matrix

    shifts = [(0.0, 0.0), (2.0, 1.0), (-1.0, -2.0), (-1.0, 1.0)]  # integer, zero mean: the mean frame is truth's
    xs = torch.stack([warp(truth, shift_matrix(torch.full((2,), dy), torch.full((2,), dx), H, W)) for dy, dx in shifts])
    E_reg, A = consensus(xs, "translation")
    E_plain, _ = consensus(xs, "none")
    def err(E):
        return float((E - truth)[..., 3:-3, 3:-3].pow(2).mean())
    assert err(E_reg) < 0.25 * err(E_plain)
    assert A.shape == (4, 2, 2, 3)


def test_group_consistency_runs_and_outputs_registered_mean():
    net = _tiny_net()
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([2])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=8, group_size=3, group_every=2, group_warmup=0.25)
    res = build(cfg).run(net, g, num_images=1, mean=[0.5] * 3, std=[0.5] * 3, snapshot_at=(4, 8))
    assert res.seeds.shape[0] == 3 and set(res.snapshots) == {4, 8}
    assert torch.allclose(res.snapshots[8], res.images)
    assert any(h["group"] > 0 for h in res.history)
    # the output is the registered mean of the final seeds, recomputed here: not their plain mean, nor one seed
    from tenfold.gradinversion.registration import consensus

    E, A = consensus(res.seeds, cfg.registration)
    assert torch.allclose(res.images, E, atol=1e-6)
    assert float(A[..., 2].abs().max()) > 1e-3  # the seeds were shifted against each other
    assert float((res.images - res.seeds.mean(0)).abs().max()) > 1e-3
    assert all(float((res.images - s).abs().max()) > 1e-3 for s in res.seeds)


def test_match_order_inverts_a_permutation():
    x = _smooth_images(4)
    perm = torch.tensor([2, 0, 3, 1])
    order = match_order(x[perm], x)
    assert torch.equal(x[perm][order], x)


# ---------------------------------------------------------------------------------------------
# Optimiser options: signed gradient, step schedule, initialisation
# ---------------------------------------------------------------------------------------------
def _l2_only_run(signed: bool, iterations: int = 3, lr: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end images (G = 1, B = 1) of a run driven by the l2 prior alone, pixel box [0, 1]."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    net.input_size = (3, 4, 4)
    g = simulate_client(net, torch.rand(1, 3, 4, 4), torch.tensor([1]))
    inv = GradInversion(iterations=iterations, lr=lr, warmup=0, langevin_sigma=0.0, alpha_grad=0.0, alpha_tv=0.0,
                        alpha_l2=1.0, alpha_bn=0.0, group_size=1, signed=signed, lr_schedule="step", seed=3,
                        labels="oracle")
    res = inv.run(net, g, num_images=1, mean=[0.0] * 3, std=[1.0] * 3, labels=torch.tensor([1]))
    x0 = torch.randn((1, 1, 3, 4, 4), generator=torch.Generator().manual_seed(3)).clamp(0, 1)[0]
    return x0, res.images


def test_signed_adam_moves_every_pixel_by_exactly_lr_per_step():
    """sign(∇x̂) has |·| = 1, so Adam's bias-corrected step is exactly lr; plain Adam on 2x/N is not.
    Step schedule over 3 iterations: milestones int(3 * 3/8) = 1, 1, int(3 * 7/8) = 2, so lr x (1, 0.01, 0.001)."""
    x0, x_signed = _l2_only_run(signed=True)
    _, x_plain = _l2_only_run(signed=False)
    mov = x0 > 0.15  # pixels with a non-zero gradient whose sign stays (they move by 0.1011)
    assert int(mov.sum()) > 8
    step = (x0 - x_signed)[mov]  # 3 steps towards 0
    want = torch.full_like(step, 0.1 * (1 + 0.01 + 0.001))
    assert torch.allclose(step, want, atol=1e-7)
    assert not torch.allclose((x0 - x_plain)[mov], want, atol=1e-7)
    zero = x0 == 0  # on the box edge, zero gradient, sign 0: untouched
    assert int(zero.sum()) > 4 and torch.equal(x_signed[zero], x0[zero])


def test_step_schedule_and_initialisations():
    from tenfold.gradinversion.attack import _initial_images, _schedule

    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = _schedule(opt, "step", 4, 160)
    lrs = []
    for _ in range(160):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # warm-up
    assert lrs[59] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.1)  # x0.1 at 3/8, 5/8, 7/8 of 160
    assert lrs[99] == pytest.approx(0.1) and lrs[100] == pytest.approx(0.01) and lrs[140] == pytest.approx(1e-3)
    mu, sd = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(0)
    u = _initial_images("rand", (2, 3, 8, 8), gen, torch.float32, mu, sd) * sd + mu  # back to pixels
    assert float(u.min()) >= 0 and float(u.max()) <= 1 and float(u.std()) > 0.2
    assert torch.equal(_initial_images("zeros", (2, 3, 8, 8), gen, torch.float32, mu, sd), torch.zeros(2, 3, 8, 8))
    with pytest.raises(ConfigError, match="lr_schedule"):
        GradInversion(lr_schedule="linear")
    with pytest.raises(ConfigError, match="init"):
        GradInversion(init="ones")


def test_bad_weights_and_batch_sizes_are_one_clear_error():
    """NaN reached Adam as a bare ValueError; batch size 0 asked for ``--unique_labels False``."""
    from tenfold.gradinversion.verbs import pick_batch

    for kw in ({"lr": float("nan")}, {"lr": 0.0}, {"alpha_tv": -1.0}, {"alpha_bn": float("inf")},
               {"langevin_sigma": float("nan")}):
        with pytest.raises(ConfigError, match=next(iter(kw)) if kw != {"lr": 0.0} else "lr > 0"):
            GradInversion(**kw)
    labels = torch.arange(10).repeat(3)
    for B in (0, -2, 31):
        with pytest.raises(ConfigError, match="batch size"):
            pick_batch(labels, B, seed=0, unique=False)
    assert len(set(labels[pick_batch(labels, 10, seed=0)].tolist())) == 10  # unique labels


@pytest.mark.parametrize("mode,update", [("train", "gradient"), ("train", "fedavg"), ("eval", "gradient"),
                                         ("eval", "fedavg")])
def test_the_attack_objective_is_zero_at_the_true_batch(monkeypatch, mode, update):
    """Started at the client's own (normalised) batch with oracle labels, the attack's gradient-matching term is 0,
    and so is the BN prior against the batch statistics a train-mode client sends: the whole path (normalisation,
    label sort, FedAvg reading, client mode, BN recorder) agrees with what the client computed. Started 0.05 off,
    the matching term is not 0."""
    import importlib

    attack_mod = importlib.import_module("tenfold.gradinversion.attack")  # the package re-exports attack()
    net = _tiny_net(torch.float64)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64), torch.tensor([0, 2])  # labels sorted
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    g = simulate_client(net, x, y, mode=mode, update=update, local_steps=2, local_lr=0.05)
    user = mode == "train"
    ubn = bn_batch_stats(net, x, "train") if user else None
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=1, warmup=0, group_size=1, grad_distance="l2",
                              signed=False, alpha_bn=0.1, labels="oracle", bn_stats="user" if user else "running",
                              client_mode=mode, update=update, local_steps=2, local_lr=0.05)

    def start_at(offset: float):
        def init(kind, shape, gen, dt, mu, sd):
            return ((x + offset - mu) / sd).to(dt).expand(shape).clone()
        monkeypatch.setattr(attack_mod, "_initial_images", init)
        return build(cfg).run(net, g, num_images=2, mean=mean, std=std, labels=y, bn_ref=ubn).history[0]

    at_truth, off = start_at(0.0), start_at(0.05)
    assert at_truth["grad"] < 1e-9 * max(1.0, off["grad"]) and off["grad"] > 1e-4
    if user:
        assert at_truth["bn"] < 1e-9 and off["bn"] > 1e-4


def test_threat_model_switches_decide_what_build_cfg_run_attacks_with():
    """build(cfg).run() follows the config's labels / bn_stats switches (it used to attack with the server's BN
    buffers and restored labels whatever they said, while the result recorded them); a contradicting argument is
    one ConfigError."""
    net = _tiny_net()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([1, 4])
    g = simulate_client(net, x, y, mode="train")
    base = dataclasses.replace(PRESETS["smoke"], iterations=1, warmup=0, group_size=1, alpha_bn=0.1,
                               client_mode="train")
    kw = dict(num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    bn_running = build(base).run(net, g, **kw).history[0]["bn"]
    bn_none = build(dataclasses.replace(base, bn_stats="none")).run(net, g, **kw).history[0]["bn"]
    user = [(m + 1.0, v * 3.0) for m, v in bn_batch_stats(net, x, "train")]
    bn_user = build(dataclasses.replace(base, bn_stats="user")).run(net, g, **kw, bn_ref=user).history[0]["bn"]
    assert bn_running > 0 and bn_none == 0 and bn_user > 0 and abs(bn_user - bn_running) > 1e-3
    oracle = build(dataclasses.replace(base, labels="oracle")).run(net, g, **kw, labels=torch.tensor([3, 0]))
    assert oracle.labels.tolist() == [0, 3]  # the given labels, not the restored [1, 4]
    with pytest.raises(ConfigError, match="labels=oracle needs"):
        build(dataclasses.replace(base, labels="oracle")).run(net, g, **kw)
    with pytest.raises(ConfigError, match="labels=recover"):
        build(base).run(net, g, **kw, labels=y)
    with pytest.raises(ConfigError, match="bn_stats=user needs"):
        build(dataclasses.replace(base, bn_stats="user")).run(net, g, **kw)
    with pytest.raises(ConfigError, match="set bn_stats=user"):
        build(base).run(net, g, **kw, bn_ref=user)
    with pytest.raises(ConfigError, match="contradicts"):
        build(dataclasses.replace(base, bn_stats="none")).run(net, g, **kw, bn_ref="running")


def test_the_attack_wrapper_refuses_labels_and_statistics_its_switches_do_not_use():
    """Session 22 review: ``attack(m, g, cfg, labels=y)`` with labels=recover threw ``y`` away and restored labels
    (and bn_stats= without bn_stats=user likewise), where ``build(cfg).run`` refuses the same contradiction."""
    from tenfold.gradinversion.attack import attack

    net = _tiny_net()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([1, 4])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=1, warmup=0, group_size=1)
    kw = dict(num_images=2, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(ConfigError, match="labels=recover"):
        attack(net, g, cfg, labels=y, **kw)
    with pytest.raises(ConfigError, match="bn_stats=running; set bn_stats=user"):
        attack(net, g, cfg, bn_stats=bn_batch_stats(net, x, "eval"), **kw)
    given = attack(net, g, dataclasses.replace(cfg, labels="oracle"), labels=torch.tensor([3, 0]), **kw)
    assert given.labels.tolist() == [0, 3] and given.threat_model["labels"] == "oracle"


def test_the_result_records_the_bn_prior_as_it_ran_and_a_dropout_client_is_warned_of():
    """Session 22 review: ``bn_stats=running`` with alpha_bn > 0 on a model without BatchNorm was recorded as a prior
    that ran (its term was 0 at every iteration); the result now carries the run's own threat model. A train-mode
    client with dropout draws a new mask every forward, so the attack cannot replay its update: a warning says so."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 5)).eval()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([1, 4])
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=1, warmup=0, group_size=1, alpha_bn=0.1)
    kw = dict(num_images=2, mean=[0.5] * 3, std=[0.5] * 3, input_shape=(3, 6, 6))
    res = build(cfg).run(plain, simulate_client(plain, x, y), **kw)
    assert res.threat_model["bn_stats"] == "running (BN prior off: the model has no BatchNorm layers)"
    assert res.threat_model["labels"] == "recover (yin_mass)" and res.threat_model["client_mode"] == "eval"
    bn = build(cfg).run(_tiny_net(), simulate_client(_tiny_net(), x, y), **kw)
    assert bn.threat_model["bn_stats"] == "running" and bn.history[0]["bn"] > 0
    off = build(dataclasses.replace(cfg, alpha_bn=0.0)).run(_tiny_net(), simulate_client(_tiny_net(), x, y), **kw)
    assert off.threat_model["bn_stats"] == "running (BN prior off: alpha_bn = 0)"
    drop = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 5))
    g = simulate_client(drop, x, y, mode="train")
    with pytest.warns(TenfoldWarning, match="train mode with dropout"):
        build(dataclasses.replace(cfg, client_mode="train")).run(drop, g, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        build(dataclasses.replace(cfg, client_mode="eval")).run(drop, simulate_client(drop, x, y), **kw)


def test_client_labels_out_of_range_are_one_clear_error():
    """-1 is cross_entropy's ignore_index: it used to drop the image from the gradient without a word."""
    net = _tiny_net()
    x = torch.rand(2, 3, 6, 6)
    bad = ((torch.tensor([1, -1]), r"in \[0, 5\) \(the model's outputs\), got -1"),
           (torch.tensor([1, 5]), r"in \[0, 5\).*got 5"), (torch.tensor([1.0, 2.5]), "integer"))
    for y, msg in bad:
        with pytest.raises(InputError, match=msg):
            simulate_client(net, x, y)
    g = simulate_client(net, x, torch.tensor([0.0, 4.0]))  # whole floats pass
    assert len(g) == len(list(net.parameters()))
    for y, msg in bad:  # the attack's oracle labels get the same check before any optimisation
        with pytest.raises(InputError, match=msg):
            GradInversion(iterations=1, group_size=1, labels="oracle").run(net, g, num_images=2, mean=(0.5,) * 3,
                                                                           std=(0.5,) * 3, labels=y)


def test_group_consistency_closed_form_gradient_matches_autograd():
    from tenfold.gradinversion.attack import group_consistency

    g = torch.Generator().manual_seed(11)
    X = torch.randn(3, 2, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    E = torch.randn(3, 2, 3, 5, 5, generator=g, dtype=torch.float64)
    r, d = group_consistency(X.detach(), E)
    manual = torch.stack([torch.linalg.vector_norm(X[i] - E[i]) for i in range(3)])  # one norm per seed (spec)
    assert torch.allclose(r, manual.detach())
    (auto,) = torch.autograd.grad(manual.sum(), X)
    assert torch.allclose(d, auto, atol=1e-12)
    assert torch.equal(group_consistency(E, E)[0], torch.zeros(3, dtype=torch.float64))


def test_fast_gradient_path_equals_the_functional_path_and_keeps_buffers():
    """The attack's hot path (the private copy's own leaves, no functional_call) gives the same ∇W as the
    functional path (FedAvg k=1 update = -η ∇W), in train mode too, without moving the copy's BN buffers."""
    from tenfold.gradinversion.attack import _Functional

    net = _tiny_net()
    x, y = torch.rand(3, 3, 6, 6, dtype=torch.float64), torch.tensor([0, 2, 1])
    for mode in ("train", "eval"):
        f = _Functional(net, mode, dtype=torch.float64)
        bufs = {n: b.clone() for n, b in f.net.named_buffers() if "running" in n}
        fast = f.update(x, y, "gradient", 1, 0.5, create_graph=False)
        fed = f.update(x, y, "fedavg", 1, 0.5, create_graph=False)
        assert all(torch.allclose(-0.5 * a, b, atol=1e-12) for a, b in zip(fast, fed))
        assert all(torch.equal(b, dict(f.net.named_buffers())[n]) for n, b in bufs.items())


def _spy_adam_grads(monkeypatch) -> list[torch.Tensor]:
    """Record the first parameter's gradient as Adam sees it at every step from now on; returns the list."""
    seen: list[torch.Tensor] = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["params"][0].grad.detach().clone())
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return seen


def _signed_steps(alpha_group: float, monkeypatch) -> list[torch.Tensor]:
    """X.grad as Adam sees it at every step of a signed, G = 2 run (the group term on from step 3)."""
    seen = _spy_adam_grads(monkeypatch)
    net = _tiny_net()
    x, y = torch.rand(1, 3, 6, 6), torch.tensor([2])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=8, group_size=2, group_every=1, group_warmup=0.25,
                              signed=True, alpha_group=alpha_group, langevin_sigma=0.0)
    build(cfg).run(net, g, num_images=1, mean=[0.5] * 3, std=[0.5] * 3)
    return seen


def test_signed_group_pull_is_added_after_the_sign(monkeypatch):
    """With the signed gradient the group pull is a fraction of a step added *after* the sign (it would
    override the matching term pixel by pixel inside it): the step is no longer +-1 once the group is on."""
    plain = _signed_steps(0.0, monkeypatch)
    assert all(set(s.abs().unique().tolist()) <= {0.0, 1.0} for s in plain)
    pulled = _signed_steps(0.05, monkeypatch)
    off = [((s.abs() - 1).abs().max()) for s in pulled]
    assert max(off[:2]) == 0  # before the group starts: a pure sign step
    assert off[2] > 1e-3  # it starts at the first step after the warm-up, int(0.25 * 8) = 2, not a step later
    assert max(off[3:]) > 1e-3 and max(off[3:]) < 1.0  # after: sign + a pull smaller than one step


def _first_step_grad(monkeypatch, **over) -> torch.Tensor:
    """The pixels' (or the pyramid's level-0) gradient as Adam sees it at the first step of an attack on the tiny BN
    net (its BN buffers the prior's reference), the smoke preset (G = 1 unless ``over`` says) with ``over``."""
    seen = _spy_adam_grads(monkeypatch)
    net = _tiny_net(torch.float64)
    x, y = torch.rand(2, 3, 6, 6, dtype=torch.float64), torch.tensor([2, 4])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], **{"iterations": 2, "warmup": 1, "group_size": 1,
                                                   "langevin_sigma": 0.0, "labels": "oracle", **over})
    build(cfg).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.5] * 3, labels=y)
    return seen[0]


@pytest.mark.parametrize("setting", [{}, {"pyramid": 1}, {"group_size": 2}])
def test_bn_prior_after_the_sign_is_its_gradient_direction_at_alpha_bn_rms(monkeypatch, setting):
    """bn_after_sign: Adam sees sign(∇ of the other terms) + α_BN · ∇R_BN scaled to per-pixel RMS 1 over each seed's
    batch (the group pull's convention), not the sign of their sum; the direction is read from an unsigned
    BN-prior-only run. With a pyramid it goes to the pixel level, and with G seeds to every seed."""
    signed_rest = _first_step_grad(monkeypatch, alpha_bn=0.0, **setting)
    assert set(signed_rest.abs().unique().tolist()) <= {0.0, 1.0}
    bn_only = _first_step_grad(monkeypatch, alpha_bn=1.0, alpha_grad=0.0, alpha_tv=0.0, alpha_l2=0.0, signed=False,
                               **setting)
    assert all(float(s.abs().max()) > 0 for s in bn_only)
    unit = torch.stack([s * (math.sqrt(s.numel()) / s.norm()) for s in bn_only])  # per seed
    after = _first_step_grad(monkeypatch, alpha_bn=0.3, bn_after_sign=True, **setting)
    torch.testing.assert_close(after, signed_rest + 0.3 * unit, rtol=1e-9, atol=1e-9)
    inside = _first_step_grad(monkeypatch, alpha_bn=0.3, **setting)  # the paper's way: the prior inside the sign
    assert set(inside.abs().unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ConfigError, match="needs signed=true"):
        build(dataclasses.replace(PRESETS["smoke"], signed=False, bn_after_sign=True))


def test_bn_after_sign_objective_and_a_prior_that_is_off():
    """objective() weighs the terms as the loop does: with bn_after_sign the BN prior is a nudge after the sign, so
    `total` leaves it out (and still reports `bn`); the option with no BN prior in effect warns instead of
    running as if it did something."""
    net = _tiny_net(torch.float64)
    x, y = torch.rand(2, 3, 6, 6, dtype=torch.float64), torch.tensor([2, 4])
    g = simulate_client(net, x, y)
    kw = dict(mean=[0.5] * 3, std=[0.5] * 3)
    base = dataclasses.replace(PRESETS["smoke"], iterations=2, warmup=1, group_size=1, labels="oracle")
    off = build(dataclasses.replace(base, alpha_bn=0.0)).objective(net, g, x, y, **kw)
    inside = build(dataclasses.replace(base, alpha_bn=0.3)).objective(net, g, x, y, **kw)
    after = build(dataclasses.replace(base, alpha_bn=0.3, bn_after_sign=True)).objective(net, g, x, y, **kw)
    assert inside["bn"] > 0 and after["bn"] == pytest.approx(inside["bn"])
    assert inside["total"] == pytest.approx(off["total"] + 0.3 * inside["bn"])
    assert after["total"] == pytest.approx(off["total"])
    with pytest.warns(TenfoldWarning, match="no BN prior to add"):
        build(dataclasses.replace(base, alpha_bn=0.0, bn_after_sign=True)).run(net, g, num_images=2, labels=y, **kw)


def test_verbs_run_on_the_configs_device(tmp_path, monkeypatch):
    """The config's ``device`` used to be ignored by every verb (a GPU run silently ran on the CPU). Here the device
    check answers ``meta`` (no GPU in CI): model, shared update, images and labels must all reach the attack there."""
    from tenfold.gradinversion import verbs

    class Reached(Exception):
        pass

    seen = {}

    def spy(cfg, net, g, x, y, *a, **k):
        seen["devices"] = {next(net.parameters()).device.type, g[0].device.type, x.device.type, y.device.type}
        raise Reached

    monkeypatch.setattr(verbs, "check_device", lambda d: torch.device("meta"))
    monkeypatch.setattr(verbs, "_client", lambda cfg, net, x, y, seed: [torch.zeros_like(p) for p in net.parameters()])
    monkeypatch.setattr(verbs, "bn_batch_stats", lambda net, x, mode: [])
    monkeypatch.setattr(verbs, "run_attack", spy)
    with pytest.raises(Reached):
        verbs.attack(PRESETS["smoke"], tmp_path / "run", data="cifar10-mini", batch_size=2, iterations=1)
    assert seen["devices"] == {"meta"}
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="bad device 'gpu'"):
        verbs.attack(dataclasses.replace(PRESETS["smoke"], device="gpu"), tmp_path / "r2", data="cifar10-mini",
                     batch_size=2, iterations=1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            verbs.leak(dataclasses.replace(PRESETS["smoke"], device="cuda"), tmp_path / "r3", data="cifar10-mini")


def test_attack_on_a_users_image_folder_and_too_small_images(tmp_path, monkeypatch):
    """``--data folder:PATH``: a user's own PNGs (here real bundled CIFAR-10 images, one sub-folder per class) are
    attacked like a built-in dataset; images too small for the reported SSIM are refused before any attack runs."""
    from PIL import Image

    from tenfold.core.data import load_dataset
    from tenfold.core.io import DataError
    from tenfold.gradinversion import verbs

    ds = load_dataset("cifar10-mini", limit=20)
    for i, (img, y) in enumerate(zip(ds.images, ds.labels)):
        (tmp_path / "mine" / ds.classes[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "mine" / ds.classes[y] / f"{i}.png")
    out = verbs.attack(PRESETS["smoke"], tmp_path / "run", data=f"folder:{tmp_path / 'mine'}", batch_size=2,
                       iterations=2)
    assert math.isfinite(out["psnr"]) and len(out["true_labels"]) == 2 and (tmp_path / "run" / "grid.png").is_file()
    (tmp_path / "small" / "a").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(ds.images[i, :, :10, :12].permute(1, 2, 0).numpy()).save(tmp_path / "small" / "a" / f"{i}.png")

    def no_attack(*a, **k):
        raise AssertionError("the attack ran on images it cannot score")

    monkeypatch.setattr(verbs, "run_attack", no_attack)
    with pytest.raises(DataError, match="12x10; the attack's SSIM needs at least 11 px"):
        verbs.attack(PRESETS["smoke"], tmp_path / "run2", data=f"folder:{tmp_path / 'small'}", batch_size=2,
                     iterations=2)


def test_audit_draws_unique_labels_as_far_as_the_data_has_classes(tmp_path):
    """audit used to assume CIFAR-10's 10 classes: on a user folder of 3 classes B = 4 was refused ("cannot draw 4
    images with unique labels"), and beyond 10 classes B > 10 drew repeats unrecorded. Now unique labels up to the
    data's class count, repeats past it, and each row says which."""
    from PIL import Image

    from tenfold.core.data import load_dataset
    from tenfold.gradinversion import verbs

    ds = load_dataset("cifar10-mini", limit=60)
    for i, (img, y) in enumerate(zip(ds.images, ds.labels)):
        if int(y) < 3:
            (tmp_path / "mine" / ds.classes[y]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "mine" / ds.classes[y] / f"{i}.png")
    cfg = dataclasses.replace(PRESETS["smoke"], group_size=1, label_rule="rowsum")
    (tmp_path / "run").mkdir()
    verbs.audit(cfg, tmp_path / "run", data=f"folder:{tmp_path / 'mine'}", batch_sizes=(3, 4), noise_sigmas=(),
                prune_ratios=(), iterations=1)
    rows = json.loads((tmp_path / "run" / "audit.json").read_text())["rows"]
    assert [(r["batch_size"], r["unique_labels"]) for r in rows] == [(3, True), (4, False)]


def test_audit_warns_once_and_a_resume_with_nothing_to_resume_prints_no_threat_model(tmp_path, capsys):
    """audit repeated the same warm-up warning before every row (one attack per row, same settings): now once. And
    `attack --resume` on a run with no checkpoint printed the threat model, as if it were attacking, before
    refusing."""
    from tenfold import cli

    argv = ["gradinversion", "audit", "--preset", "smoke", "--data", "cifar10-mini", "--batch-sizes", "1", "2",
            "--noise-sigmas", "0.01", "--prune-ratios", "--iterations", "2", "--out", str(tmp_path / "audit")]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert [ln for ln in err.splitlines() if "warm-up" in ln] == [
        "warning: warm-up of 4 steps >= the run's 2 iterations: the learning rate rises through the whole run and "
        "never decays; set warmup below iterations (CLI: --set warmup=N)"]
    assert len(json.loads((tmp_path / "audit" / "audit.json").read_text())["rows"]) == 4
    run = str(tmp_path / "run")
    assert cli.main(["gradinversion", "attack", "--preset", "smoke", "--data", "cifar10-mini", "--batch-size", "1",
                     "--iterations", "2", "--out", run]) == 0
    assert "threat model: " in capsys.readouterr().out
    assert cli.main(["gradinversion", "attack", "--resume", "--out", run]) != 0
    out, err = capsys.readouterr()
    assert "threat model" not in out + err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: nothing to resume: no attack checkpoint in {run}/checkpoints"]


def test_each_warning_once_gives_new_warnings_even_when_the_attack_fails():
    """audit's de-duplication: a repeated message is dropped, a new one given, and one raised before a failure is
    still given (a review found it lost when the attack raised)."""
    import warnings

    from tenfold.core.io import TenfoldWarning
    from tenfold.gradinversion.verbs import _each_warning_once

    said: set[str] = set()
    with warnings.catch_warnings(record=True) as out:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="attack failed"), _each_warning_once(said):
            warnings.warn("w1", TenfoldWarning, stacklevel=1)
            raise RuntimeError("attack failed")
        with _each_warning_once(said):
            warnings.warn("w1", TenfoldWarning, stacklevel=1)
            warnings.warn("w2", TenfoldWarning, stacklevel=1)
    assert [str(w.message) for w in out] == ["w1", "w2"] and said == {"w1", "w2"}


def test_cli_resume_from_another_folder_finds_relative_paths(tmp_path, capsys, monkeypatch):
    """Options are saved as typed: a run started with --data folder:mine (relative) could only be resumed from the
    folder it started in ("not found" elsewhere). The saved cwd now resolves them."""
    import json

    from PIL import Image

    from tenfold import cli
    from tenfold.core.data import load_dataset

    ds = load_dataset("cifar10-mini", limit=12)
    for i, (img, y) in enumerate(zip(ds.images, ds.labels)):
        (tmp_path / "work" / "mine" / ds.classes[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "work" / "mine" / ds.classes[y] / f"{i}.png")
    monkeypatch.chdir(tmp_path / "work")
    argv = ["gradinversion", "attack", "--preset", "smoke", "--data", "folder:mine", "--batch-size", "1",
            "--iterations", "6", "--set", "ckpt_every=3", "--json", "--out", "run"]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["gradinversion", "attack", "--resume", "--json", "--out", "work/run"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["psnr"] == first["psnr"] and again["true_labels"] == first["true_labels"]


def test_cli_attack_resume_keeps_the_batch_and_result(tmp_path, capsys):
    """`attack --resume --out RUN` continues from the saved loop state with the run's own options (here a
    non-default --batch-seed) and reports the result of the uninterrupted run."""
    import json

    from tenfold import cli

    run = str(tmp_path / "run")
    argv = ["gradinversion", "attack", "--preset", "smoke", "--data", "cifar10-mini", "--batch-size", "2",
            "--batch-seed", "3", "--set", "ckpt_every=5", "--json", "--out", run]
    assert cli.main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "run" / "checkpoints" / "step-00000015.json").is_file()
    assert cli.main(["gradinversion", "attack", "--resume", "--json", "--out", run]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["psnr"] == first["psnr"] and again["true_labels"] == first["true_labels"]


def test_audit_and_attack_refuse_bad_settings_before_any_attack(tmp_path, monkeypatch):
    """A NaN noise sigma, a prune ratio of 1, no batch sizes or negative iterations are refused up front: before
    the first attack (the NaN used to fail only at its own row, after the clean row's attack had run)."""
    from tenfold.gradinversion import verbs

    def no_attack(*a, **k):
        raise AssertionError("an attack ran before the settings were checked")

    monkeypatch.setattr(verbs, "run_attack", no_attack)
    cfg, kw = PRESETS["smoke"], dict(data="cifar10-mini", iterations=3)
    for bad, match in ((dict(noise_sigmas=(1e-3, math.nan)), "finite noise_sigma"),
                       (dict(prune_ratios=(0.5, 1.0)), "prune_ratio < 1"),
                       (dict(batch_sizes=()), "one or more sizes"),
                       (dict(batch_sizes=(1, 0)), "one or more sizes"),
                       (dict(iterations=-1), "iterations must be >= 0")):
        with pytest.raises(ConfigError, match=match):
            verbs.audit(cfg, tmp_path, **{**kw, **bad})
    with pytest.raises(ConfigError, match="iterations must be >= 0"):
        verbs.attack(cfg, tmp_path, data="cifar10-mini", batch_size=1, iterations=-5)
    assert list(tmp_path.iterdir()) == []


def test_reference_psnr_known_answers():
    """Images of colour c with a +-d checkerboard: the own-mean-colour guess misses by d everywhere (PSNR
    -20 log10 d); a dataset of colour k misses by c - k +- d (MSE (c - k)^2 + d^2)."""
    from tenfold.gradinversion.evaluation import reference_psnr

    c = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64).view(1, 3, 1, 1)
    board = ((torch.arange(4).view(4, 1) + torch.arange(4).view(1, 4)) % 2 * 2.0 - 1.0).double()  # +-1, mean 0
    d = 0.1
    true = (c + d * board).expand(2, 3, 4, 4)
    k = torch.tensor([0.3, 0.4, 0.6], dtype=torch.float64)  # the dataset's mean colour, one value per channel
    data = (k.view(1, 3, 1, 1) + 0.05 * torch.tensor([1.0, -1.0] * 3, dtype=torch.float64).view(6, 1, 1, 1)) \
        .expand(6, 3, 4, 4)  # images vary around it
    ref = reference_psnr(true, data)
    assert ref["psnr_own_mean_colour"] == pytest.approx(-20 * math.log10(d), abs=1e-9)
    mse = float(((c.flatten() - k) ** 2).mean()) + d**2
    assert ref["psnr_dataset_mean_colour"] == pytest.approx(-10 * math.log10(mse), abs=1e-9)
    with pytest.raises(InputError):
        reference_psnr(true, torch.rand(5, 1, 4, 4))  # grey data for colour images


def test_audit_table_and_resume_after_a_crash(tmp_path, monkeypatch):
    """`audit` attacks each (batch size, defence) pair once and tables every row; a run that crashed mid-table
    resumes to the same table, running only the missing attacks."""
    from tenfold.gradinversion import verbs

    kw = dict(data="cifar10-mini", batch_sizes=(1, 2), noise_sigmas=(10.0,), prune_ratios=(0.9,), iterations=3)
    cfg = dataclasses.replace(PRESETS["smoke"], group_size=1)
    (tmp_path / "full").mkdir()
    full = verbs.audit(cfg, tmp_path / "full", **kw)
    table = json.loads((tmp_path / "full" / "audit.json").read_text())["rows"]
    assert full["rows"] == len(table) == 6 and (tmp_path / "full" / "audit.png").is_file()
    assert [(r["batch_size"], r["defence"]) for r in table] == [(B, d) for B in (1, 2)
                                                                 for d in ("none", "noise 10", "prune 0.9")]
    assert all(math.isfinite(r["psnr"]) for r in table)
    # every row carries the two no-gradient references of its batch, the same within a batch size
    for B in (1, 2):
        refs = {(r["psnr_dataset_mean_colour"], r["psnr_own_mean_colour"]) for r in table if r["batch_size"] == B}
        assert len(refs) == 1 and next(iter(refs))[0] < next(iter(refs))[1]
    assert full["psnr_own_mean_colour_b1"] == table[0]["psnr_own_mean_colour"]
    assert (tmp_path / "full" / "audit.csv").read_text().splitlines()[0].endswith(
        "psnr_dataset_mean_colour,psnr_own_mean_colour,grad_distance_truth,grad_distance_output")
    # the defended update's distance from the true batch's gradient (cosine, the smoke preset's): none for no
    # defence, most for noise 10 (far above every gradient entry), some for pruning 90 % of each layer
    dist = {(r["batch_size"], r["defence"]): r["grad_distance_truth"] for r in table}
    for B in (1, 2):
        assert abs(dist[(B, "none")]) < 1e-5
        assert dist[(B, "noise 10")] > 0.5 > dist[(B, "prune 0.9")] > 1e-3
    assert all(r["grad_distance_output"] > 1e-3 for r in table)

    real, calls = verbs.run_attack, []

    def crash_on_the_fourth(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    (tmp_path / "cut").mkdir()
    monkeypatch.setattr(verbs, "run_attack", crash_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        verbs.audit(cfg, tmp_path / "cut", **kw)
    assert len((tmp_path / "cut" / "audit_rows.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ConfigError, match="already holds audit rows"):
        verbs.audit(cfg, tmp_path / "cut", **kw)
    calls.clear()
    monkeypatch.setattr(verbs, "run_attack", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    verbs.audit(cfg, tmp_path / "cut", resume=True, **kw)
    assert len(calls) == 3 and json.loads((tmp_path / "cut" / "audit.json").read_text())["rows"] == table


def test_leak_then_attack_equals_the_one_go_attack(tmp_path):
    """The README's two-step flow: `leak` saves what the client shares (update, batch, labels, BN statistics) and
    `attack --target` inverts it; the result equals simulating the client and attacking in one go."""
    from tenfold.core.io import load_checkpoint
    from tenfold.gradinversion import verbs

    cfg = dataclasses.replace(PRESETS["smoke"], iterations=3, group_size=1)
    opts = dict(data="cifar10-mini", batch_size=2, batch_seed=5)
    for d in ("leak", "a", "b"):
        (tmp_path / d).mkdir()
    leaked = verbs.leak(cfg, tmp_path / "leak", **opts)
    state, header = load_checkpoint(tmp_path / "leak" / "leak", method="gradinversion")
    assert state["images"].shape == (2, 3, 32, 32) and len(state["gradients"]) == 59  # ResNet-20: 59 parameters
    assert math.isfinite(leaked["grad_norm"]) and header["extra"]["data"] == "cifar10-mini"
    two_step = verbs.attack(cfg, tmp_path / "a", target=str(tmp_path / "leak"))
    one_go = verbs.attack(cfg, tmp_path / "b", **opts)
    assert two_step["true_labels"] == one_go["true_labels"] == sorted(state["labels"].tolist())
    assert two_step["psnr"] == one_go["psnr"] and two_step["restored_labels"] == one_go["restored_labels"]
    from tenfold.core.data import load_dataset
    from tenfold.gradinversion.evaluation import reference_psnr  # the no-gradient guesses of this very batch

    want = reference_psnr(state["images"], load_dataset("cifar10-mini").tensors()[0])
    for k, v in want.items():
        assert two_step[k] == one_go[k] == pytest.approx(v, abs=1e-9)


def test_attack_creates_no_tensor_on_the_default_device(on_meta_default):
    """Every tensor the client simulation and the attack create follows its inputs' device, or is put on the CPU on
    purpose. Under ``torch.set_default_device("meta")`` a factory call without ``device=`` makes a meta tensor and
    the run fails. The CUDA-only bugs found on the first GPU run (session 11: the Yin-rule probe and the restored
    labels left on the CPU) were of this kind; CI has no GPU, so this is how it checks. The results are unchanged:
    Langevin noise, the BN prior, group consistency with both registrations, FedAvg, defences, two label rules."""
    from tenfold.gradinversion import Config

    net = _tiny_net()
    x, y = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 4])
    base = Config(iterations=3, warmup=1, group_size=2, group_every=1, alpha_group=0.1, group_warmup=0.0,
                  langevin_sigma=0.2, alpha_bn=0.1)
    cfgs = [base, dataclasses.replace(base, registration="similarity", init="rand", label_rule="count"),
            dataclasses.replace(base, update="fedavg", local_steps=2, signed=True, init="zeros")]

    def run_all() -> list[torch.Tensor]:
        out = []
        for c in cfgs:
            g = simulate_client(net, x, y, update=c.update, local_steps=c.local_steps)
            g = apply_defences(g, noise_sigma=1e-3, prune_ratio=0.5, seed=1)
            res = build(c).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.25] * 3)
            out += [res.images, res.best_seed, res.labels.float()]
        return out

    ref, got = run_all(), on_meta_default(run_all)
    assert all(t.device.type == "cpu" and torch.equal(t, r) for t, r in zip(got, ref))


# ---------------------------------------------------------------------------------------------
# Defects found by the session-12 review, each with the case that exposed it
# ---------------------------------------------------------------------------------------------
def test_count_rule_reads_a_fedavg_update():
    """`count` reads the bias gradient's magnitude, so a FedAvg update θ_k - θ_0 ≈ -η k ∇ is divided by -η k, not
    only sign-flipped (with η = 0.01 the flipped update made every count the prior's: 0.5 accuracy here)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 5)).eval()
    net.input_size = (3, 6, 6)
    x = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])
    for update, k in (("gradient", 1), ("fedavg", 1), ("fedavg", 2)):
        cfg = dataclasses.replace(PRESETS["smoke"], label_rule="count", update=update, local_steps=k, local_lr=0.01)
        g = simulate_client(net, x, y, update=update, local_steps=k, local_lr=0.01)
        assert build(cfg).restore_labels(net, g, 8).tolist() == y.tolist(), (update, k)


def test_attack_on_a_leak_takes_the_clients_settings_and_model(tmp_path, monkeypatch):
    """`attack --target` attacks what the leak run shared: its update kind, local steps, defences and client mode,
    and the model as the leak initialised it (``weights=none`` is seeded by the leak's seed, not the attack's).
    It used to take all of these from its own config: a FedAvg update matched as a gradient, a noise defence
    recorded that was never applied, and a different random model."""
    from tenfold.core.io import TenfoldWarning
    from tenfold.gradinversion import verbs

    leak_cfg = dataclasses.replace(PRESETS["smoke"], update="fedavg", local_steps=2, local_lr=0.05, seed=0)
    (tmp_path / "leak").mkdir()
    verbs.leak(leak_cfg, tmp_path / "leak", weights="none", data="cifar10-mini", batch_size=2)
    seen = {}

    def capture(cfg, net, g, x, y, *a, **k):
        seen.update(cfg=cfg, net=net, g=g, x=x, y=y)
        raise KeyboardInterrupt  # stop before the inversion: the inputs are what this test checks

    monkeypatch.setattr(verbs, "run_attack", capture)
    attack_cfg = dataclasses.replace(PRESETS["smoke"], seed=1, noise_sigma=0.1)
    with (pytest.warns(TenfoldWarning, match=r"update=fedavg \(this config: gradient\).*noise_sigma=0.0"),
          pytest.raises(KeyboardInterrupt)):
        verbs.attack(attack_cfg, tmp_path / "a", target=str(tmp_path / "leak"))
    c = seen["cfg"]
    assert (c.update, c.local_steps, c.local_lr, c.noise_sigma, c.seed) == ("fedavg", 2, 0.05, 0.0, 1)
    again = simulate_client(seen["net"], seen["x"], seen["y"], c.resolved_client_mode(), c.update, c.local_steps,
                            c.local_lr)
    assert all(torch.equal(a, b) for a, b in zip(again, seen["g"]))  # the very model and client the leak had


def test_yin_guard_probes_models_without_input_size():
    """Yin's rule assumes features h >= 0 before the classifier. A model without ``input_size`` (any user's
    nn.Module) used to skip the check; the attack's own input shape now drives the probe."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Tanh(),
                        nn.Linear(4, 5)).eval()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([0, 3])
    g = simulate_client(net, x, y)
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=2, warmup=1, group_size=1, label_rule="yin")
    with pytest.raises(ConfigError, match="non-negative features"):
        build(cfg).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.5] * 3, input_shape=(3, 6, 6))
    res = build(dataclasses.replace(cfg, force_label_rule=True)).run(net, g, num_images=2, mean=[0.5] * 3,
                                                                      std=[0.5] * 3, input_shape=(3, 6, 6))
    assert res.labels.shape == (2,)


class _BNOutOfOrder(nn.Module):
    """Declares its BN layers in the opposite order to the one they run in."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_late = nn.BatchNorm2d(4)
        self.conv0, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn_early = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.bn_early(self.conv0(x)))
        return self.fc(torch.relu(self.bn_late(h)).mean((2, 3)))


def test_bn_prior_pairs_each_layer_with_its_own_statistics():
    """R_BN pairs every BN layer with its own reference, whatever order the model declares them in, and the
    first-layer weight goes to the layer that runs first. Pairing two lists by position gave a nonzero R_BN at
    the true batch here, where it must be 0."""
    from tenfold.gradinversion.attack import _BNRecorder, _Functional

    torch.manual_seed(0)
    net, x = _BNOutOfOrder().eval(), torch.rand(4, 3, 6, 6)
    # train mode: each layer normalises by the batch's own statistics, so planting the buffers changes no input
    stats = bn_batch_stats(net, x, "train")  # in declaration order: bn_late, bn_early
    with torch.no_grad():
        for m, (mu, var) in zip((net.bn_late, net.bn_early), stats):
            m.running_mean.copy_(mu)
            m.running_var.copy_(var)
    f = _Functional(net, "train")
    refs = [(m.running_mean.clone(), m.running_var.clone()) for m in f.bn]
    rec = _BNRecorder(f.bn)
    with torch.no_grad():
        f(f.theta0, x)
    assert float(bn_prior(*rec.paired(refs), 10.0)) < 1e-5
    shifted = [(mu + (0.1 if i == 1 else 0.0) / 2, var) for i, (mu, var) in enumerate(refs)]  # bn_early, |Δμ| 0.1
    assert float(bn_prior(*rec.paired(shifted), 10.0)) == pytest.approx(10 * 0.1, rel=1e-4)
    shifted = [(mu + (0.1 if i == 0 else 0.0) / 2, var) for i, (mu, var) in enumerate(refs)]  # bn_late: weight 1
    assert float(bn_prior(*rec.paired(shifted), 10.0)) == pytest.approx(0.1, rel=1e-4)


def test_user_bn_statistics_and_empty_batches_are_checked():
    """A user's BN statistics of the wrong shape used to broadcast silently (one scalar pair for a 4-channel layer
    gave a large R_BN), and an empty client batch "leaked" all-zero gradients: both are one clear error now."""
    net = _tiny_net()
    x, y = torch.rand(2, 3, 6, 6), torch.tensor([1, 4])
    g = simulate_client(net, x, y, mode="train")
    cfg = dataclasses.replace(PRESETS["smoke"], iterations=2, warmup=1, group_size=1, alpha_bn=0.1,
                              client_mode="train", bn_stats="user")
    with pytest.raises(InputError, match=r"bn_stats layer 0: mean and var need shape \(4,\)"):
        build(cfg).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.5] * 3,
                       bn_ref=[(torch.zeros(()), torch.ones(()))])
    with pytest.raises(InputError, match="NaN"):
        build(cfg).run(net, g, num_images=2, mean=[0.5] * 3, std=[0.5] * 3,
                       bn_ref=[(torch.full((4,), math.nan), torch.ones(4))])
    with pytest.raises(InputError, match="no images"):
        simulate_client(net, x[:0], y[:0])


def test_client_statistics_from_an_eval_mode_client_warn():
    """An eval-mode client's BN buffers do not move, so it cannot send its batch statistics: bn_stats=user with
    client_mode=eval gives the attacker more than the threat model, and says so; train mode (auto) is silent."""
    import warnings

    from tenfold.core.io import TenfoldWarning

    with pytest.warns(TenfoldWarning, match="sends no batch statistics"):
        build(dataclasses.replace(PRESETS["smoke"], bn_stats="user", client_mode="eval"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TenfoldWarning)
        build(dataclasses.replace(PRESETS["smoke"], bn_stats="user"))  # auto: train


def test_attack_reports_lpips_with_a_local_backbone_and_checks_the_file_first(tmp_path, monkeypatch):
    """--lpips-weights FILE (a torchvision AlexNet checkpoint; seeded random weights here) puts LPIPS into the
    metrics; a file that is not one fails before the attack runs, so no attack time is lost to it."""
    import torchvision

    from tenfold.core.io import CheckpointError
    from tenfold.gradinversion import verbs

    pytest.importorskip("lpips")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    cfg = dataclasses.replace(PRESETS["smoke"], group_size=1)
    out = verbs.attack(cfg, tmp_path / "run", data="cifar10-mini", batch_size=2, iterations=2,
                       lpips_weights=str(tmp_path / "alexnet.pth"))
    assert isinstance(out["lpips"], float) and 0 < out["lpips"] < 2 and "alexnet.pth" in out["lpips_note"]
    plain = verbs.attack(cfg, tmp_path / "run2", data="cifar10-mini", batch_size=2, iterations=2)
    assert plain["lpips"] is None and plain["lpips_note"].startswith("skipped")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")

    def no_attack(*a, **k):
        raise AssertionError("the attack ran before the LPIPS file was checked")

    monkeypatch.setattr(verbs, "run_attack", no_attack)
    with pytest.raises(CheckpointError, match="not a torchvision AlexNet"):
        verbs.attack(cfg, tmp_path / "run3", data="cifar10-mini", batch_size=2, iterations=2,
                     lpips_weights=str(tmp_path / "other.pth"))


def test_leak_records_the_threat_model_of_its_own_run(tmp_path):
    """threat_model.json, the leak checkpoint and the returned metrics all hold this run's switches (defences
    included), not another config's: nothing read threat_model.json back before."""
    from tenfold.core.io import load_checkpoint
    from tenfold.gradinversion import Config, verbs

    cfg = dataclasses.replace(PRESETS["smoke"], noise_sigma=0.01, prune_ratio=0.5)
    tm = cfg.threat_model()
    assert tm != Config().threat_model() and tm != PRESETS["smoke"].threat_model()
    out = verbs.leak(cfg, tmp_path, data="cifar10-mini", batch_size=2)
    assert json.loads((tmp_path / "threat_model.json").read_text()) == tm == out["threat_model"]
    assert tm["defences"] == {"noise_sigma": 0.01, "prune_ratio": 0.5}
    _, header = load_checkpoint(tmp_path / "leak", method="gradinversion")
    assert header["extra"]["threat_model"] == tm


def test_audit_resumes_inside_a_batch_size_and_applies_each_rows_defence(tmp_path, monkeypatch):
    """A crash after two of a batch size's three rows resumes with only the third attack (the resume test above
    crashes on a batch-size boundary, where a skip of the whole batch size hides the per-row check); each row's
    attack gets the clean update, sigma = 10 noise, or a >= 90 % pruned update, and audit.json holds the run's
    threat model."""
    from tenfold.gradinversion import verbs

    kw = dict(data="cifar10-mini", batch_sizes=(1,), noise_sigmas=(10.0,), prune_ratios=(0.9,), iterations=1)
    cfg = dataclasses.replace(PRESETS["smoke"], group_size=1)
    real, seen = verbs.run_attack, []

    def record(c, net, g, *a, **k):
        seen.append((c, [t.detach().cpu().clone() for t in g]))
        if len(seen) == 3 and crash:
            raise KeyboardInterrupt
        return real(c, net, g, *a, **k)

    monkeypatch.setattr(verbs, "run_attack", record)
    crash = False
    (tmp_path / "full").mkdir()
    verbs.audit(cfg, tmp_path / "full", **kw)
    full = json.loads((tmp_path / "full" / "audit.json").read_text())
    per_row = {**cfg.threat_model(), "defences": "per row: each row's noise_sigma and prune_ratio"}
    assert full["threat_model"] == per_row and [r["defence"] for r in full["rows"]] == ["none", "noise 10", "prune 0.9"]
    (c0, clean), (c1, noisy), (c2, pruned) = seen
    assert (c0.noise_sigma, c0.prune_ratio, c1.noise_sigma, c2.prune_ratio) == (0.0, 0.0, 10.0, 0.9)
    diff = torch.cat([(n - g).flatten() for n, g in zip(noisy, clean)])
    assert diff.numel() > 10_000 and abs(diff.std().item() - 10.0) < 0.2 and abs(diff.mean().item()) < 0.2
    for p, g in zip(pruned, clean):
        if g.numel() > 1:
            assert int((p == 0).sum()) >= int(0.9 * g.numel()) and torch.equal(p[p != 0], g[p != 0])
    seen.clear()
    crash = True
    (tmp_path / "cut").mkdir()
    with pytest.raises(KeyboardInterrupt):
        verbs.audit(cfg, tmp_path / "cut", **kw)
    assert len((tmp_path / "cut" / "audit_rows.jsonl").read_text().splitlines()) == 2
    seen.clear()
    crash = False
    verbs.audit(cfg, tmp_path / "cut", resume=True, **kw)
    assert [c.prune_ratio for c, _ in seen] == [0.9]  # only the missing row ran
    assert json.loads((tmp_path / "cut" / "audit.json").read_text())["rows"] == full["rows"]
    assert len((tmp_path / "cut" / "audit_rows.jsonl").read_text().splitlines()) == 3


def test_attack_warns_when_its_label_rule_cannot_repeat_the_batchs_labels():
    """A batch with repeated labels restored by a distinct-label rule loses a label per repeat: one warning names
    count_mass. Silent for count_mass, for unique labels, and for known (oracle) labels."""
    from tenfold.core.io import TenfoldWarning
    from tenfold.gradinversion.verbs import _warn_repeats

    rep, uniq = torch.tensor([3, 1, 3, 0]), torch.tensor([3, 1, 2, 0])
    with pytest.warns(TenfoldWarning, match="label_rule=count_mass"):
        _warn_repeats(dataclasses.replace(PRESETS["cpu"], label_rule="yin_mass"), rep)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_repeats(dataclasses.replace(PRESETS["cpu"], label_rule="count_mass"), rep)
        _warn_repeats(dataclasses.replace(PRESETS["cpu"], label_rule="yin_mass"), uniq)
        _warn_repeats(dataclasses.replace(PRESETS["cpu"], label_rule="yin_mass", labels="oracle"), rep)


def test_a_group_warmup_past_the_whole_run_is_refused():
    """Session 22 review: group_warmup=2 meant the group term never started, without a word."""
    with pytest.raises(ConfigError, match=r"group_warmup is the fraction .* in \[0, 1\]; got 2"):
        GradInversion(group_warmup=2)
