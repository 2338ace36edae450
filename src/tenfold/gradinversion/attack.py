"""GradInversion (Yin et al., CVPR 2021): the client's shared gradient, the inversion objective, the attack loop.

Threat model: the attacker knows the architecture and weights W and receives the averaged gradient
``∇W = (1/B) Σ_i ∇_W L(x_i, y_i)`` of one FedSGD step (or the FedAvg update of k local steps).
Candidates run through ``torch.func.functional_call`` on a private copy of the model with freshly
cloned buffers, so the attacked model is never mutated (train-mode BN cannot touch its running stats).

Objective (paper Eq. 2-6, per seed g):
    L(x̂_g) = α_G D(∇W(x̂_g, ŷ), ∇W) + α_TV R_TV(x̂_g) + α_l2 R_l2(x̂_g) + α_BN R_BN(x̂_g)
             + α_group ||x̂_g - E_g||_2
where E_g is the group consensus (registered mean of G seeds) mapped back into seed g's frame.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tenfold.core.engine import Checkpointer, warmup_cosine
from tenfold.core.io import CheckpointError, ConfigError, InputError, TenfoldWarning, check_tensor
from tenfold.gradinversion.labels import NONNEGATIVE_FEATURE_RULES, recover_labels
from tenfold.gradinversion.registration import consensus, invert, warp

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --------------------------------------------------------------------------------------------
# The model as a pure function of (parameters, buffers, images)
# --------------------------------------------------------------------------------------------
def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter that requires grad, in ``model.parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def check_gradients(model: nn.Module, grads: Sequence[torch.Tensor], what: str = "target gradient") -> None:
    """Raise InputError unless ``grads`` matches the trainable parameters in order and shape, is finite and is not
    all zeros (nothing to invert)."""
    params = trainable_parameters(model)
    if not isinstance(grads, (list, tuple)) or len(grads) != len(params):
        n = len(grads) if isinstance(grads, (list, tuple)) else type(grads).__name__
        raise InputError(f"{what} must be a list of {len(params)} tensors, one per trainable parameter in "
                         f"model.parameters() order, got {n}")
    for (name, p), g in zip(params, grads):
        check_tensor(g, f"{what} for '{name}'", tuple(p.shape))
        if g.dtype not in (torch.float32, torch.float64):  # float16 overflowed in the attack's loss: "lower lr"
            raise InputError(f"{what} for '{name}' is {str(g.dtype).replace('torch.', '')}; pass float32 or float64 "
                             f"gradients (e.g. [g.float() for g in grads])")
    if not any(bool(g.ne(0).any()) for g in grads):  # used to be "inverted" into noise with label accuracy 0
        raise InputError(f"the shared gradient is all zeros (nothing to invert): every entry of the {what} is 0")


def classifier_name(model: nn.Module, input_shape: Sequence[int] | None = None) -> str:
    """Module name of the classifier: the nn.Linear whose output is the model's logits, found by a probe forward
    of one image of ``input_shape`` (default: the model's ``input_size``); without a shape, the last Linear
    declared. Declaration order alone picked a head declared before the body, or an auxiliary head after it."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("the model has no nn.Linear layer; label restoration needs the classifier's weight gradient")
    shape = input_shape if input_shape is not None else getattr(model, "input_size", None)
    if shape is None:
        return linears[-1][0]
    f = _Functional(model, "eval")
    mods = dict(f.net.named_modules())
    ran: list[tuple[str, torch.Tensor]] = []
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: ran.append((n, o))) for n, _ in linears]
    p = next(iter(f.net.parameters()), None)
    probe = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0),
                       dtype=p.dtype if p is not None else torch.float32, device="cpu")
    try:
        with torch.no_grad():
            out = f(f.theta0, probe.to(p.device if p is not None else "cpu"))
    except RuntimeError as e:  # mostly a shape the model cannot take: "mat1 and mat2 shapes cannot be multiplied"
        raise InputError(f"the model's forward on a probe of shape (1, {', '.join(map(str, shape))}) failed (is "
                         f"input_shape the model's (C, H, W)?): {str(e).splitlines()[0]}") from None
    finally:
        for h in hooks:
            h.remove()
    logits = out  # _Functional returns the logits (or raised one line)
    for n, o in reversed(ran):  # the Linear whose output is the logits: the same tensor, else the same values
        if o is logits:
            return n
    for n, o in reversed(ran):
        if o.numel() == logits.numel() and torch.equal(o.reshape(-1), logits.reshape(-1)):
            return n
    # logits = a transform of the last Linear to run (a temperature, a cast): it must have the logits' shape. Any
    # Linear with as many outputs as classes used to do, and a squeeze-excitation bottleneck read as the classifier
    if ran and ran[-1][1].shape == logits.shape:
        return ran[-1][0]
    raise ConfigError("cannot tell which nn.Linear layer gives the logits: none outputs them, and the last one to run "
                      f"({ran[-1][0] if ran else 'none'}) does not have their shape {tuple(logits.shape)}; label "
                      "restoration needs the classifier's weight gradient (or use labels=oracle)")


def _logits_of(out: Any) -> torch.Tensor | None:
    """The logits in a model's output: the tensor itself, a dict's or named tuple's ``logits`` (torchvision's
    Inception / GoogLeNet outputs), else the only tensor of a dict, tuple or list; None where that cannot be told.
    A tuple's first tensor used to be taken: for a ``(features, logits)`` model that was the features."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, tuple) and isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (dict, tuple, list)):
        ts = [v for v in (out.values() if isinstance(out, dict) else out) if isinstance(v, torch.Tensor)]
        return ts[0] if len(ts) == 1 else None
    return None


def _as_logits(out: Any) -> torch.Tensor:
    """:func:`_logits_of`, or one ConfigError line: the client's loss and the attack need the logits tensor."""
    logits = _logits_of(out)
    if logits is None:
        what = (f"a {type(out).__name__} of {len(out)} entries" if isinstance(out, (tuple, list, dict))
                else f"a {type(out).__name__}")
        raise ConfigError(f"the model's forward returns {what}, in which tenfold cannot tell the logits (a tensor, a "
                          "dict's or named tuple's 'logits', or a container's only tensor); wrap the model so that "
                          "forward returns the logits")
    return logits


def fc_layer(model: nn.Module, input_shape: Sequence[int] | None = None) -> tuple[int, nn.Linear]:
    """Index (among trainable parameters) of the classifier's weight (:func:`classifier_name`), and the layer."""
    names = [n for n, _ in trainable_parameters(model)]
    mname = classifier_name(model, input_shape)
    wname = f"{mname}.weight" if mname else "weight"
    if wname not in names:
        raise ConfigError(f"the classifier weight '{wname}' is frozen; label restoration needs its gradient")
    return names.index(wname), dict(model.named_modules())[mname]


def fc_gradients(model: nn.Module, shared: Sequence[torch.Tensor], update: str = "gradient", local_steps: int = 1,
                 local_lr: float = 0.01, input_shape: Sequence[int] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None, nn.Linear]:
    """The classifier's weight and bias gradient (bias: None without a trainable one) read from what a client
    shared, and the layer. A FedAvg update θ_k - θ_0 ≈ -η k ∇ (first order in η) is divided by -η k: the sign
    and order rules would need only the sign flip, but ``count`` reads the bias gradient's magnitude."""
    idx, fc = fc_layer(model, input_shape)
    if update == "gradient":
        scale = 1.0
    elif update == "fedavg" and local_lr > 0 and local_steps >= 1:
        scale = -1.0 / (local_lr * local_steps)
    else:
        raise ConfigError(f"update must be 'gradient', or 'fedavg' with local_lr > 0 and local_steps >= 1; got "
                          f"{update}, local_lr {local_lr}, local_steps {local_steps}")
    gb = shared[idx + 1] * scale if fc.bias is not None and fc.bias.requires_grad else None
    return shared[idx] * scale, gb, fc


class _Functional:
    """A private copy of ``model`` in a fixed mode, run functionally with cloned buffers."""

    def __init__(self, model: nn.Module, mode: str, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        if mode not in ("train", "eval"):
            raise ConfigError(f"client_mode must be 'train' or 'eval', got '{mode}'")
        self.net = copy.deepcopy(model).train(mode == "train").to(device=device, dtype=dtype)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in trainable_parameters(model)]
        own = dict(self.net.named_parameters())
        self.leaves = [own[n].requires_grad_(True) for n in self.names]  # the copy's own trainable weights
        self.theta0 = [t.detach() for t in self.leaves]
        self.buffers = {n: b.detach().clone() for n, b in self.net.named_buffers()}
        self.bn = [m for m in self.net.modules() if isinstance(m, _BN)]
        for m in self.bn:
            m.momentum = 0.0  # train-mode forwards of the private copy leave its running stats as they were

    def __call__(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``x`` in [0, 1] under trainable parameters ``params`` (buffers cloned per call)."""
        bufs = {n: b.clone() for n, b in self.buffers.items()}
        with _one_value_bn_is_one_line(x):
            return _as_logits(functional_call(self.net, ({**dict(zip(self.names, params)), **bufs}), (x,)))

    def update(self, x: torch.Tensor, y: torch.Tensor, update: str, local_steps: int, local_lr: float,
               create_graph: bool) -> list[torch.Tensor]:
        """The shared quantity: ∇W (``gradient``) or θ_k - θ_0 after k local SGD steps (``fedavg``)."""
        if update == "gradient":
            # fast path: the private copy's own parameters are the leaves, so no functional_call re-binding
            # and no buffer copies per call (the attack loop's hot path)
            with _one_value_bn_is_one_line(x):
                loss = F.cross_entropy(_as_logits(self.net(x)), y)  # mean over the batch: the averaged gradient
            # a trainable parameter the forward never uses shares a zero gradient (it was a raw RuntimeError)
            return list(torch.autograd.grad(loss, self.leaves, create_graph=create_graph, allow_unused=True,
                                            materialize_grads=True))
        if update != "fedavg":
            raise ConfigError(f"update must be 'gradient' or 'fedavg', got '{update}'")
        if local_steps < 1:
            raise ConfigError(f"local_steps must be >= 1, got {local_steps}")
        cur = [t.detach().clone().requires_grad_(True) for t in self.theta0]
        theta = cur
        for _ in range(local_steps):  # FedAvg: k full-batch local SGD steps
            g = torch.autograd.grad(F.cross_entropy(self(cur, x), y), cur, create_graph=create_graph,
                                    allow_unused=True, materialize_grads=True)
            cur = [t - local_lr * gi for t, gi in zip(cur, g)]
        return [c - t0 for c, t0 in zip(cur, theta)]


@contextlib.contextmanager
def _one_value_bn_is_one_line(x: torch.Tensor) -> Iterator[None]:
    """A train-mode BatchNorm that sees one value per channel (one image reduced to 1x1, e.g. a torchvision ResNet's
    last stage at 32 px) is undefined; torch's ValueError reached the user as a traceback."""
    try:
        yield
    except ValueError as e:
        if "Expected more than 1 value per channel when training" not in str(e):
            raise
        raise InputError(f"a train-mode client cannot run this model on a batch of {x.shape[0]} image(s) of "
                         f"{tuple(x.shape[2:])} px: a BatchNorm layer sees one value per channel; use "
                         "client_mode=eval or a larger batch") from None


PIXEL_TOLERANCE = 1e-4  # images a hair outside [0, 1] (rounding) are accepted


def simulate_client(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "eval",
                    update: str = "gradient", local_steps: int = 1, local_lr: float = 0.01) -> list[torch.Tensor]:
    """What a client shares: the averaged gradient of batch ``x (B, C, H, W)`` in [0, 1], labels ``y (B,)``
    (or the FedAvg update θ_k - θ_0); one tensor per trainable parameter. ``model`` is not modified."""
    check_tensor(x, "x", ("B", None, None, None))
    check_tensor(y, "y", (x.shape[0],))
    if not x.shape[0]:  # an empty batch used to "leak" all-zero gradients
        raise InputError("x holds no images: a client batch needs at least one")
    want = getattr(model, "input_size", None)
    if want is not None and x.shape[1] != want[0]:
        raise InputError(f"x has {x.shape[1]} channel(s) but the model expects {want[0]} (its input_size "
                         f"{tuple(want)})")
    lo, hi = float(x.min()), float(x.max())
    if lo < -PIXEL_TOLERANCE or hi > 1 + PIXEL_TOLERANCE:  # 0..255 images used to be taken as they were
        raise InputError(f"x must hold pixel values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
                         + ("; divide 0-255 images by 255" if hi > 1.5 else ""))
    if update == "fedavg" and not (math.isfinite(local_lr) and local_lr > 0):  # -1 was gradient ascent, silently
        raise ConfigError(f"local_lr must be a finite number > 0, got {local_lr}")
    f = _Functional(model, mode, dtype=x.dtype, device=x.device)
    _check_labels(y, f, x[:2], "y")
    with torch.enable_grad():
        out = f.update(x, y.to(x.device).long(), update, local_steps, local_lr, create_graph=False)  # labels follow x
    if not all(bool(torch.isfinite(g).all()) for g in out):  # (it was blamed on the user's input, later)
        raise InputError("the client's update is not finite: " + (
            f"its {local_steps} local SGD steps at local_lr {local_lr:g} diverged; lower them" if update == "fedavg"
            else "the model's loss or gradient overflowed on this batch"))
    return [g.detach() for g in out]


def _check_labels(y: torch.Tensor, f: _Functional, x: torch.Tensor, what: str) -> None:
    """Raise InputError unless ``y`` holds whole class indices in [0, number of logits of ``f`` on ``x``).
    cross_entropy would silently ignore a label of -1 (its ignore_index) and fail obscurely past the last logit."""
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise InputError(f"{what} must hold integer class labels, got fractional values")
    if not y.numel():
        return
    with torch.no_grad():
        n = f(f.theta0, x).shape[-1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n:
        raise InputError(f"{what} must hold class labels in [0, {n}) (the model's outputs), got {lo if lo < 0 else hi}")


def check_labels(model: nn.Module, y: torch.Tensor, x: torch.Tensor, what: str = "labels") -> None:
    """Raise InputError unless ``y`` holds class indices the ``model`` outputs on images like ``x`` (B, C, H, W)."""
    f = _Functional(model, "eval", dtype=x.dtype, device=x.device)
    _check_labels(y, f, x[:2], what)


def bn_batch_stats(model: nn.Module, x: torch.Tensor, mode: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, biased var) of every BN layer's input for batch ``x`` in a ``mode`` forward: what a train-mode
    client's BN layers compute (and its updated buffers reveal). The mode matters past the first BN layer: a
    train-mode forward normalises each layer by the batch's own statistics, so the next layer's input differs
    from an eval-mode forward's. ``mode`` must be the attack's ``client_mode`` for the BN prior to vanish at x̂ = x."""
    f = _Functional(model, mode, dtype=x.dtype, device=x.device)
    rec = _BNRecorder(f.bn)
    with torch.no_grad():
        f(f.theta0, x)
    rec.close()
    if len(rec.stats) != len(f.bn):
        raise InputError(f"{len(f.bn) - len(rec.stats)} of the model's {len(f.bn)} BN layers did not run in its "
                         "forward")
    return [(rec.stats[i][0].detach(), rec.stats[i][1].detach()) for i in range(len(f.bn))]


def apply_defences(grads: Sequence[torch.Tensor], noise_sigma: float = 0.0, prune_ratio: float = 0.0,
                   seed: int = 0) -> list[torch.Tensor]:
    """Client-side defences: per-layer magnitude pruning of the smallest ``prune_ratio`` entries (Zhu et al.
    2019), then additive Gaussian noise N(0, noise_sigma^2) on every entry (DP-SGD style, no clipping)."""
    if not 0.0 <= prune_ratio < 1.0 or not 0.0 <= noise_sigma < math.inf:  # NaN fails both
        raise ConfigError(f"need 0 <= prune_ratio < 1 and a finite noise_sigma >= 0, got {prune_ratio}, {noise_sigma}")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for g in grads:
        g = g.detach().clone()
        if prune_ratio > 0 and g.numel() > 1:
            # round, not int(): 0.29 * 100 is 28.999..., which pruned 28; exactly k entries, ties broken by position
            # (a threshold zeroed every entry tied with the k-th)
            k = min(round(prune_ratio * g.numel()), g.numel() - 1)
            if k > 0:
                flat = g.flatten()
                idx = torch.argsort(flat.abs(), stable=True)[:k]
                g = flat.index_fill(0, idx, 0.0).view_as(g)
        if noise_sigma > 0:
            g = g + noise_sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype, device="cpu").to(g.device)
            if not bool(torch.isfinite(g).all()):  # sigma 1e39 overflowed float32 to inf
                raise ConfigError(f"noise_sigma {noise_sigma:g} overflows the gradient's {g.dtype}")
        out.append(g)
    return out


def calibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> nn.Module:
    """Reset every BN layer's running stats and re-estimate them (cumulative average) on ``images`` in [0, 1].

    Builds the "untrained network, calibrated BN" regime: He-init weights, real data statistics.
    Modifies and returns ``model`` (in eval mode)."""
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


# --------------------------------------------------------------------------------------------
# Objective terms
# --------------------------------------------------------------------------------------------
DISTANCES = ("l2", "sq_l2", "cosine", "layer_cosine")


class GradMatch:
    """D(∇W(x̂), ∇W) against a fixed target ∇W (paper Eq. 2), with everything that depends on the target alone
    (its norms, its flattened copy) computed once instead of every iteration.

    ``l2`` Σ_l ||ĝ_l - g_l||_2 (unsquared, per layer, as the paper's L2 and FLGradientInversion);
    ``sq_l2`` 0.5 Σ_l ||ĝ_l - g_l||² (breaching); ``cosine`` 1 - <ĝ, g> / (||ĝ|| ||g||) over all layers
    (Inverting Gradients); ``layer_cosine`` 1 - mean_l cos(ĝ_l, g_l), every layer counting equally (tenfold's
    option, not the paper's). ``normalize`` divides l2 by Σ_l ||g_l|| and sq_l2 by 0.5 ||g||², making the
    term scale-free across models (tenfold's option; the spec recommends it for CPU budgets).
    """

    def __init__(self, g: Sequence[torch.Tensor], distance: str = "l2", normalize: bool = False) -> None:
        if distance not in DISTANCES:
            raise ConfigError(f"unknown grad_distance '{distance}'; choose one of: {', '.join(DISTANCES)}")
        self.g, self.distance, self.normalize = list(g), distance, normalize
        with torch.no_grad():
            if distance == "l2":
                self.scale = sum(torch.linalg.vector_norm(b) for b in self.g).clamp_min(1e-12)
            elif distance == "sq_l2":
                self.scale = (0.5 * sum(b.pow(2).sum() for b in self.g)).clamp_min(1e-24)
            elif distance == "cosine":
                self.flat = torch.cat([b.reshape(-1) for b in self.g])  # (P,): all layers as one vector
                self.norm = torch.linalg.vector_norm(self.flat)  # ||g||
            else:
                self.norms = [torch.linalg.vector_norm(b) for b in self.g]  # ||g_l|| per layer

    def __call__(self, g_hat: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(g_hat) != len(self.g):
            raise InputError(f"gradient lists differ in length: {len(g_hat)} vs {len(self.g)}")
        if self.distance == "cosine":
            a = torch.cat([t.reshape(-1) for t in g_hat])  # (P,)
            return 1.0 - (a @ self.flat) / (torch.linalg.vector_norm(a) * self.norm).clamp_min(1e-12)
        if self.distance == "layer_cosine":
            cos = [(a * b).sum() / (torch.linalg.vector_norm(a) * n).clamp_min(1e-12)
                   for a, b, n in zip(g_hat, self.g, self.norms)]
            return 1.0 - sum(cos) / len(cos)
        if self.distance == "l2":
            d = sum(torch.linalg.vector_norm(a - b) for a, b in zip(g_hat, self.g))
        else:
            d = 0.5 * sum((a - b).pow(2).sum() for a, b in zip(g_hat, self.g))
        return d / self.scale if self.normalize else d


def grad_match_loss(g_hat: Sequence[torch.Tensor], g: Sequence[torch.Tensor], distance: str = "l2",
                    normalize: bool = False) -> torch.Tensor:
    """Gradient matching D(∇W(x̂), ∇W) (paper Eq. 2); see :class:`GradMatch` for the distances."""
    if len(g_hat) != len(g):
        raise InputError(f"gradient lists differ in length: {len(g_hat)} vs {len(g)}")
    return GradMatch(g, distance, normalize)(g_hat)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """R_TV: mean absolute difference between vertical plus horizontal neighbours of ``x (B, C, H, W)``."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """R_l2: mean squared value of the (normalised) images, a size-free form of ||x̂||_2^2."""
    return x.pow(2).mean()


def bn_prior(stats: Sequence[tuple[torch.Tensor, torch.Tensor]], refs: Sequence[tuple[torch.Tensor, torch.Tensor]],
             first_bn_multiplier: float = 10.0) -> torch.Tensor:
    """R_BN = Σ_l m_l (||μ_l(x̂) - μ_l^BN||_2 + ||σ²_l(x̂) - σ²_l^BN||_2), m_1 = first_bn_multiplier, else 1
    (paper Eq. 5, DeepInversion's weighting)."""
    if len(stats) != len(refs):
        raise InputError(f"BN prior: {len(stats)} BN layers seen but {len(refs)} reference statistics given")
    total = stats[0][0].new_zeros(())
    for i, ((mu, var), (mu_r, var_r)) in enumerate(zip(stats, refs)):
        m = first_bn_multiplier if i == 0 else 1.0
        total = total + m * (torch.linalg.vector_norm(mu - mu_r) + torch.linalg.vector_norm(var - var_r))
    return total


def group_consistency(X: torch.Tensor, E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R_group per seed, ||x̂_g - E_g||_2 over the seed's whole batch for ``X, E (G, B, C, H, W)`` (paper Sec. 3.3,
    spec: one norm per seed; E is the consensus in each seed's frame, held fixed), and its gradient w.r.t. X in
    closed form (G, B, C, H, W): unit norm per seed, so an image far from the consensus is pulled harder."""
    diff = X - E
    nrm = torch.linalg.vector_norm(diff.flatten(1), dim=1)  # (G,)
    grad = diff / nrm.clamp_min(1e-12).view(-1, *([1] * (X.dim() - 1)))
    return nrm, grad


def pyramid_levels(X: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The image pyramid's starting levels for images ``X (..., H, W)``: P_0 = X and ``levels`` zero levels of
    H/2^k x W/2^k (k = 1..levels), so that :func:`pyramid_compose` returns X at the start."""
    H, W = X.shape[-2:]
    if levels < 0 or 2 ** levels > min(H, W):
        raise ConfigError(f"pyramid={levels} needs images of at least 2^{levels} = {2 ** max(levels, 0)} px per "
                          f"side and levels >= 0; these are {H} x {W}")
    return [X.detach().clone()] + [X.new_zeros((*X.shape[:-2], H >> k, W >> k)) for k in range(1, levels + 1)]


def pyramid_compose(P: Sequence[torch.Tensor]) -> torch.Tensor:
    """x̂ = P_0 + Σ_{k>=1} up(P_k): the finest level plus every coarser one upsampled bilinearly to P_0's size
    (tenfold's image parameterisation; the paper optimises the pixels P_0 alone)."""
    out = P[0]
    size = tuple(P[0].shape[-2:])
    for q in P[1:]:
        up = F.interpolate(q.flatten(0, -4), size=size, mode="bilinear", align_corners=False)
        out = out + up.view(out.shape)
    return out


class _BNRecorder:
    """Forward hooks recording (mean, biased var) of each BN layer's *input* over all dims but channels.

    ``stats`` maps a layer's index in ``modules`` to its statistics, in the order the layers ran, first call
    only: pairing by index keeps each layer with its own reference even when a model declares its layers in
    another order than it runs them (pairing two lists by position mismatched them silently), and a layer
    called again in the same forward (a FedAvg unroll's later steps) keeps its first, x̂-only statistics."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if i not in self.stats:
                h = inputs[0]
                dims = [0] + list(range(2, h.dim()))
                self.stats[i] = (h.mean(dims), h.var(dims, unbiased=False))
        return hook

    def paired(self, refs: Sequence[tuple[torch.Tensor, torch.Tensor]]
               ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[tuple[torch.Tensor, torch.Tensor]]]:
        """(recorded stats, their references) in execution order, for :func:`bn_prior`."""
        if len(self.stats) != len(refs):
            raise InputError(f"BN prior: {len(self.stats)} of the model's {len(refs)} BN layers ran in the forward")
        return [self.stats[i] for i in self.stats], [refs[i] for i in self.stats]

    def close(self) -> None:
        for hd in self.handles:
            hd.remove()


# --------------------------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------------------------
@dataclass
class AttackResult:
    """Output of :meth:`GradInversion.run`: images in [0, 1] and what the run measured."""

    images: torch.Tensor  # (B, C, H, W): the registered group mean (the paper's output); = the seed when G = 1
    best_seed: torch.Tensor  # (B, C, H, W): the seed with the lowest gradient loss
    seeds: torch.Tensor  # (G, B, C, H, W)
    labels: torch.Tensor  # (B,) restored (or oracle) labels, sorted
    loss_start: float
    loss_end: float
    history: list[dict[str, float]] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # iteration -> (B, C, H, W) output
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    iterations: int = 0
    # what this run assumed, from the attack's own switches and the model: labels, the BN prior's reference and
    # whether it ran (and why not), the client's mode and update. The client's side is the caller's to match
    threat_model: dict[str, Any] = field(default_factory=dict)


OBJECTIVE_VERSION = 2  # bump when the objective changes: an attack checkpoint of another version is refused


class GradInversion:
    """The inversion with every hyper-parameter as a plain keyword (the paper's symbols).

    Use :func:`tenfold.gradinversion.build` to make one from a ``Config``."""

    def __init__(self, *, iterations: int = 20000, lr: float = 0.1, warmup: int = 50, langevin_sigma: float = 0.2,
                 grad_distance: str = "l2", normalize_grad: bool = False, alpha_grad: float = 1e-4,
                 alpha_tv: float = 1e-4, alpha_l2: float = 1e-6, alpha_bn: float = 0.1,
                 first_bn_multiplier: float = 10.0, alpha_group: float = 1e-2, group_size: int = 4,
                 group_every: int = 100, group_warmup: float = 0.25, registration: str = "translation",
                 label_rule: str = "yin", force_label_rule: bool = False, client_mode: str = "eval",
                 update: str = "gradient", local_steps: int = 1, local_lr: float = 0.01, seed: int = 0,
                 signed: bool = False, lr_schedule: str = "cosine", init: str = "randn", labels: str = "recover",
                 bn_stats: str = "running", pyramid: int = 0, pyramid_decay: float = 0.25,
                 bn_after_sign: bool = False) -> None:
        if iterations < 1 or group_size < 1 or group_every < 1:
            raise ConfigError(f"need iterations, group_size, group_every >= 1, got {iterations}, {group_size}, "
                              f"{group_every}")
        weights = dict(lr=lr, langevin_sigma=langevin_sigma, alpha_grad=alpha_grad, alpha_tv=alpha_tv,
                       alpha_l2=alpha_l2, alpha_bn=alpha_bn, first_bn_multiplier=first_bn_multiplier,
                       alpha_group=alpha_group, group_warmup=group_warmup, local_lr=local_lr,
                       pyramid_decay=pyramid_decay)
        for name, v in weights.items():  # NaN used to reach Adam as "Invalid learning rate: nan", or the loss
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")
        if group_warmup > 1:  # a fraction of the run: above 1 the group term never started, without a word
            raise ConfigError(f"group_warmup is the fraction of the iterations before the group term starts, in "
                              f"[0, 1]; got {group_warmup}")
        if not (isinstance(pyramid, int) and pyramid >= 0):
            raise ConfigError(f"pyramid must be a whole number of levels >= 0, got {pyramid}")
        if not (lr > 0 and warmup >= 0):
            raise ConfigError(f"need lr > 0 and warmup >= 0, got {lr}, {warmup}")
        if grad_distance not in DISTANCES:
            raise ConfigError(f"unknown grad_distance '{grad_distance}'; choose one of: {', '.join(DISTANCES)}")
        if registration not in ("none", "translation", "similarity"):
            raise ConfigError(f"unknown registration '{registration}'; choose one of: none, translation, similarity")
        if lr_schedule not in ("cosine", "step"):
            raise ConfigError(f"unknown lr_schedule '{lr_schedule}'; choose one of: cosine, step")
        if init not in ("randn", "rand", "zeros"):
            raise ConfigError(f"unknown init '{init}'; choose one of: randn, rand, zeros")
        if labels not in ("recover", "oracle"):
            raise ConfigError(f"unknown labels '{labels}'; choose one of: recover, oracle")
        if bn_stats not in ("running", "user", "none"):
            raise ConfigError(f"unknown bn_stats '{bn_stats}'; choose one of: running, user, none")
        if bn_after_sign and not signed:  # only a signed step has a sign to add the prior after
            raise ConfigError("bn_after_sign=true needs signed=true (it adds the BN prior after the sign of the "
                              "other terms' gradient); without signed steps the prior is simply part of the loss")
        self.__dict__.update({k: v for k, v in locals().items() if k != "self"})

    # ----------------------------------------------------------------------------------------
    def restore_labels(self, model: nn.Module, target: Sequence[torch.Tensor], B: int,
                       input_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Step 1: ŷ from the classifier's weight (and bias) gradient, checking Yin's h >= 0 assumption on a
        probe batch of ``input_shape`` (default: the model's ``input_size``)."""
        gW, gb, fc = fc_gradients(model, target, self.update, self.local_steps, self.local_lr, input_shape)
        if (self.label_rule in NONNEGATIVE_FEATURE_RULES and not self.force_label_rule
                and not _features_nonnegative(model, fc, input_shape)):
            raise ConfigError(f"label rule '{self.label_rule}' reads Yin's certain rows, which needs non-negative "
                              "features before the last Linear layer (ReLU then pooling); set force_label_rule=true "
                              "to use it anyway, or use label_rule=rowsum (or count, with a bias)")
        return recover_labels(gW, B, self.label_rule, gb)

    def _threat_model_inputs(self, labels: torch.Tensor | None, bn_ref: Any) -> Any:
        """Check the run's labels and BN reference against the ``labels`` / ``bn_stats`` switches; returns the BN
        reference to use (``"running"``, ``"none"`` or the user's list). A contradiction is one ConfigError:
        ``build(cfg).run()`` used to attack with the server's buffers and restored labels whatever the config's
        switches said, while the result recorded the switches."""
        if self.labels == "oracle" and labels is None:
            raise ConfigError("labels=oracle needs the true labels passed as labels=")
        if self.labels == "recover" and labels is not None:
            raise ConfigError("labels were passed but the threat model says labels=recover (restored from the "
                              "gradient); set labels=oracle to attack with known labels")
        if bn_ref is None:
            if self.bn_stats == "user":
                raise ConfigError("bn_stats=user needs the client's BN statistics passed as bn_ref=[(mean, var), "
                                  "...] (bn_batch_stats)")
            return self.bn_stats
        if isinstance(bn_ref, str):
            if bn_ref not in ("running", "none"):
                raise ConfigError(f"bn_ref must be 'running', 'none' or a list of (mean, var) per BN layer, got "
                                  f"'{bn_ref}'")
            if bn_ref != self.bn_stats:
                raise ConfigError(f"bn_ref='{bn_ref}' contradicts the threat model's bn_stats={self.bn_stats}")
            return bn_ref
        if self.bn_stats != "user":
            raise ConfigError(f"BN statistics were passed as bn_ref but the threat model says "
                              f"bn_stats={self.bn_stats}; set bn_stats=user")
        return bn_ref

    # ----------------------------------------------------------------------------------------
    def run(self, model: nn.Module, target: Sequence[torch.Tensor], *, num_images: int,
            mean: Sequence[float], std: Sequence[float], input_shape: Sequence[int] | None = None,
            labels: torch.Tensor | None = None,
            bn_ref: str | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
            snapshot_at: Sequence[int] = (), log: Callable[[int, dict[str, float]], None] | None = None,
            log_every: int = 50, checkpointer: Checkpointer | None = None, ckpt_every: int = 0,
            resume: bool = False) -> AttackResult:
        """Steps 1-3: restore labels (unless given), optimise G seeds of ``num_images`` images, fuse them.

        ``model`` takes images in [0, 1]; ``mean``/``std`` are the normalisation the images are optimised
        in (x̂ lives in normalised space, as in the paper). The threat-model switches ``labels`` and ``bn_stats``
        decide, and the arguments must agree with them (a result records the switches): ``labels`` (B,) only
        with ``labels="oracle"`` (then required); ``bn_ref`` None (the switch: ``"running"``, the model's BN
        buffers, or ``"none"``, no BN prior), the same string, or, with ``bn_stats="user"`` (then required), a
        list of (mean, var) per BN layer (buffers a client sent, as :func:`bn_batch_stats` returns them).
        ``checkpointer`` (a :class:`tenfold.core.engine.Checkpointer`) saves the whole loop state every
        ``ckpt_every`` iterations; ``resume`` continues from its newest checkpoint exactly (same images).
        """
        check_gradients(model, target)
        shape = tuple(input_shape) if input_shape is not None else tuple(getattr(model, "input_size", ()))
        if len(shape) != 3:
            raise InputError("input_shape (C, H, W) is needed: the model has no input_size attribute")
        C = shape[0]
        if len(mean) != C or len(std) != C or any(s <= 0 for s in std):
            raise InputError(f"mean and std need {C} entries (std > 0), got {list(mean)}, {list(std)}")
        B, G = int(num_images), int(self.group_size)
        if B < 1:
            raise InputError(f"num_images must be >= 1, got {B}")
        dt = target[0].dtype
        dev = target[0].device
        f = _Functional(model, self.client_mode, dtype=dt, device=dev)
        mu = torch.tensor(mean, dtype=dt, device=dev).view(1, C, 1, 1)
        sd = torch.tensor(std, dtype=dt, device=dev).view(1, C, 1, 1)
        lo, hi = (0 - mu) / sd, (1 - mu) / sd  # the valid pixel box in normalised space

        bn_ref = self._threat_model_inputs(labels, bn_ref)

        # Step 1: labels
        if labels is not None:
            check_tensor(labels, "labels", (B,))
            _check_labels(labels, f, torch.zeros((2, *shape), dtype=dt, device=dev), "labels")
        y = (self.restore_labels(model, target, B, shape) if labels is None else labels.long().sort().values).to(dev)

        refs, use_bn = self._bn_refs(f, bn_ref, dt, dev)
        recorder = _BNRecorder(f.bn) if use_bn else None
        if self.bn_after_sign and not use_bn:
            warnings.warn("bn_after_sign=true has no BN prior to add (alpha_bn = 0, bn_stats=none or a model without "
                          "BatchNorm layers): the attack runs without it", TenfoldWarning, stacklevel=2)
        match = GradMatch(target, self.grad_distance, self.normalize_grad)
        threat = self._threat_model(f, labels is not None, use_bn)
        if self.client_mode == "train" and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                                               for m in model.modules()):
            warnings.warn("the client runs in train mode with dropout: every forward draws a new mask, so the attack "
                          "cannot replay the client's update (its objective at the true batch is not 0); an "
                          "eval-mode client (client_mode=eval) has no dropout", TenfoldWarning, stacklevel=2)

        # Step 2: G seeds initialised from N(0, 1) in normalised space
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        X = _initial_images(self.init, (G, B, *shape), gen, dt, mu, sd).to(dev)
        X = torch.max(torch.min(X, hi), lo).requires_grad_(True)
        # the optimised variables: the pixels X, or the image pyramid P (X = pyramid_compose(P), kept in step)
        P = [q.requires_grad_(True) for q in pyramid_levels(X, self.pyramid)] if self.pyramid else []
        # level k of the pyramid steps at lr·decay^k: the coarse levels settle colour and layout without
        # overshooting (a signed step moves a whole 2^k block; measured on the tuning pool, see the README)
        opt = torch.optim.Adam([{"params": [q], "lr": self.lr * self.pyramid_decay ** k} for k, q in enumerate(P)]
                               if P else [X], lr=self.lr)
        if self.warmup >= self.iterations:  # clamped below, so the learning rate only ramps up and never decays
            warnings.warn(f"warm-up of {self.warmup} steps >= the run's {self.iterations} iterations: the learning "
                          f"rate rises through the whole run and never decays; set warmup below iterations "
                          f"(CLI: --set warmup=N)", TenfoldWarning, stacklevel=2)
        sched = _schedule(opt, self.lr_schedule, min(self.warmup, self.iterations), self.iterations)
        start_group = int(self.group_warmup * self.iterations)
        E_frames: torch.Tensor | None = None  # (G, B, C, H, W): consensus in each seed's frame
        history: list[dict[str, float]] = []
        snapshots: dict[int, torch.Tensor] = {}
        snap = set(int(s) for s in snapshot_at)
        seed_losses = torch.zeros(G, device="cpu")  # per-seed losses as Python floats: kept on the CPU
        loss_start = float("nan")
        t0, c0 = time.perf_counter(), time.process_time()
        first, spent = 1, (0.0, 0.0)  # first iteration to run; wall and CPU seconds of the run before a resume
        # what identifies the problem: a checkpoint of another batch, model or setting is refused on resume
        key = {"target_norm": float(sum(float(t.double().pow(2).sum()) for t in target)),
               "shape": [G, B, *shape], "iterations": self.iterations, "labels": y.tolist(),
               "objective": OBJECTIVE_VERSION, "pyramid": self.pyramid}
        if resume:
            if checkpointer is None or checkpointer.latest() is None:
                raise CheckpointError("nothing to resume: no attack checkpoint in the run directory")
            st, header, _ = checkpointer.load_newest()
            old = header["extra"].get("key", {})
            if old.get("objective", 1) != OBJECTIVE_VERSION:
                raise CheckpointError(f"the checkpoint in {checkpointer.dir} was written by an older tenfold whose "
                                      "objective differs (session 14: the group term); start the attack anew")
            if old.get("pyramid", 0) != self.pyramid:
                raise CheckpointError(f"the checkpoint in {checkpointer.dir} optimises an image pyramid of "
                                      f"{old.get('pyramid', 0)} coarser levels, this attack {self.pyramid} (the "
                                      "pyramid setting); resume with the same setting or start anew")
            if (old.get("shape"), old.get("iterations"), old.get("labels")) != (key["shape"], key["iterations"],
                                                                                 key["labels"]) or \
                    not math.isclose(old.get("target_norm", -1.0), key["target_norm"], rel_tol=1e-9):
                raise CheckpointError(f"the checkpoint in {checkpointer.dir} belongs to another attack (shared "
                                      "update, batch shape, labels or iterations differ)")
            with torch.no_grad():
                X.copy_(st["X"].to(dev))
                for k, q in enumerate(P):
                    q.copy_(st["pyramid"][str(k)].to(dev))
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            gen.set_state(st["generator"])
            E_frames = st["E_frames"].to(dev) if "E_frames" in st else None
            seed_losses = st["seed_losses"].clone()
            first = int(header["extra"]["step"]) + 1
            loss_start = float(header["extra"]["loss_start"])
            history = list(header["extra"]["history"])
            snapshots = {int(k): v for k, v in st.get("snapshots", {}).items()}
            spent = (float(header["extra"]["wall_seconds"]), float(header["extra"]["cpu_seconds"]))

        def to01(z: torch.Tensor) -> torch.Tensor:
            return (z * sd + mu).clamp(0, 1)

        for it in range(first, self.iterations + 1):
            opt.zero_grad(set_to_none=False)
            if X.grad is None:
                X.grad = torch.zeros_like(X)
            elif P:  # X is not the optimiser's variable then: clear its gradient here
                X.grad.zero_()
            group_on = G > 1 and self.alpha_group > 0 and it > start_group
            if group_on and (E_frames is None or (it - start_group - 1) % self.group_every == 0):
                E, A = consensus(X.detach(), self.registration)  # E (B, C, H, W), A (G, B, 2, 3)
                Eb = E.unsqueeze(0).expand(G, *E.shape).flatten(0, 1)
                E_frames = warp(Eb, invert(A.flatten(0, 1))).view(X.shape)  # E in every seed's frame
            terms = {"grad": 0.0, "tv": 0.0, "l2": 0.0, "bn": 0.0, "group": 0.0}
            bn_post = self.bn_after_sign and self.signed and recorder is not None
            d_bn = torch.zeros_like(X) if bn_post else None
            for g in range(G):
                xg = X[g].detach().requires_grad_(True)  # (B, C, H, W), normalised; seed g as its own leaf
                with torch.enable_grad():
                    loss, parts = self._seed_loss(f, match, recorder, refs, xg, y, mu, sd, create_graph=True,
                                                  split_bn=bn_post)
                    if bn_post:  # the prior first, keeping the graph: the loss's pass then frees all of it
                        (gbn,) = torch.autograd.grad(parts.pop("bn_graph"), xg, retain_graph=True)
                        (gx,) = torch.autograd.grad(loss, xg)
                        # per-pixel RMS 1 over the seed's batch, as the group pull's
                        d_bn[g] = gbn * (math.sqrt(gbn.numel()) / gbn.norm().clamp_min(1e-30))
                    else:
                        (gx,) = torch.autograd.grad(loss, xg)
                X.grad[g] += gx
                seed_losses[g] = float(parts["grad"])
                for k, v in parts.items():
                    terms[k] += float(v)
            if it == 1:
                loss_start = terms["grad"] / G
            if self.langevin_sigma > 0:  # Langevin ("energy") noise σ·lr·N(0, I) on the image gradient
                lr_t = opt.param_groups[0]["lr"]
                noise = torch.randn(X.shape, generator=gen, dtype=dt, device="cpu")  # one CPU stream on any device
                X.grad += self.langevin_sigma * lr_t * noise.to(dev)
            if P:  # the pixels' gradient to every level (the adjoint of pyramid_compose), each level signed alone
                for q in P:
                    q.grad = None
                with torch.enable_grad():
                    pyramid_compose(P).backward(X.grad)
                if self.signed:
                    for q in P:
                        q.grad.sign_()
            elif self.signed:  # signed ("hard") gradient before Adam, as Inverting Gradients (Geiping et al. 2020)
                X.grad.sign_()
            if d_bn is not None:  # the BN prior after the sign: alpha_bn is its per-pixel RMS as a fraction of a step
                (P[0].grad if P else X.grad).add_(d_bn, alpha=self.alpha_bn)
            if group_on and E_frames is not None:
                # group consistency (Sec. 3.3): α_group ||x̂_g - E_g||_2, gradient in closed form.
                # With the signed gradient the pull is added *after* the sign (tenfold's choice, measured on
                # the tuning pool): through the sign, a term whose gradient is comparable to the matching
                # term's overrides it pixel by pixel and collapses the seeds onto the consensus. After the
                # sign, α_group is the pull's per-pixel RMS as a fraction of a signed step.
                r_group, d_group = group_consistency(X.detach(), E_frames)  # d_group: ∂R_group/∂X
                # signed: sqrt(BCHW) turns ∂R_group (norm 1 per seed) into per-pixel RMS 1 over the seed's batch
                scale = math.sqrt(d_group[0].numel()) if self.signed else 1.0
                if P:
                    P[0].grad += self.alpha_group * scale * d_group
                else:
                    X.grad += self.alpha_group * scale * d_group
                terms["group"] += float(r_group.sum())
            lr_used = opt.param_groups[0]["lr"]  # the step's own lr (read after sched.step() it was the next one's)
            opt.step()
            sched.step()
            with torch.no_grad():
                if P:  # project the composite onto the box; P_0 absorbs the correction so X = compose(P) holds
                    coarse = pyramid_compose([torch.zeros_like(P[0]), *P[1:]])
                    X.copy_(torch.max(torch.min(P[0] + coarse, hi), lo))
                    P[0].copy_(X - coarse)
                else:
                    X.copy_(torch.max(torch.min(X, hi), lo))  # project onto the pixel box
            row = {k: v / G for k, v in terms.items()}
            row["lr"] = lr_used
            if it % log_every == 0 or it == self.iterations or it == 1:
                history.append({"iteration": it, **row})
                if log is not None:
                    log(it, row)
            if it in snap:
                snapshots[it] = self._output(X.detach(), to01)
            if not math.isfinite(row["grad"]):
                why = (f"; with update=fedavg the client's {self.local_steps} local steps at local_lr "
                       f"{self.local_lr:g} are replayed on the current images, and that replay diverges on an "
                       "eval-mode client for large local_lr x local_steps (a train-mode client, or fewer or smaller "
                       "steps, stays finite)" if self.update == "fedavg" else "")
                raise InputError(f"the gradient loss became non-finite at iteration {it}; lower lr or check the "
                                 f"target{why}")
            if checkpointer is not None and ckpt_every > 0 and it % ckpt_every == 0 and it < self.iterations:
                state: dict[str, Any] = {"X": X.detach().cpu(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "generator": gen.get_state(),
                                         "seed_losses": seed_losses.clone(),
                                         "snapshots": {str(k): v.cpu() for k, v in snapshots.items()}}
                if E_frames is not None:
                    state["E_frames"] = E_frames.cpu()
                if P:
                    state["pyramid"] = {str(k): q.detach().cpu() for k, q in enumerate(P)}
                checkpointer.save(state, it, extra={
                    "key": key, "loss_start": loss_start, "history": history,
                    "wall_seconds": spent[0] + time.perf_counter() - t0,
                    "cpu_seconds": spent[1] + time.process_time() - c0})
        if recorder is not None:
            recorder.close()
        out = self._output(X.detach(), to01)
        best = int(torch.argmin(seed_losses))
        return AttackResult(images=out, best_seed=to01(X.detach()[best]), seeds=to01(X.detach()), labels=y,
                            loss_start=loss_start, loss_end=float(seed_losses.mean()), history=history,
                            snapshots=snapshots, cpu_seconds=spent[1] + time.process_time() - c0,
                            wall_seconds=spent[0] + time.perf_counter() - t0, iterations=self.iterations,
                            threat_model=threat)

    def _threat_model(self, f: _Functional, oracle: bool, use_bn: bool) -> dict[str, Any]:
        """The switches this run attacked under, the BN prior's state read off the model: ``bn_stats=running`` on a
        model without BatchNorm used to be recorded as a prior that ran."""
        bn = self.bn_stats
        if bn != "none" and not use_bn:
            why = ("alpha_bn = 0" if self.alpha_bn == 0 else "the model has no BatchNorm layers" if not f.bn
                   else "not every BN layer has running statistics")
            bn += f" (BN prior off: {why})"
        return {"labels": "oracle" if oracle else f"recover ({self.label_rule})", "bn_stats": bn,
                "client_mode": self.client_mode,
                "update": self.update if self.update == "gradient" else
                f"fedavg (k={self.local_steps}, lr={self.local_lr})"}

    def _bn_refs(self, f: _Functional, bn_ref: Any, dt: torch.dtype, dev: torch.device
                 ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]:
        """The BN prior's reference (mean, var) per BN layer for a checked ``bn_ref`` (``"running"``, ``"none"``
        or the client's list), and whether the prior is on."""
        if bn_ref == "running":
            refs = [(m.running_mean.to(dt), m.running_var.to(dt)) for m in f.bn if m.running_mean is not None]
            return refs, self.alpha_bn > 0 and len(refs) == len(f.bn) and len(refs) > 0
        if bn_ref == "none":
            return [], False
        refs = [(torch.as_tensor(m).to(dev, dt), torch.as_tensor(v).to(dev, dt)) for m, v in bn_ref]
        use_bn = self.alpha_bn > 0 and len(refs) > 0
        if use_bn and len(refs) != len(f.bn):
            raise InputError(f"bn_stats lists {len(refs)} layers but the model has {len(f.bn)} BN layers")
        for i, ((m, v), layer) in enumerate(zip(refs, f.bn)):  # a wrong shape used to broadcast silently
            if m.shape != (layer.num_features,) or v.shape != (layer.num_features,):
                raise InputError(f"bn_stats layer {i}: mean and var need shape ({layer.num_features},) (its "
                                 f"channels), got {tuple(m.shape)} and {tuple(v.shape)}")
            check_tensor(m, f"bn_stats layer {i} mean")
            check_tensor(v, f"bn_stats layer {i} var")
        return refs, use_bn

    def _seed_loss(self, f: _Functional, match: GradMatch, recorder: _BNRecorder | None,
                   refs: Sequence[tuple[torch.Tensor, torch.Tensor]], xg: torch.Tensor, y: torch.Tensor,
                   mu: torch.Tensor, sd: torch.Tensor, create_graph: bool, split_bn: bool = False
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
        """One seed's objective without the group term, α_G D + α_TV R_TV + α_l2 R_l2 (+ α_BN R_BN), for images
        ``xg`` (B, C, H, W) in normalised space; returns it and its unweighted terms."""
        if recorder is not None:
            recorder.stats.clear()
        shared = f.update(xg * sd + mu, y, self.update, self.local_steps, self.local_lr, create_graph=create_graph)
        d = match(shared)
        tv, l2 = total_variation(xg), l2_prior(xg)
        loss = self.alpha_grad * d + self.alpha_tv * tv + self.alpha_l2 * l2
        parts = {"grad": d.detach(), "tv": tv.detach(), "l2": l2.detach()}
        if recorder is not None:
            # in train mode the first forward of the FedAvg unroll is the one on x̂ alone
            rbn = bn_prior(*recorder.paired(refs), self.first_bn_multiplier)
            if split_bn:
                parts["bn_graph"] = rbn
            else:
                loss = loss + self.alpha_bn * rbn
            parts["bn"] = rbn.detach()
        return loss, parts

    def objective(self, model: nn.Module, target: Sequence[torch.Tensor], images: torch.Tensor,
                  labels: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                  bn_ref: str | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
        """The attack's single-seed objective (no group term) at ``images`` (B, C, H, W) in [0, 1] with ``labels``:
        its terms unweighted and ``total`` as the loop weighs them (with ``bn_after_sign`` the BN prior is a nudge
        added after the sign, not a weighted term: ``total`` leaves it out, ``bn`` still reports it).

        A diagnostic when the truth is known: if the true batch scores *below* the attack's output, the search
        (iterations, starts), not the objective, is what limits the reconstruction."""
        check_gradients(model, target)
        check_tensor(images, "images", ("B", "C", "H", "W"))
        check_tensor(labels, "labels", (images.shape[0],))
        dt, dev = target[0].dtype, target[0].device
        C = images.shape[1]
        if len(mean) != C or len(std) != C:
            raise InputError(f"mean and std need {C} entries (the images' channels), got {list(mean)}, {list(std)}")
        if bn_ref is None:
            bn_ref = self.bn_stats
            if bn_ref == "user":
                raise ConfigError("bn_stats=user needs the client's BN statistics passed as bn_ref=[(mean, var), ...]")
        f = _Functional(model, self.client_mode, dtype=dt, device=dev)
        mu = torch.tensor(mean, dtype=dt, device=dev).view(1, C, 1, 1)
        sd = torch.tensor(std, dtype=dt, device=dev).view(1, C, 1, 1)
        refs, use_bn = self._bn_refs(f, bn_ref, dt, dev)
        recorder = _BNRecorder(f.bn) if use_bn else None
        try:
            xg = (images.to(dev, dt) - mu) / sd
            with torch.enable_grad():
                loss, parts = self._seed_loss(f, GradMatch(target, self.grad_distance, self.normalize_grad),
                                              recorder, refs, xg, labels.to(dev).long(), mu, sd, create_graph=False,
                                              split_bn=self.bn_after_sign and self.signed)
                parts.pop("bn_graph", None)
        finally:
            if recorder is not None:
                recorder.close()
        return {**{k: float(v) for k, v in parts.items()}, "total": float(loss.detach())}

    def _output(self, X: torch.Tensor, to01: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Step 3's output: the registered group mean (the plain seed when G = 1), in [0, 1]."""
        if X.shape[0] == 1:
            return to01(X[0])
        E, _ = consensus(X, self.registration)
        return to01(E)


def _initial_images(kind: str, shape: tuple[int, ...], gen: torch.Generator, dt: torch.dtype,
                    mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Starting images in normalised space: ``randn`` N(0, I) (paper), ``rand`` U[0, 1] pixels, ``zeros`` the
    normalised 0 (the dataset mean colour)."""
    if kind == "randn":
        return torch.randn(shape, generator=gen, dtype=dt, device="cpu")
    if kind == "rand":
        return (torch.rand(shape, generator=gen, dtype=dt, device="cpu") - mu.cpu()) / sd.cpu()
    return torch.zeros(shape, dtype=dt, device="cpu")


def _schedule(opt: torch.optim.Optimizer, kind: str, warmup: int, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine``: linear warm-up then cosine decay to 0 (paper); ``step``: warm-up then x0.1 at 3/8, 5/8 and 7/8
    of the run (Inverting Gradients' MultiStepLR milestones)."""
    if kind == "cosine":
        return warmup_cosine(opt, warmup, total)
    marks = [int(total * f) for f in (3 / 8, 5 / 8, 7 / 8)]

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.1 ** sum(s >= m for m in marks)

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _features_nonnegative(model: nn.Module, fc: nn.Linear, input_shape: Sequence[int] | None = None) -> bool:
    """Whether the classifier's input is non-negative on a probe batch of ``input_shape`` (default: the model's
    ``input_size``) in [0, 1] (Yin's rule assumes h >= 0)."""
    shape = input_shape if input_shape is not None else getattr(model, "input_size", None)
    if shape is None:
        return True  # cannot probe without an input shape; trust the user
    seen: list[torch.Tensor] = []
    f = _Functional(model, "eval")
    fc_copy = dict(f.net.named_modules())[next(n for n, m in model.named_modules() if m is fc)]
    h = fc_copy.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    gen = torch.Generator().manual_seed(0)
    p = next(iter(f.net.parameters()), None)
    dt = p.dtype if p is not None else torch.float32
    with torch.no_grad():
        probe = torch.rand((4, *shape), generator=gen, dtype=dt, device="cpu")
        f(f.theta0, probe.to(p.device if p is not None else "cpu"))
    h.remove()
    return bool(seen) and bool((seen[-1] >= 0).all())


def attack(model: nn.Module, target_grads: Sequence[torch.Tensor], cfg: Any, labels: torch.Tensor | None = None,
           bn_stats: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None, *, num_images: int,
           mean: Sequence[float], std: Sequence[float], **run_kw: Any) -> AttackResult:
    """Convenience: ``build(cfg).run(...)`` with the config's threat-model switches (labels, bn_stats). Labels or
    statistics the switches do not use are refused, as ``run`` refuses them: they used to be dropped silently."""
    from tenfold.gradinversion.config import build

    inv = build(cfg)
    if cfg.bn_stats == "user" and bn_stats is None:
        raise ConfigError("bn_stats=user needs the client's BN statistics passed as bn_stats=")
    if cfg.bn_stats != "user" and bn_stats is not None:
        raise ConfigError(f"BN statistics were passed but the threat model says bn_stats={cfg.bn_stats}; set "
                          "bn_stats=user to attack with them")
    return inv.run(model, target_grads, num_images=num_images, mean=mean, std=std, labels=labels,
                   bn_ref=bn_stats, **run_kw)
