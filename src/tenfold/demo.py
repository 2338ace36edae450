"""``tenfold demo``: run the ``smoke`` preset of every implemented method and the core showcase
on data that ships with the package, then write one self-contained ``report.html``.

Each implemented method contributes ``demo(run_dir) -> Section``; a method that fails is shown
as failed in the report (with its one-line error) rather than hiding the others.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenfold import __version__
from tenfold.core.io import ConfigError, TenfoldError, new_run_dir, write_json
from tenfold.core.report import Section, write_report
from tenfold.registry import METHODS, load_method


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def core_classifier(run_dir: Path) -> Section:
    """The bundled CIFAR-10 ResNet-20 (real weights) on the 500 bundled real CIFAR-10 test images."""
    import torch

    from tenfold.core.data import load_dataset
    from tenfold.core.evaluate import evaluate_classifier
    from tenfold.core.models import build_model, default_weights

    ds = load_dataset("cifar10-mini")
    model = build_model("cifar10-resnet20", weights=default_weights("cifar10-resnet20")).eval()
    m = evaluate_classifier(model, ds, batch_size=250, progress=False)
    x, y = ds.tensors()
    idx = torch.arange(0, len(ds), len(ds) // 24)[:24]
    with torch.no_grad():
        pred = model(x[idx]).argmax(1)
    plt = _plt()
    fig, axes = plt.subplots(3, 8, figsize=(12, 5))
    for ax, i, p in zip(axes.flat, idx.tolist(), pred.tolist()):
        ax.imshow(x[i].permute(1, 2, 0).numpy())
        ok = p == int(y[i])
        ax.set_title(ds.classes[p], color="green" if ok else "red", fontsize=9)
        ax.axis("off")
    fig.suptitle("ResNet-20 predictions (green: correct, red: wrong)")
    fig.tight_layout()
    path = run_dir / "resnet20_predictions.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    metrics = {"top1": m["top1"], "top5": m["top5"], "images": m["n"],
               "reference_top1_full_even_half": 0.810}
    return Section("core: CIFAR-10 ResNet-20 (bundled real weights, 500 bundled test images)",
                   "tenfold eval on data that ships with the package. The JPEG test images cost the "
                   "pretrained net about 11 points against the original PNGs (see README).",
                   metrics, [path])


def core_engine(run_dir: Path) -> Section:
    """The training engine: a small CNN on scikit-learn's real 8x8 digits, with EMA and checkpoints."""
    import json

    import torch
    from torch import nn

    from tenfold.core.data import load_dataset
    from tenfold.core.engine import fit
    from tenfold.core.evaluate import evaluate_classifier

    ds = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ds), generator=g)
    train, test = ds.subset(perm[:1400].tolist()), ds.subset(perm[1400:].tolist())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10))

    def step(model: nn.Module, batch: Any) -> dict:
        x, y = batch
        return {"loss": nn.functional.cross_entropy(model(x), y)}

    result = fit(model, step, train, run_dir=run_dir / "train", steps=300, batch_size=64,
                 optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=3e-3), ema=0.99, ckpt_every=100,
                 log_every=10, progress=False, method="demo")
    acc = evaluate_classifier(model.eval(), test, progress=False)["top1"]
    rows = [json.loads(ln) for ln in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("log")
    ax.set_title("engine: training loss on sklearn digits")
    fig.tight_layout()
    path = run_dir / "engine_loss.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Section("core: training engine on real scikit-learn digits",
                   "300 AdamW steps with EMA, periodic atomic checkpoints and metrics.jsonl, "
                   "then top-1 on 397 held-out digits.",
                   {"held_out_top1": acc, "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
                    "steps": result["steps"]}, [path])


CORE_SECTIONS: dict[str, Callable[[Path], Section]] = {"classifier": core_classifier, "engine": core_engine}


def run_demo(out: str | Path, *, only: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every core section and every implemented method's demo; returns summary metrics."""
    jobs: list[tuple[str, Callable[[Path], Section] | None]] = list(CORE_SECTIONS.items())
    for name in METHODS:
        mod = load_method(name)
        jobs.append((name, getattr(mod, "demo", None) if mod else None))
    unknown = sorted(set(only or ()) - {name for name, _ in jobs})
    if unknown:  # a typo used to run nothing and exit 0 with an empty report
        raise ConfigError(f"unknown demo section(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(name for name, _ in jobs)}")
    run_dir = new_run_dir(out)
    sections: list[Section] = []
    metrics: dict[str, Any] = {}
    for name, fn in jobs:
        if only and name not in only:
            continue
        if fn is None:
            sections.append(Section(f"{name}: {METHODS[name]}", "Not implemented yet.", status="not implemented"))
            metrics[name] = "not implemented"
            continue
        sub = run_dir / name
        sub.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"demo: {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            sec = fn(sub)
        except TenfoldError as e:
            sec = Section(name, f"skipped: {e}", status="skipped")
        except Exception as e:  # a broken method must not hide the others; show the error in the report
            (sub / "error.txt").write_text(traceback.format_exc())
            sec = Section(name, f"failed: {type(e).__name__}: {e}", status="failed")
        sec.seconds = time.perf_counter() - t0
        sections.append(sec)
        metrics[name] = {"status": sec.status, "seconds": round(sec.seconds, 2), **sec.metrics}
    report = write_report(run_dir / "report.html", "tenfold demo", sections,
                          header={"tenfold": __version__, "run directory": str(run_dir)})
    write_json(run_dir / "metrics.json", metrics)
    failed = [s.title for s in sections if s.status == "failed"]
    # a skipped section (e.g. nvit's export without the onnx package) said so only inside report.html
    skipped = {s.title: s.summary.removeprefix("skipped: ") for s in sections if s.status == "skipped"}
    return {"report": str(report), "failed": failed, "skipped": skipped, "sections": metrics}
