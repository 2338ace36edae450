"""The ``tenfold`` command line.

    tenfold --help
    tenfold demo [--out DIR] [--json]
    tenfold data [--json]
    tenfold eval --model NAME [--weights FILE] --data SPEC [--json]
    tenfold bench METHOD [benchmark args...]
    tenfold METHOD VERB [--preset NAME] [--set key=value ...] [--dry-run] [--json] [--out DIR]
                        [--resume] [verb options...]

Verbs are plain functions ``verb(cfg, run_dir, **options) -> dict``; their keyword options
become flags (parsed by tyro from the type hints), the config is the method's frozen ``Config``
preset with ``--set`` overrides. A user mistake prints ``error: ...`` and exits 2. Under torchrun
the verbs a method lists in ``DISTRIBUTED_VERBS`` run on every rank (DDP); any other verb runs on
rank 0 alone. Verbs listed in ``CHECKPOINT_VERBS`` run with the config saved in a checkpoint, so
``--preset`` and ``--set`` are refused for them. A verb's ``check_options(cfg, **options)`` attribute, when it
has one, runs before ``--dry-run`` prints and before a run starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

from tenfold import __version__
from tenfold.core.io import RUN_MARKER, ConfigError, TenfoldError, names_builtin, to_jsonable
from tenfold.registry import METHODS, load_method

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line ``error: ...`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def _print_result(metrics: dict[str, Any], as_json: bool, title: str = "") -> None:
    """Human summary, or (with --json) one JSON object, the only thing on stdout (see ``_stdout_to_stderr``)."""
    if not as_json:
        if title:
            print(title)
        for k, v in metrics.items():
            if isinstance(v, float):
                v = f"{v:.6g}"
            elif isinstance(v, (dict, list)):
                v = json.dumps(to_jsonable(v))
            print(f"  {k}: {v}")
    else:
        sys.stdout.flush()
        print(json.dumps(to_jsonable(metrics)), flush=True)


# ---------------------------------------------------------------------------------------------
# Verb options from a function signature, parsed by tyro
# ---------------------------------------------------------------------------------------------
def verb_options(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The keyword options of a verb: every parameter after ``cfg`` and ``run_dir``."""
    params = list(inspect.signature(fn).parameters.values())
    return [p for p in params if p.name not in ("cfg", "run_dir")
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _docstring(fn: Callable[..., Any]) -> Any:
    """The verb's docstring parsed as Google style (summary, description, ``Args:``)."""
    import docstring_parser

    return docstring_parser.parse(fn.__doc__ or "", style=docstring_parser.DocstringStyle.GOOGLE)


def verb_option_help(fn: Callable[..., Any]) -> dict[str, str]:
    """Each option's help from the verb docstring's ``Args:`` section, so the Python API's documentation and
    ``tenfold METHOD VERB --help`` are one text."""
    return {p.arg_name: _plain(p.description or "") for p in _docstring(fn).params if p.description}


def verb_summary(fn: Callable[..., Any]) -> str:
    """The verb docstring's text before its ``Args:`` section, as one plain paragraph for ``--help``."""
    doc = _docstring(fn)
    return _plain(" ".join(filter(None, (doc.short_description, doc.long_description))))


def _plain(text: str) -> str:
    """Docstring text for a terminal: one line, reST literals (````x````) shown as x."""
    return " ".join(text.replace("``", "").split())


def parse_verb_options(fn: Callable[..., Any], args: Sequence[str], prog: str) -> dict[str, Any]:
    """Parse ``args`` into the verb's typed keyword options with tyro (errors: one line)."""
    import typing

    import tyro

    from tenfold.core.config import _tyro_message

    hints = typing.get_type_hints(fn, include_extras=True)  # keep tyro markers such as Positional
    helps = verb_option_help(fn)
    fields = []
    for p in verb_options(fn):
        ann = hints.get(p.name, str)
        if p.name == "resume":  # the CLI's own --resume sets it (with the run's saved options): not a verb flag
            ann = Annotated[ann, tyro.conf.Suppress]
        elif p.name in helps:
            ann = Annotated[ann, tyro.conf.arg(help=helps[p.name])]
        default = p.default if p.default is not inspect.Parameter.empty else dataclasses.MISSING
        fields.append((p.name, ann, dataclasses.field(default=default)))
    if not fields:
        if args:
            raise ConfigError(f"{prog} takes no options, got: {' '.join(args)}")
        return {}
    opts_cls = dataclasses.make_dataclass(f"{prog.replace(' ', '_')}_options", fields)
    args = _bool_words(args, {"--" + n.replace("_", "-") for n, ann, _ in fields if ann is bool
                              or typing.get_origin(ann) is Annotated and typing.get_args(ann)[0] is bool})
    if any(a in ("-h", "--help") for a in args):
        tyro.cli(opts_cls, args=list(args), prog=prog, config=(tyro.conf.FlagConversionOff,))
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            parsed = tyro.cli(opts_cls, args=list(args), prog=prog, config=(tyro.conf.FlagConversionOff,))
    except SystemExit:
        raise ConfigError(f"{prog}: {_tyro_message(buf.getvalue())}") from None
    return {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}


_BOOL_WORDS = {"true": "True", "false": "False", "yes": "True", "no": "False", "1": "True", "0": "False"}


def _bool_words(args: Sequence[str], flags: set[str]) -> list[str]:
    """A boolean option's value as tyro takes it (True / False): ``--ode false`` was refused while ``--set
    binarize=false`` was taken, so the two spellings now agree."""
    out: list[str] = []
    for i, a in enumerate(args):
        flag, eq, val = a.partition("=")
        if eq and flag in flags and val.lower() in _BOOL_WORDS:
            a = f"{flag}={_BOOL_WORDS[val.lower()]}"
        elif i and args[i - 1] in flags and a.lower() in _BOOL_WORDS:
            a = _BOOL_WORDS[a.lower()]
        out.append(a)
    return out


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_method(method: str, argv: Sequence[str]) -> int:
    """``tenfold METHOD VERB ...``: resolve the config, make the run dir, call the verb."""
    from tenfold.core.config import apply_overrides, config_dict, get_preset, load_config, save_config
    from tenfold.core.io import new_run_dir

    mod = load_method(method)
    if mod is None:
        said = (f"method '{method}' ({METHODS[method]}) is not implemented yet; implemented: "
                f"{', '.join(m for m in METHODS if load_method(m)) or 'none'}")
        if list(argv[:1]) in (["-h"], ["--help"]):  # asking for help is no mistake: the answer, exit 0
            print(said)
            return 0
        raise ConfigError(said)
    verbs: dict[str, Callable[..., dict]] = mod.VERBS
    p = _Parser(prog=f"tenfold {method}", description=METHODS[method], add_help=False)
    p.add_argument("verb", choices=list(verbs), help="what to do")
    p.add_argument("-h", "--help", action="store_true", help="show this help (and the verb's options)")
    p.add_argument("--preset", default=None, help=f"one of: {', '.join(mod.PRESETS)} (default: smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="run directory (never overwritten)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its saved config and options")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.add_argument("--json", action="store_true", help="last stdout line is one JSON object of metrics")
    if argv and argv[0] in ("-h", "--help"):
        p.print_help()
        print("\nverbs and their options: tenfold " + method + " VERB --help")
        return 0
    ns, rest = p.parse_known_args(argv)
    fn = verbs[ns.verb]
    prog = f"tenfold {method} {ns.verb}"
    if ns.help:
        p.print_help()
        print(f"\n{prog}: {verb_summary(fn)}")
        if verb_options(fn):
            with contextlib.suppress(SystemExit):
                parse_verb_options(fn, ["--help"], prog)
        return 0
    options = parse_verb_options(fn, rest, prog)
    if ns.verb in getattr(mod, "CHECKPOINT_VERBS", ()) and (ns.preset is not None or ns.overrides):
        raise ConfigError(f"{prog} runs with the config saved in its --checkpoint, so --preset and --set would "
                          f"not apply; use its options (tenfold {method} {ns.verb} --help)")
    if ns.resume and ns.preset is not None:  # it was shown by --dry-run and then ignored
        raise ConfigError("--preset cannot be combined with --resume (the run keeps its saved config)")
    ns.preset = ns.preset or "smoke"

    if ns.resume:
        if ns.out is None or not (ns.out / "config.json").is_file():
            raise ConfigError("--resume needs --out pointing at an earlier run directory (with config.json)")
        if "resume" not in options:
            raise ConfigError(f"{prog} cannot resume")
        cfg = load_config(mod.Config, ns.out / "config.json")
        if ns.overrides:
            raise ConfigError("--set cannot be combined with --resume (the run keeps its saved config)")
        options = _saved_options(ns.out / "config.json", options, rest, ns.verb)
        options["resume"] = True
    else:
        cfg = apply_overrides(get_preset(mod.PRESETS, ns.preset), ns.overrides)
    check = getattr(fn, "check_options", None)  # a verb's own option checks, so --dry-run refuses what a run would
    if check is not None:
        check(cfg, **{k: v for k, v in options.items() if k != "resume"})
    if ns.dry_run:
        shown: Any = config_dict(cfg)
        preset: str | None = ns.preset
        if ns.verb in getattr(mod, "CHECKPOINT_VERBS", ()):  # it showed the smoke preset, which these never use
            preset, ck = None, Path(str(options.get("checkpoint") or ""))
            try:
                shown = config_dict(load_config(mod.Config, ck / "config.json"))
            except TenfoldError:
                shown = f"the config saved in --checkpoint {ck} (not readable now)"
        print(json.dumps({"method": method, "verb": ns.verb, "preset": preset,  # --json: one line, the last
                          "config": shown, "options": to_jsonable(options)}, indent=None if ns.json else 2))
        return 0
    group = _Torchrun(getattr(cfg, "device", "cpu"))
    try:
        run_dir, made = None, []
        if group.rank == 0:
            target = Path(ns.out or _default_out(f"{method}-{ns.verb}")).expanduser()
            made = [] if ns.resume else [q for q in target.parents if not q.exists()]  # e.g. runs/, deepest first
            run_dir = ns.out if ns.resume else new_run_dir(target)
            if not ns.resume:
                save_config(cfg, run_dir, method=method, verb=ns.verb, preset=ns.preset,
                            overrides=list(ns.overrides), options=to_jsonable(options), tenfold=__version__,
                            cwd=os.getcwd())  # what relative paths in the options are relative to (for --resume)
        run_dir = group.agree(run_dir)
        single = group.world > 1 and ns.verb not in getattr(mod, "DISTRIBUTED_VERBS", ())
        if single:  # a one-process verb: rank 0 runs it alone, the other ranks leave at once
            group.close()
            if group.rank != 0:
                return 0
            print(f"{prog} runs in one process; under torchrun rank 0 runs it and the other {group.world - 1} "
                  f"rank(s) exit", file=sys.stderr)
        t0 = time.perf_counter()
        try:
            with _one_process() if single else contextlib.nullcontext(), _stdout_to_stderr(ns.json):
                metrics = dict(fn(cfg, run_dir, **options))
        except TenfoldError:
            if group.rank == 0 and not ns.resume:
                _remove_if_only_config(Path(run_dir), made)
            raise
        except KeyboardInterrupt as stop:  # say whether, and how, this run can go on (it printed a RUN_DIR
            # placeholder and said so even where no checkpoint had been written); SIGTERM comes here too
            code = 143 if isinstance(stop, _Terminated) else 130
            if group.rank == 0:
                # a checkpoint, or a progress file the verb names (audit: its finished rows, audit_rows.jsonl)
                can = "resume" in options and (any(Path(run_dir).glob("**/checkpoints/*.json")) or any(
                    (f := Path(run_dir) / name).is_file() and f.stat().st_size > 0
                    for name in getattr(fn, "resume_files", ())))
                print(f"error: interrupted; continue it with: tenfold {method} {ns.verb} --resume --out {run_dir}"
                      if can else f"error: interrupted before {run_dir} held a checkpoint to resume from",
                      file=sys.stderr)
                if not can and not ns.resume:
                    _remove_if_only_config(Path(run_dir), made)
            return code
        metrics.setdefault("run_dir", str(run_dir))
        metrics.setdefault("seconds", round(time.perf_counter() - t0, 3))
        if group.rank == 0:  # one result, not one per process
            _print_result(metrics, ns.json, title=f"{prog}: done, outputs in {run_dir}")
    finally:
        group.close()
    return 0


def _stdout_to_stderr(as_json: bool) -> contextlib.AbstractContextManager:
    """With --json, what a verb prints goes to stderr, so stdout is the one JSON result (``| jq`` works)."""
    return contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()


def _remove_if_only_config(run_dir: Path, made: Sequence[Path] = ()) -> None:
    """A run directory this command made and a user error ended before anything but ``config.json`` (and the
    record of its inputs, ``inputs.json``, the claim marker ``.tenfold-run``, or empty files such as a
    ``metrics.jsonl`` opened before the error) was written: removed, so a mistyped option leaves no empty run behind
    (anything else in it is kept). So are the parents it had to create (``made``, deepest first, e.g. ``runs/``)
    while they stay empty."""
    with contextlib.suppress(OSError):
        entries = list(run_dir.iterdir())
        names = {p.name for p in entries}
        if "config.json" in names and all(
                p.name in ("config.json", "inputs.json", RUN_MARKER)
                or (p.is_file() and not p.is_symlink() and p.stat().st_size == 0) for p in entries):
            for p in entries:
                p.unlink()
            run_dir.rmdir()
            for parent in made:
                parent.rmdir()  # OSError when not empty: stop there


def _saved_options(path: Path, defaults: dict[str, Any], given: Sequence[str], verb: str) -> dict[str, Any]:
    """The verb options a run started with (saved in its config.json), for ``--resume``: resuming with the
    defaults instead would continue e.g. a pruning run on another model or to another latency target."""
    saved = json.loads(path.read_text())
    if saved.get("verb", verb) != verb:
        raise ConfigError(f"{path.parent} is a '{saved.get('verb')}' run, not a '{verb}' one; --resume continues a run "
                          f"with the verb that started it, where that verb can resume")
    if given:
        raise ConfigError(f"verb options cannot be combined with --resume (the run keeps the options it started "
                          f"with): {' '.join(given)}")
    out = dict(defaults)
    cwd = saved.get("cwd")
    for k, v in (saved.get("options") or {}).items():
        if k in out:
            out[k] = tuple(v) if isinstance(v, list) else _from_cwd(v, cwd) if isinstance(v, str) else v
    return out


def _from_cwd(value: str, cwd: str | None) -> str:
    """An option saved as typed, for a --resume from another folder: a relative path (or the PATH of a NAME:PATH
    spec) that exists in the folder the run started from (``cwd``) is taken from there, as the run took it (a run
    started with --weights w.safetensors could only be resumed from its own folder). Built-in names (``vit``,
    ``default``, ``cifar10-test``, ``timm:NAME``; ``core.io.names_builtin``) stay as they are, whatever folders
    exist."""
    if not cwd or not value or Path(cwd) == Path.cwd() or value.startswith("timm:"):
        return value
    head, sep, tail = value.partition(":")  # NAME:PATH (folder:mine, mnist:DIR): PATH is a path, bare or not
    if not sep:
        head, tail = "", value
        if names_builtin(value):
            return value
    if not tail or Path(tail).expanduser().is_absolute() or not (Path(cwd) / tail).exists():
        return value
    return f"{head}{sep}{Path(cwd) / tail}"


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """Hide torchrun's ``WORLD_SIZE``/``RANK`` while a one-process verb runs on rank 0, so nothing inside it (e.g.
    the engine's ``fit`` training a cached helper model) tries to join a group the other ranks have left."""
    saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
    os.environ.update(WORLD_SIZE="1", RANK="0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Torchrun:
    """The CLI's share of a torchrun launch: every process must write into the run directory that rank 0 picked
    (``new_run_dir`` on each rank would give rank k its own ``out-k``), so the group is joined before the verb
    runs and rank 0's choice is broadcast. A plain ``python`` run is one process and needs none of this."""

    def __init__(self, device: str) -> None:
        self.rank, self.world, self.started = 0, 1, False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from tenfold.core.engine import setup_distributed

            info, _, self.started = setup_distributed(device)
            self.rank, self.world = info.rank, info.world_size

    def agree(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group if the CLI created it (safe to call twice)."""
        import torch.distributed as dist

        if self.started and dist.is_initialized():
            dist.destroy_process_group()
        self.started = False


def cmd_eval(argv: Sequence[str]) -> int:
    """``tenfold eval``: classification accuracy of a model on a dataset."""
    from tenfold.core.evaluate import run_eval

    p = _Parser(prog="tenfold eval", description="top-1/top-5 accuracy of a classifier on a dataset")
    p.add_argument("--model", required=True, help="e.g. cifar10-resnet20 (see tenfold.core.models)")
    p.add_argument("--weights", default=None, help="weights file (.th/.pth or tenfold checkpoint)")
    p.add_argument("--data", required=True, help="dataset spec, e.g. cifar10-test or cifar10-test:PATH.zip")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate a class-balanced subset of this size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    metrics = run_eval(ns.model, ns.weights, ns.data, batch_size=ns.batch_size, device=ns.device,
                       limit=ns.limit, progress=not ns.json)
    _print_result(metrics, ns.json, title=f"tenfold eval {ns.model} on {ns.data}")
    return 0


def cmd_data(argv: Sequence[str]) -> int:
    """``tenfold data``: every dataset and weight file found, with sizes, and what is missing."""
    from tenfold.core.data import data_root, list_data

    p = _Parser(prog="tenfold data", description="list the real data and weights tenfold can find")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    items = list_data()
    found = [d for d in items if d["exists"]]
    missing = [d for d in items if not d["exists"]]
    root = data_root()
    if not root.is_dir():  # every item read MISSING, with no word on why
        print(f"warning: the data root {root} is {'not a folder' if root.exists() else 'not there'}; set "
              "TENFOLD_DATA to the folder holding the shared data (the bundled assets still work)", file=sys.stderr)
    if not ns.json:
        print(f"data root: {root} (set TENFOLD_DATA to change)")
        for d in items:
            size = f"{d['size_bytes'] / 1e6:9.2f} MB" if d["exists"] else "  MISSING   "
            print(f"  {size}  {d['name']:<28} {d['path']}")
        print(f"{len(found)} found, {len(missing)} missing")
    else:
        print(json.dumps({"root": str(data_root()), "found": len(found), "missing": len(missing),
                          "items": to_jsonable(items)}))
    return 0


def cmd_demo(argv: Sequence[str]) -> int:
    """``tenfold demo``: the smoke preset of every implemented method, one HTML report."""
    from tenfold.demo import run_demo

    p = _Parser(prog="tenfold demo", description="run every implemented method's smoke demo; write report.html")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--only", action="append", default=None, help="run only these sections (repeatable)")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    with _stdout_to_stderr(ns.json):
        metrics = run_demo(ns.out, only=ns.only, progress=not ns.json)
    _print_result(metrics, ns.json, title=f"tenfold demo: report at {metrics['report']}")
    for name, why in metrics.get("skipped", {}).items():
        print(f"warning: demo section {name} skipped: {why}", file=sys.stderr)
    if metrics["failed"]:
        print(f"error: demo sections failed: {', '.join(metrics['failed'])} (see error.txt in their folders)",
              file=sys.stderr)
        return 1
    return 0


def cmd_bench(argv: Sequence[str]) -> int:
    """``tenfold bench METHOD [args]``: run ``benchmarks/METHOD.py`` from a repository checkout."""
    import runpy

    candidates = [Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"]
    # a benchmark is a script with a main guard; common.py and __init__.py are its helpers (they ran, did nothing,
    # and exited 0)
    found = sorted({f.stem for root in candidates if root.is_dir() for f in root.glob("*.py")
                    if not f.stem.startswith("_") and f.stem != "common" and b"__main__" in _read_or_empty(f)})
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: tenfold bench METHOD [benchmark args...]   (runs benchmarks/METHOD.py)")
        print("benchmarks: " + (", ".join(found) or "none here (they ship with the repository)"))
        return 0
    method, rest = argv[0], list(argv[1:])
    if method not in found:  # "./nvit" or "../x" passed the file check and failed as a module name (a traceback)
        raise ConfigError(f"no benchmark '{method}'; choose one of: {', '.join(found)}" if found else
                          f"no benchmark '{method}': benchmarks/{method}.py not found (benchmarks ship with the "
                          "repository, not the installed package)")
    for root in candidates:
        script = root / f"{method}.py"
        if script.is_file():
            sys.path.insert(0, str(root.parent))
            argv_before, sys.argv = sys.argv, [str(script), *rest]
            name = f"benchmarks.{method}"
            # imported earlier in this process (a test, a notebook): run the file afresh as __main__, without
            # runpy's "found in sys.modules" RuntimeWarning, which reached stderr as a second line
            imported = sys.modules.pop(name, None)
            try:
                runpy.run_module(name, run_name="__main__")
            except SystemExit as e:  # a benchmark's own exit (a bad flag: 2) is this command's exit code
                if isinstance(e.code, str):  # SystemExit("message"): one error line, as every tenfold error
                    print(f"error: {e.code}", file=sys.stderr)
                    return EXIT_USER_ERROR
                return e.code or 0
            finally:
                sys.argv = argv_before
                if imported is not None:
                    sys.modules[name] = imported
            return 0
    raise ConfigError(f"no benchmark '{method}': benchmarks/{method}.py not found "
                      "(benchmarks ship with the repository, not the installed package)")


def _read_or_empty(path: Path) -> bytes:
    """A file's bytes, or none where it cannot be read (a folder named x.py, no permission)."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _top_help() -> str:
    lines = [f"tenfold {__version__}: ten 2021 vision research methods, one toolkit.", "",
             "usage:",
             "  tenfold demo [--out DIR]                 smoke demo of every implemented method -> report.html",
             "  tenfold data                             list the real data and weights found",
             "  tenfold eval --model M [--weights F] --data SPEC [--json] classification accuracy",
             "  tenfold bench METHOD [args]              run benchmarks/METHOD.py",
             "  tenfold METHOD VERB [--preset P] [--set k=v ...] [--dry-run] [--json] [--out DIR] [opts]",
             "", "methods:"]
    for name, title in METHODS.items():
        mod = load_method(name)
        state = ("verbs: " + ", ".join(mod.VERBS)) if mod else "not implemented yet"
        lines.append(f"  {name:<14} {title}  [{state}]")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tenfold`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import warnings

    from tenfold.core.io import TenfoldWarning

    with warnings.catch_warnings():  # restores the filters and showwarning when main returns (tests call it)
        # kornia scripts functions at import time; torch 2.10+ warns about it on every CLI call.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
        default_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            if issubclass(category, TenfoldWarning):  # ours: one line, like the errors
                print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
            else:
                default_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return _main(argv)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the run is so that it ends as a Ctrl-C does: with the
    resume hint. It died with no word and exit 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _main(argv: list[str]) -> int:
    """:func:`main` inside its warning handling."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    else:
        previous = None
    try:
        return _run_command(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_command(argv: list[str]) -> int:
    """:func:`_main` after its signal set-up: a command, its errors as one line each."""
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(_top_help())
            return 0
        if argv[0] in ("-V", "--version"):
            print(__version__)
            return 0
        cmd, rest = argv[0], argv[1:]
        commands = {"demo": cmd_demo, "data": cmd_data, "eval": cmd_eval, "bench": cmd_bench}
        if cmd in commands:
            return commands[cmd](rest)
        if cmd in METHODS:
            return cmd_method(cmd, rest)
        raise ConfigError(f"unknown command '{cmd}'; choose one of: {', '.join([*commands, *METHODS])}")
    except TenfoldError as e:
        msg = " ".join(str(e).split("\n")).strip()
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:
        print("error: interrupted", file=sys.stderr)
        return 143 if isinstance(stop, _Terminated) else 130
    except (MemoryError, RecursionError) as e:  # a crafted or huge input (a nested JSON, a header claiming TBs)
        import traceback

        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" in {Path(last.filename).name}:{last.lineno}" if last else ""  # so a bug of ours still shows
        print(f"error: the input is too large or too deeply nested to read ({type(e).__name__}{where}"
              + (f": {' '.join(str(e).split())}" if str(e) else "") + ")", file=sys.stderr)
        return EXIT_USER_ERROR
    except PermissionError as e:
        print(f"error: permission denied: {e.filename or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
