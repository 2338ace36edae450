"""The CLI verbs: ``leak`` (what a client shares), ``attack`` (invert it, measure), ``audit`` (leak vs defences)."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tenfold.core.data import absolute_spec, load_dataset
from tenfold.core.io import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    TenfoldError,
    TenfoldWarning,
    atomic_write_bytes,
    check_device,
    check_inputs,
    check_tensor,
    input_files,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from tenfold.core.metrics import lpips_distance, lpips_model
from tenfold.core.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODELS,
    Normalize,
    build_model,
    default_weights,
    load_weights,
)
from tenfold.gradinversion.attack import (
    PIXEL_TOLERANCE,
    AttackResult,
    apply_defences,
    bn_batch_stats,
    calibrate_bn,
    check_gradients,
    check_labels,
    fc_gradients,
    fc_layer,
    simulate_client,
)
from tenfold.gradinversion.attack import (
    attack as attack_batch,
)
from tenfold.gradinversion.config import Config, build
from tenfold.gradinversion.evaluation import iip, image_metrics, reference_psnr, save_grid
from tenfold.gradinversion.labels import DISTINCT_RULES, label_accuracy, recover_labels

METHOD = "gradinversion"


# --------------------------------------------------------------------------------------------
# Models and batches
# --------------------------------------------------------------------------------------------
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def load_model(name: str, weights: str = "default", calibrate_bn_images: int = 0, num_classes: int = 10,
               seed: int = 0) -> tuple[nn.Module, list[float], list[float]]:
    """A classifier taking images in [0, 1] and its normalisation (mean, std).

    ``name``: a tenfold model (``cifar10-resnet20`` ... ``56``) or ``torchvision-resnet18/34/50/101/152`` (wrapped
    with ImageNet normalisation). ``weights``: ``default`` (the real CIFAR-10 weights; random init for
    torchvision), ``none`` (He init, seeded) or a file. ``calibrate_bn_images`` > 0 re-estimates BN
    statistics on that many real CIFAR-10 training images (the "fresh network, calibrated BN" regime).
    """
    if not (isinstance(calibrate_bn_images, int) and calibrate_bn_images >= 0):  # -5 was taken as 0, silently
        raise ConfigError(f"--calibrate-bn-images must be a whole number >= 0, got {calibrate_bn_images}")
    torch.manual_seed(seed)
    if name in MODELS:
        path = default_weights(name) if weights == "default" else (None if weights == "none" else weights)
        if weights == "default" and path is None:
            raise DataError(f"no pretrained weights found for {name}; pass --weights FILE or --weights none")
        model = build_model(name, weights=path)
        norm = model.normalize  # type: ignore[attr-defined]
        mean, std = norm.mean.flatten().tolist(), norm.std.flatten().tolist()
    elif name.startswith("torchvision-"):
        import torchvision

        arch = name.removeprefix("torchvision-")
        if arch not in TORCHVISION_RESNETS:  # any attribute of torchvision.models was tried, e.g. a ViT at 32 px
            raise ConfigError(f"unknown torchvision model '{arch}'; choose one of: "
                              f"{', '.join('torchvision-' + a for a in TORCHVISION_RESNETS)}")
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if weights not in ("default", "none"):  # (a 1000-class ImageNet file does not fit the 10-class head)
            load_weights(net, weights, name=f"{name} with {num_classes} classes")
        model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)
        model.input_size = (3, 32, 32)  # type: ignore[attr-defined]
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    else:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}, "
                          f"{', '.join('torchvision-' + a for a in TORCHVISION_RESNETS)}")
    if calibrate_bn_images > 0:
        xs, _ = load_dataset("cifar10-train", limit=calibrate_bn_images).tensors()
        calibrate_bn(model, xs)
    return model.eval(), mean, std


def pick_batch(labels: torch.Tensor, B: int, seed: int, unique: bool = True) -> torch.Tensor:
    """Indices of a seeded random batch of size ``B``; with ``unique`` every label differs (needs B <= classes)."""
    if not 1 <= B <= labels.numel():
        raise ConfigError(f"batch size must be between 1 and the dataset's {labels.numel()} images, got {B}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.numel(), generator=gen)
    if not unique:
        return perm[:B]
    out, seen = [], set()
    for i in perm.tolist():
        c = int(labels[i])
        if c not in seen:
            seen.add(c)
            out.append(i)
            if len(out) == B:
                return torch.tensor(out)
    raise ConfigError(f"cannot draw {B} images with unique labels from {len(seen)} classes; pass --unique-labels False")


def _client(cfg: Config, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """The shared (possibly defended) update of batch (x, y) under the config's threat model."""
    g = simulate_client(model, x, y, cfg.resolved_client_mode(), cfg.update, cfg.local_steps, cfg.local_lr)
    return apply_defences(g, cfg.noise_sigma, cfg.prune_ratio, seed=seed)


def _rule_accuracies(model: nn.Module, g: list[torch.Tensor], y: torch.Tensor, cfg: Config,
                     input_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    gW, gb, _ = fc_gradients(model, g, cfg.update, cfg.local_steps, cfg.local_lr, input_shape)
    out = {}
    rules = ("yin", "yin_mass", "rowsum") + (("bias", "count", "count_mass") if gb is not None else ())
    for rule in rules + (("idlg",) if y.numel() == 1 else ()):
        out[rule] = label_accuracy(recover_labels(gW, y.numel(), rule, gb), y)
    return out


# --------------------------------------------------------------------------------------------
# Verbs
# --------------------------------------------------------------------------------------------
SSIM_WINDOW = 11  # the SSIM every verb reports uses an 11 x 11 Gaussian window


def _dataset_tensors(data: str, net: nn.Module | None = None,
                     model: str = "") -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(dataset, images, labels) of ``data``, refused up front when the images are too small to score (SSIM), so no
    attack runs for minutes before the metric fails, or have another channel count than ``net`` (named ``model``)
    takes."""
    ds = load_dataset(data)
    xs, ys = ds.tensors()
    if min(xs.shape[-2:]) < SSIM_WINDOW:
        raise DataError(f"{data} images are {xs.shape[-1]}x{xs.shape[-2]}; the attack's SSIM needs at least "
                        f"{SSIM_WINDOW} px on each side")
    want = getattr(net, "input_size", None)
    if want is not None and xs.shape[1] != want[0]:  # was "images must have shape (B, 3, *, *)", naming neither
        raise DataError(f"{data} images have {xs.shape[1]} channel(s) but the model {model or type(net).__name__} "
                        f"expects {want[0]}; pick a dataset the model was built for")
    if net is not None and ys.numel():  # a folder of 11 classes for a 10-class model read "y must hold ... got 10"
        try:
            n = fc_layer(net, tuple(xs.shape[1:]))[1].out_features
        except TenfoldError:  # no classifier to read: the attack says so in its own words
            n = None
        if n is not None and int(ys.max()) >= n:
            raise DataError(f"{data} holds labels up to {int(ys.max())} but the model {model or type(net).__name__} "
                            f"has {n} classes; pick a dataset of at most {n} classes (a folder: one sub-folder each)")
    return ds, xs, ys


def _warn_repeats(cfg: Config, y: torch.Tensor) -> None:
    """One warning when the attack restores a batch whose labels repeat with a rule that cannot repeat one (it then
    loses a label per repeat however good the gradient); ``count_mass`` reads repeats (the README's "Label rules")."""
    if y.is_meta:  # no values to read (a device-routing check runs the verbs on the meta device)
        return
    if cfg.labels == "recover" and cfg.label_rule in DISTINCT_RULES and int(y.unique().numel()) < y.numel():
        warnings.warn(f"the batch repeats labels ({int(y.unique().numel())} classes in {y.numel()} images) but "
                      f"label_rule={cfg.label_rule} returns distinct labels; --set label_rule=count_mass restores "
                      "repeats", TenfoldWarning, stacklevel=3)


def _simulate_client(cfg: Config, net: nn.Module, data: str, batch_size: int, batch_seed: int,
                     unique_labels: bool, model: str = "") -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    list[torch.Tensor], list]:
    """Pick a real batch and compute what the client shares: (dataset, indices, x, y, update, user BN stats)."""
    ds, xs, ys = _dataset_tensors(data, net, model)
    idx = pick_batch(ys, batch_size, batch_seed, unique_labels)
    dev = next(net.parameters()).device  # the config's device (see _model)
    x, y = xs[idx].to(dev), ys[idx].to(dev)
    return (ds, idx, x, y, _client(cfg, net, x, y, seed=batch_seed),
            bn_batch_stats(net, x, cfg.resolved_client_mode()))


def _model(cfg: Config, name: str, weights: str, calibrate_bn_images: int,
           seed: int | None = None) -> tuple[nn.Module, list[float], list[float]]:
    """:func:`load_model` moved to the config's ``device`` (checked first: a bad name or a missing GPU is one line).
    ``seed`` (default: the config's) seeds a random initialisation, so a leak's model can be rebuilt exactly."""
    dev = check_device(cfg.device)
    net, mean, std = load_model(name, weights, calibrate_bn_images, seed=cfg.seed if seed is None else seed)
    return net.to(dev), mean, std


# What the client did, which a leak run fixes: how it computed its update, in which BN mode, with which defences
CLIENT_FIELDS = ("update", "local_steps", "local_lr", "noise_sigma", "prune_ratio")


def _client_settings_of_leak(cfg: Config, leak_config: dict[str, Any], target: Path) -> tuple[Config, int]:
    """The attack's config with the client-side settings of the ``leak`` run it attacks, and the seed that
    initialised the leak's model. The attack used to take them from its own config, so a FedAvg leak was
    matched as a gradient and a defence never applied was recorded. A differing value is overridden with a
    warning that names it."""
    try:
        leak = dataclasses.replace(cfg, **{k: leak_config[k] for k in (*CLIENT_FIELDS, "client_mode", "bn_stats",
                                                                       "seed")})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{target}: the leak run's config lacks the client's settings ({e})") from None
    def client(c: Config) -> dict[str, Any]:
        return {**{k: getattr(c, k) for k in CLIENT_FIELDS}, "client_mode": c.resolved_client_mode()}

    new, cur = client(leak), client(cfg)
    changed = [f"{k}={new[k]} (this config: {cur[k]})" for k in new if new[k] != cur[k]]
    if changed:
        warnings.warn(f"--target: the client's settings come from the leak run {target}: {', '.join(changed)}",
                      TenfoldWarning, stacklevel=3)
    return dataclasses.replace(cfg, **new), int(leak.seed)


# The verb options a leak run fixes: `attack --target` takes them from the leak (the batch is the leak's)
LEAK_OPTIONS = ("model", "weights", "data", "batch_size", "batch_seed", "unique_labels", "calibrate_bn_images")


def _options_of_leak(extra: dict[str, Any], state: dict[str, Any], given: dict[str, Any],
                     target: Path) -> dict[str, Any]:
    """The attack verb's options as the leak run ``target`` fixed them. An option given with a value other than its
    default and the leak's is refused: `attack --target LEAK --model M` used to attack the leak's model and record
    M in its config.json. (An option left at its default cannot be told from one not given: the leak's is used.)"""
    try:
        used = {k: extra[k] for k in ("model", "weights", "data", "calibrate_bn_images")}
        used["batch_size"] = int(state["labels"].numel())
    except (KeyError, AttributeError) as e:
        raise CheckpointError(f"{target}: the leak run's checkpoint lacks the client's batch settings ({e})") from None
    used.update({k: extra[k] for k in ("batch_seed", "unique_labels") if k in extra})  # older leaks lack them
    defaults = {k: p.default for k, p in inspect.signature(attack).parameters.items()}
    same = {"weights": _absolute_weights, "data": absolute_spec}  # the leak stores paths absolute
    clash = [f"--{k.replace('_', '-')} {given[k]} (the leak's: {used[k]})" for k in LEAK_OPTIONS
             if k in used and given[k] != defaults[k]
             and same.get(k, str)(given[k]) != same.get(k, str)(used[k])]
    if clash:
        raise ConfigError(f"--target attacks the leak run {target} with its own model, data and batch; these "
                          f"options contradict it: {', '.join(clash)}; drop them")
    return used


def _record_options(run_dir: Path, used: dict[str, Any], cfg: Config | None = None) -> None:
    """Write the options and client settings a run really used into its ``config.json`` (the CLI's record, saved
    before the verb ran, with the defaults of options `--target` takes from the leak and the attack's own client
    settings, which the leak's override); nothing without one (the Python API)."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(saved, dict):
        return
    changed = False
    if isinstance(saved.get("options"), dict):
        opts = saved["options"]
        if any(opts.get(k) != v for k, v in used.items() if k in opts):
            opts.update({k: v for k, v in used.items() if k in opts})
            changed = True
    if cfg is not None and isinstance(saved.get("config"), dict):  # a resume reloads this config
        conf = saved["config"]
        fields = {k: getattr(cfg, k) for k in (*CLIENT_FIELDS, "client_mode") if k in conf}
        if any(conf[k] != v for k, v in fields.items()):
            conf.update(fields)
            changed = True
    if changed:
        write_json(path, saved)


def _check_leak(net: nn.Module, state: dict[str, Any], path: Path) -> None:
    """The leak file's gradients, images, labels and BN statistics checked when it is loaded, each error naming the
    file: a NaN image used to surface as "true holds 1 NaN/Inf value(s)" after the whole attack, a label past the
    model's classes as an IndexError, and all-zero gradients were "inverted"."""
    try:
        check_gradients(net, state["gradients"], "gradient")
        x = check_tensor(state["images"], "images", ("B", None, None, None))
        check_tensor(state["labels"], "labels", (x.shape[0],))
        want = getattr(net, "input_size", None)
        if want is not None and x.shape[1] != want[0]:
            raise InputError(f"images have {x.shape[1]} channel(s) but the model expects {want[0]}")
        if x.numel() and not (float(x.min()) >= -PIXEL_TOLERANCE and float(x.max()) <= 1 + PIXEL_TOLERANCE):
            raise InputError(f"images must hold pixel values in [0, 1], got [{float(x.min()):.4g}, "
                             f"{float(x.max()):.4g}]")
        dev = next(net.parameters()).device
        check_labels(net, state["labels"].to(dev), x.to(dev), "labels")
        for i, s in enumerate(state["user_bn"]):
            for name, t in zip(("mean", "var"), s):
                check_tensor(t, f"BN statistics of layer {i} ({name})")
    except InputError as e:
        raise DataError(f"the leak {path}: {e}") from None
    except KeyError as e:
        raise CheckpointError(f"the leak {path} lacks {e}") from None


def _cpu(x: Any) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to the CPU, for metrics, grids and checkpoints."""
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    return x


_SHARED_ARGS = """\
        model: ``cifar10-resnet20`` ... ``cifar10-resnet56`` (tenfold's CIFAR ResNets) or ``torchvision-resnet18``
            / ``34`` / ``50`` / ``101`` / ``152``; any ``nn.Module`` through the Python API.
        weights: ``default`` (the real CIFAR-10 weights in the shared data; random for torchvision), ``none``
            (seeded He init) or a local weights file.
        data: the client's images: a dataset ``NAME`` or ``NAME:PATH`` (e.g. ``cifar10-test``).
        calibrate_bn_images: > 0: re-estimate the BN statistics on that many real CIFAR-10 training images (the
            "fresh network, calibrated BN" regime, with ``--weights none``).
"""


def _shared_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options the three verbs share to ``fn``'s ``Args:`` section (one text for all three; the CLI's
    ``--help`` reads it from there)."""
    fn.__doc__ = (fn.__doc__ or "").replace("    Args:\n", "    Args:\n" + _SHARED_ARGS, 1)
    return fn


@_shared_args
def leak(cfg: Config, run_dir: Path, *, model: str = "cifar10-resnet20", weights: str = "default",
         data: str = "cifar10-test", batch_size: int = 8, batch_seed: int = 0, unique_labels: bool = True,
         calibrate_bn_images: int = 0) -> dict[str, Any]:
    """Simulate a client: the averaged gradient (or FedAvg update) of a real batch, saved with the batch.

    Args:
        batch_size: images in the client's batch.
        batch_seed: seed that picks the batch from ``data`` (and the defences' noise).
        unique_labels: draw a batch whose labels all differ (the paper's setting; needs ``batch_size`` <= classes).
    """
    run_dir = Path(run_dir)
    net, mean, std = _model(cfg, model, weights, calibrate_bn_images)
    _, idx, x, y, g, user_bn = _cpu(_simulate_client(cfg, net, data, batch_size, batch_seed, unique_labels, model))
    net = net.cpu()
    save_checkpoint(run_dir / "leak", {"gradients": g, "images": x, "labels": y, "indices": idx,
                                       "user_bn": [list(s) for s in user_bn]}, method=METHOD, config=cfg,
                    extra={"model": model, "weights": _absolute_weights(weights), "data": absolute_spec(data),
                           "mean": mean, "std": std,
                           "calibrate_bn_images": calibrate_bn_images, "batch_seed": batch_seed,
                           "unique_labels": unique_labels, "threat_model": cfg.threat_model()})
    write_json(run_dir / "threat_model.json", cfg.threat_model())
    save_grid(run_dir / "client_batch.png", [x], ["client batch"])
    accs = _rule_accuracies(net, g, y, cfg, tuple(x.shape[1:]))
    return {"batch_size": batch_size, "grad_norm": float(torch.sqrt(sum(t.pow(2).sum() for t in g))),
            **{f"label_accuracy_{k}": v for k, v in accs.items()}, "threat_model": cfg.threat_model()}


def _absolute_weights(weights: str) -> str:
    """A weights file as an absolute path (``default`` / ``none`` kept): `attack --target` may run elsewhere."""
    return weights if weights in ("default", "none", "") else str(Path(weights).expanduser().resolve())


def _check_iterations(iterations: int) -> None:
    """``iterations`` is a count or 0 (the preset's); a negative one used to run the preset's budget silently."""
    if iterations < 0:
        raise ConfigError(f"--iterations must be >= 0 (0: the preset's), got {iterations}")


def _check_attack_options(cfg: Config, *, iterations: int = 0, batch_size: int = 1, **_: Any) -> None:
    """attack's option checks that need no model or data (the CLI runs them before ``--dry-run`` prints too)."""
    _check_iterations(iterations)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")


def run_attack(cfg: Config, net: nn.Module, g: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               mean: list[float], std: list[float], user_bn: list[tuple[torch.Tensor, torch.Tensor]] | None,
               iterations: int = 0, **run_kw: Any) -> AttackResult:
    """Run the configured attack on shared update ``g`` of the client batch (x, y); the verbs check
    ``iterations`` before any work (:func:`_check_iterations`)."""
    if iterations > 0:
        cfg = dataclasses.replace(cfg, iterations=iterations)
    return attack_batch(net, g, cfg, y if cfg.labels == "oracle" else None, user_bn if cfg.bn_stats == "user" else None,
                        num_images=x.shape[0], mean=mean, std=std, input_shape=tuple(x.shape[1:]), **run_kw)


@_shared_args
def attack(cfg: Config, run_dir: Path, *, model: str = "cifar10-resnet20", weights: str = "default",
           data: str = "cifar10-test", batch_size: int = 8, iterations: int = 0, target: str = "",
           batch_seed: int = 0, unique_labels: bool = True, calibrate_bn_images: int = 0,
           lpips_weights: str = "", resume: bool = False) -> dict[str, Any]:
    """Invert a client's update: grid (originals above reconstructions), PSNR, SSIM, label accuracy, IIP.

    ``target`` is a ``leak`` run directory; without it a fresh client batch is simulated. ``iterations``
    > 0 overrides the preset's. The loop state is saved every ``ckpt_every`` iterations (config), and
    ``--resume --out RUN`` continues it exactly.

    Args:
        batch_size: images in the client's batch.
        iterations: optimisation steps of the inversion; 0: the preset's.
        target: a ``leak`` run directory to attack (its model, data and update); empty: simulate a client here.
        batch_seed: seed that picks the batch from ``data`` (and the defences' noise).
        unique_labels: draw a batch whose labels all differ (the paper's setting; needs ``batch_size`` <= classes).
        lpips_weights: a local torchvision AlexNet or VGG-16 ImageNet checkpoint (e.g. alexnet-owt-7be5be79.pth);
            with one, LPIPS v0.1 is reported (the lpips package's linear heads; nothing is downloaded).
        resume: continue the attack from the run's last checkpoint (the CLI's ``--resume --out RUN``).
    """
    from tenfold.core.engine import Checkpointer, MetricsLogger

    run_dir = Path(run_dir)
    _check_attack_options(cfg, iterations=iterations, batch_size=batch_size)
    # a resume reloads the model, the leak and the data from their paths: a file changed in between was attacked
    # with the first run's images and state without a word (checked first; a fresh run records them once its
    # inputs have passed their checks, so a refused one leaves nothing behind)
    inputs = input_files({"--weights": weights, "--target": target, "--data": data, "lpips weights": lpips_weights},
                         data=("--data",))
    if resume:
        check_inputs(run_dir, inputs, resume=True)
    if target:
        state, header = load_checkpoint(Path(target) / "leak", method=METHOD)
        given = dict(model=model, weights=weights, data=data, batch_size=batch_size, batch_seed=batch_seed,
                     unique_labels=unique_labels, calibrate_bn_images=calibrate_bn_images)
        used = _options_of_leak(header["extra"], state, given, Path(target))
        model, weights, data = used["model"], used["weights"], used["data"]
        cfg, model_seed = _client_settings_of_leak(cfg, header.get("config") or {}, Path(target))
        net, mean, std = _model(cfg, model, weights, used["calibrate_bn_images"], seed=model_seed)
        dev = next(net.parameters()).device
        _check_leak(net, state, Path(target) / "leak.safetensors")
        _record_options(run_dir, used, cfg)
        g = [t.to(dev) for t in state["gradients"]]
        x, y = state["images"].to(dev), state["labels"].to(dev)
        user_bn = [tuple(t.to(dev) for t in s) for s in state["user_bn"]]
        ds = load_dataset(data)
        idx = state["indices"]
    else:
        net, mean, std = _model(cfg, model, weights, calibrate_bn_images)
        ds, idx, x, y, g, user_bn = _simulate_client(cfg, net, data, batch_size, batch_seed, unique_labels, model)
    _warn_repeats(cfg, y)
    lp = lpips_model(lpips_weights) if lpips_weights else None  # a bad file fails here, not after the attack
    tm = cfg.threat_model()
    if not resume:
        check_inputs(run_dir, inputs, resume=False)
    ckpt = Checkpointer(run_dir, method="gradinversion-attack", config=cfg)
    if resume and not ckpt.steps():  # before the threat model is printed, as if the attack were about to run
        raise CheckpointError(f"nothing to resume: no attack checkpoint in {ckpt.dir}")
    print("threat model: " + json.dumps(tm))
    with MetricsLogger(run_dir, tensorboard=False, resume_step=ckpt.steps()[-1] if resume else None) as logger:
        res = run_attack(cfg, net, g, x, y, mean, std, user_bn, iterations, log=logger.log, checkpointer=ckpt,
                         ckpt_every=cfg.ckpt_every, resume=resume)
    # the attack's objective at the true batch and at its output: the truth scoring lower means the search, not
    # the objective, limits the reconstruction (more iterations or starts may help; stronger priors will not)
    obj_truth, obj_output = _objectives(cfg, net, g, x, y, res, mean, std, user_bn)
    res = dataclasses.replace(res, **{k: _cpu(getattr(res, k)) for k in ("images", "best_seed", "seeds", "labels",
                                                                          "snapshots")})
    x, y = x.cpu(), y.cpu()
    m = image_metrics(res.images, x)
    order = m.pop("order")
    best = image_metrics(res.best_seed, x)
    ref_x, ref_y = ds.tensors()
    rec_sorted = res.images[torch.tensor(order)]
    out = {"psnr": m["psnr"], "psnr_max": m["psnr_max"], "ssim": m["ssim"], "fft2": m["fft2"],
           "psnr_best_seed": best["psnr"], "label_accuracy": label_accuracy(res.labels, y),
           **reference_psnr(x, ref_x),  # guesses without the gradient, to read the PSNR against
           "iip_pixel": iip(rec_sorted, torch.as_tensor(idx), y, ref_x, ref_y),
           "lpips": float(lpips_distance(lp, rec_sorted, x).mean()) if lp is not None else None,
           "lpips_note": f"LPIPS v0.1, backbone {lpips_weights}" if lp is not None else
           "skipped: LPIPS needs a local AlexNet or VGG-16 checkpoint (--lpips-weights FILE); nothing is downloaded",
           "loss_start": res.loss_start, "loss_end": res.loss_end, "iterations": res.iterations,
           "objective_truth": obj_truth, "objective_output": obj_output,
           "search_limited": obj_truth["total"] < obj_output["total"],
           "cpu_seconds": round(res.cpu_seconds, 2), "seconds_per_iteration": res.cpu_seconds / res.iterations,
           "restored_labels": res.labels.tolist(), "true_labels": y.sort().values.tolist(), "threat_model": tm}
    save_grid(run_dir / "grid.png", [x, rec_sorted, res.best_seed[torch.tensor(best["order"])]],
              ["client batch", f"GradInversion (PSNR {m['psnr']:.2f} dB)\nno-leak guess: "
               f"{out['psnr_dataset_mean_colour']:.2f} dB", "best single seed"])
    state = {"images": res.images, "best_seed": res.best_seed, "seeds": res.seeds, "labels": res.labels}
    save_checkpoint(run_dir / "reconstruction", state, method=METHOD, config=cfg, extra={"metrics": out})
    _loss_plot(run_dir / "loss.png", res.history)
    write_json(run_dir / "metrics.json", out)
    return out


@contextlib.contextmanager
def _each_warning_once(said: set[str]) -> Iterator[None]:
    """Warnings raised inside are given again only if their message is not in ``said`` (then added to it): audit
    runs one attack per row with the same settings, and the CLI shows every warning."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:  # given also when the attack fails or is interrupted: a warning may be what explains it
        for w in caught:
            if str(w.message) not in said:
                said.add(str(w.message))
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _objectives(cfg: Config, net: nn.Module, g: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                res: AttackResult, mean: list[float], std: list[float],
                user_bn: list[tuple[torch.Tensor, torch.Tensor]] | None) -> tuple[dict[str, float], dict[str, float]]:
    """The attack's single-seed objective against the shared update ``g`` at the true batch (x, y) and at the
    attack's output (its images with its labels)."""
    with warnings.catch_warnings():  # build's threat-model warning was given once, by the attack itself
        warnings.simplefilter("ignore", TenfoldWarning)
        inv = build(cfg)
    bn_ref = user_bn if cfg.bn_stats == "user" else None
    return (inv.objective(net, g, x, y, mean=mean, std=std, bn_ref=bn_ref),
            inv.objective(net, g, res.images, res.labels, mean=mean, std=std, bn_ref=bn_ref))


def _read_audit_rows(path: Path) -> list[dict[str, Any]]:
    """The rows a resumed audit already holds. A cut-off last line (what a kill mid-write leaves) is dropped with a
    warning and removed from the file, so the next row starts on a line of its own (as MetricsLogger does; it used
    to be a JSONDecodeError that lost the run); a corrupt line before the last is an error."""
    if not path.is_file():
        return []
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = []
    for i, ln in enumerate(lines):
        try:
            row = json.loads(ln)
            if not isinstance(row, dict) or "batch_size" not in row or "defence" not in row:
                raise ValueError("not an audit row")
        except ValueError:
            if i < len(lines) - 1:
                raise CheckpointError(f"{path}: line {i + 1} is corrupt; repair or remove it to resume") from None
            warnings.warn(f"{path}: its last line was cut short (an interrupted write); dropped",
                          TenfoldWarning, stacklevel=3)
            atomic_write_bytes(path, "".join(ln + "\n" for ln in lines[:-1]).encode())
            continue
        rows.append(row)
    return rows


def _loss_plot(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    its = [h["iteration"] for h in history]
    for k in ("grad", "tv", "bn", "group"):
        vals = [h[k] for h in history]
        if any(v > 0 for v in vals):
            ax.semilogy(its, [max(v, 1e-12) for v in vals], label=k)
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _check_audit_options(cfg: Config, *, batch_sizes: Sequence[int] = (1, 4), noise_sigmas: Sequence[float] = (),
                         prune_ratios: Sequence[float] = (), iterations: int = 0, **_: Any
                         ) -> list[tuple[str, float, float]]:
    """audit's rows (name, noise sigma, prune ratio), every setting checked before the first attack (the CLI runs
    this before ``--dry-run`` prints too)."""
    defences = [("none", 0.0, 0.0)] + [(f"noise {s:g}", s, 0.0) for s in noise_sigmas] + \
               [(f"prune {p:g}", 0.0, p) for p in prune_ratios]
    if cfg.noise_sigma or cfg.prune_ratio:  # each row sets its own; the run recorded the ignored values
        raise ConfigError("audit sets the defences row by row (--noise-sigmas, --prune-ratios); drop --set "
                          f"noise_sigma={cfg.noise_sigma:g} / prune_ratio={cfg.prune_ratio:g}, which it would ignore")
    for _, sigma, ratio in defences:  # every row's settings checked before the first attack, not at its row
        apply_defences([torch.zeros(1)], sigma, ratio)
    _check_iterations(iterations)
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"--batch-sizes needs one or more sizes >= 1, got {list(batch_sizes)}")
    for flag, vals in (("--batch-sizes", batch_sizes), ("--noise-sigmas", noise_sigmas),
                       ("--prune-ratios", prune_ratios)):  # a repeated size failed in the plot, after every attack
        repeated = sorted({v for v in vals if list(vals).count(v) > 1})
        if repeated:
            raise ConfigError(f"{flag} lists {', '.join(f'{v:g}' for v in repeated)} more than once; give each "
                              f"value once")
    names = [d[0] for d in defences]
    if len(set(names)) != len(names):  # 0.1 and 0.1000001 made two rows both named "noise 0.1" (one key on resume)
        alike = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"defence values that print alike: {', '.join(alike)}; give values that differ in their "
                          "first 6 significant digits")
    return defences


@_shared_args
def audit(cfg: Config, run_dir: Path, *, model: str = "cifar10-resnet20", weights: str = "default",
          data: str = "cifar10-test", batch_sizes: tuple[int, ...] = (1, 4),
          noise_sigmas: tuple[float, ...] = (1e-4, 1e-3, 1e-2), prune_ratios: tuple[float, ...] = (0.5, 0.9, 0.99),
          iterations: int = 0, batch_seed: int = 0, calibrate_bn_images: int = 0,
          resume: bool = False) -> dict[str, Any]:
    """Leakage (PSNR, label accuracy) against common defences, per batch size: a table and a plot.

    Each batch has unique labels where the data has at least B classes (the paper's setting), else repeated ones;
    every row records which (``unique_labels``).

    Each finished row is appended to ``audit_rows.jsonl`` at once; ``--resume --out RUN`` keeps those rows and
    runs only the missing attacks (each attack is seeded on its own, so the table is the same).

    Args:
        batch_sizes: one row group per batch size, e.g. ``--batch-sizes 1 4 8``.
        noise_sigmas: standard deviations of the Gaussian noise added to every gradient entry (one row each).
        prune_ratios: fractions in [0, 1) of each layer's smallest-magnitude gradient entries set to zero.
        iterations: optimisation steps of each inversion; 0: the preset's.
        batch_seed: seed that picks each batch from ``data`` (and the defences' noise).
        resume: keep the rows ``audit_rows.jsonl`` already holds and run only the missing attacks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    defences = _check_audit_options(cfg, batch_sizes=batch_sizes, noise_sigmas=noise_sigmas,
                                    prune_ratios=prune_ratios, iterations=iterations)
    inputs = input_files({"--weights": weights, "--data": data}, data=("--data",))
    if resume:  # before loading; a fresh run records them once they have passed their checks
        check_inputs(run_dir, inputs, resume=True)
    net, mean, std = _model(cfg, model, weights, calibrate_bn_images)
    dev = next(net.parameters()).device
    _, xs, ys = _dataset_tensors(data, net, model)
    if not resume:
        check_inputs(run_dir, inputs, resume=False)
    done_path = run_dir / "audit_rows.jsonl"
    if done_path.is_file() and not resume:
        raise ConfigError(f"{run_dir} already holds audit rows; continue it with --resume or pick a new --out")
    done = {(r["batch_size"], r["defence"]): r for r in _read_audit_rows(done_path)}  # rows of a resumed run
    rows: list[dict[str, Any]] = []
    said: set[str] = set()  # warnings the attacks gave so far
    classes = int(ys.unique().numel())  # the dataset's, not CIFAR-10's 10: a user folder may hold 3 or 100
    for B in batch_sizes:  # a size the data cannot fill failed after every smaller size's attacks
        pick_batch(ys, B, batch_seed, unique=classes >= B)
    for B in batch_sizes:
        if all((B, name) in done for name, _, _ in defences):
            rows += [done[(B, name)] for name, _, _ in defences]
            continue
        unique = classes >= B  # the paper's unique-label batch where the classes allow it; each row says which
        idx = pick_batch(ys, B, batch_seed, unique=unique)
        x, y = xs[idx].to(dev), ys[idx].to(dev)
        _warn_repeats(cfg, y)
        clean = simulate_client(net, x, y, cfg.resolved_client_mode(), cfg.update, cfg.local_steps, cfg.local_lr)
        ref = reference_psnr(x.cpu(), xs)  # what no leak (the dataset's mean colour) and colour alone would score
        for name, sigma, ratio in defences:
            if (B, name) in done:
                rows.append(done[(B, name)])
                continue
            c = dataclasses.replace(cfg, noise_sigma=sigma, prune_ratio=ratio)
            g = apply_defences(clean, sigma, ratio, seed=batch_seed)
            ubn = bn_batch_stats(net, x, c.resolved_client_mode())
            with _each_warning_once(said):  # the same settings warn alike for every row (the warm-up one did)
                res = run_attack(c, net, g, x, y, mean, std, ubn, iterations)
            m = image_metrics(res.images.cpu(), x.cpu())
            # how far the defended update sits from the true batch's, in the attack's own gradient distance (0
            # undefended), and from the output's: truth above output, the gradient term no longer points at the truth
            o_truth, o_output = _objectives(c, net, g, x, y, res, mean, std, ubn)
            rows.append({"batch_size": B, "defence": name, "noise_sigma": sigma, "prune_ratio": ratio,
                         "unique_labels": unique, "psnr": m["psnr"], "ssim": m["ssim"],
                         "label_accuracy": label_accuracy(res.labels, y), **ref,
                         "grad_distance_truth": o_truth["grad"], "grad_distance_output": o_output["grad"]})
            with open(done_path, "a") as fh:  # this row survives a crash of any later attack
                fh.write(json.dumps(rows[-1]) + "\n")
            print(f"B={B} {name:<12} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f} labels {rows[-1]['label_accuracy']:.2f}")
    nan = float("nan")  # rows of older runs lack the later columns
    lines = ["batch_size,defence,noise_sigma,prune_ratio,unique_labels,psnr,ssim,label_accuracy,"
             "psnr_dataset_mean_colour,psnr_own_mean_colour,grad_distance_truth,grad_distance_output"] + \
        [f"{r['batch_size']},{r['defence']},{r.get('noise_sigma', nan):g},{r.get('prune_ratio', nan):g},"
         f"{r.get('unique_labels', '')},{r['psnr']:.3f},{r['ssim']:.4f},{r['label_accuracy']:.3f},"
         f"{r.get('psnr_dataset_mean_colour', nan):.3f},{r.get('psnr_own_mean_colour', nan):.3f},"
         f"{r.get('grad_distance_truth', nan):.4g},{r.get('grad_distance_output', nan):.4g}"
         for r in rows]
    (run_dir / "audit.csv").write_text("\n".join(lines) + "\n")
    tm = {**cfg.threat_model(), "defences": "per row: each row's noise_sigma and prune_ratio"}  # (it read 0, 0)
    write_json(run_dir / "audit.json", {"rows": rows, "threat_model": tm})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    names = [d[0] for d in defences]
    for B in batch_sizes:
        rb = [r for r in rows if r["batch_size"] == B]
        line, = axes[0].plot(names, [r["psnr"] for r in rb], "o-", label=f"B={B}")
        if "psnr_dataset_mean_colour" in rb[0]:  # rows of a pre-session-13 run lack the references
            axes[0].axhline(rb[0]["psnr_dataset_mean_colour"], color=line.get_color(), ls=":", lw=1,
                            label=f"B={B}: dataset mean colour (no leak)")
            axes[0].axhline(rb[0]["psnr_own_mean_colour"], color=line.get_color(), ls="--", lw=1,
                            label=f"B={B}: own mean colour (colour only)")
        axes[1].plot(names, [r["label_accuracy"] for r in rb], "o-", label=f"B={B}")
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("label accuracy")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "audit.png", dpi=100)
    plt.close(fig)
    undefended = {f"psnr_undefended_b{r['batch_size']}": r["psnr"] for r in rows if r["defence"] == "none"}
    worst = min(rows, key=lambda r: r["psnr"])
    refs = {f"{k}_b{r['batch_size']}": r[k] for r in rows if r["defence"] == "none"
            for k in ("psnr_dataset_mean_colour", "psnr_own_mean_colour") if k in r}
    return {"rows": len(rows), **undefended, **refs, "lowest_psnr": worst["psnr"],
            "lowest_psnr_defence": worst["defence"],
            "threat_model": tm}


audit.resume_files = ("audit_rows.jsonl",)  # the CLI reads it: an interrupted audit goes on from its finished rows

attack.check_options = _check_attack_options  # the CLI runs them before --dry-run prints
audit.check_options = _check_audit_options
