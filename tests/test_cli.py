"""The CLI: help, one-line errors with exit 2, --set/--dry-run/--json/--out/--resume, typed verb options.

A stand-in method module exercises the method/verb path, so these tests hold before any method lands."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Annotated

import pytest
import tyro

from tenfold import cli
from tenfold.core.io import InputError


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    steps: int = 3
    lr: float = 0.1


def _show(cfg: FakeConfig, run_dir: Path, *, file: Annotated[str, tyro.conf.Positional] = "", n: int = 1) -> dict:
    """Show a file (positional option, as in `tenfold kama bvh FILE.bvh`)."""
    (run_dir / "shown.txt").write_text(f"{file} {n}")
    return {"n": n}


def _train(cfg: FakeConfig, run_dir: Path, *, scale: float = 1.0, tag: str = "x", resume: bool = False) -> dict:
    """Writes a file so the test can see the run directory was used.

    Args:
        scale: multiplies the
            learning rate (a description over two lines).
        resume: set by the CLI's own --resume.
    """
    print("progress: a verb's own line")
    (run_dir / "out.txt").write_text(f"{cfg.steps} {cfg.lr} {scale} {tag} {resume}")
    return {"loss": cfg.lr * scale, "steps": cfg.steps, "resumed": resume}


def _fail(cfg: FakeConfig, run_dir: Path, *, partial: bool = False, inputs: bool = False) -> dict:
    """Fails with a user error, after writing a partial result, or the record of its inputs, when asked."""
    if partial:
        (run_dir / "rows.jsonl").write_text("{}\n")
    if inputs:
        (run_dir / "inputs.json").write_text("{}\n")
    raise InputError("the input is bad")


@pytest.fixture
def fake_method(monkeypatch):
    mod = types.SimpleNamespace(Config=FakeConfig, PRESETS={"smoke": FakeConfig(), "paper": FakeConfig(steps=99)},
                                VERBS={"train": _train, "show": _show, "fail": _fail})
    monkeypatch.setattr(cli, "load_method", lambda name: mod if name == "nvit" else None)
    return mod


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_method(capsys):
    code, out, _ = _run(capsys, "--help")
    assert code == 0
    for m in ("nvit", "hant", "gradinversion", "inversion", "lsgm", "kama", "handpose", "gaze", "matching",
              "rendering"):
        assert m in out


def test_method_verb_with_overrides_and_json(fake_method, capsys, tmp_path):
    code, out, err = _run(capsys, "nvit", "train", "--set", "lr=0.5", "--scale", "2", "--tag", "hi",
                          "--json", "--out", str(tmp_path / "r"))
    assert code == 0, err
    metrics = json.loads(out)  # with --json stdout is the one JSON object; the verb's print went to stderr
    assert "progress: a verb's own line" in err
    assert metrics["loss"] == pytest.approx(1.0) and metrics["steps"] == 3
    assert (tmp_path / "r" / "out.txt").read_text() == "3 0.5 2.0 hi False"
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config"] == {"steps": 3, "lr": 0.5} and saved["preset"] == "smoke"
    # a second run with the same --out goes to a new directory: results are never overwritten
    code, out, _ = _run(capsys, "nvit", "train", "--json", "--out", str(tmp_path / "r"))
    assert json.loads(out.strip().splitlines()[-1])["run_dir"] == str(tmp_path / "r-1")
    assert (tmp_path / "r" / "out.txt").read_text() == "3 0.5 2.0 hi False"


def test_a_user_error_leaves_no_empty_run_dir(fake_method, capsys, tmp_path):
    """A verb that fails on bad input before writing anything leaves no run directory behind (its config.json
    alone is removed); one that wrote a partial result keeps it, and so does an earlier run's directory."""
    code, _, err = _run(capsys, "nvit", "fail", "--out", str(tmp_path / "a"))
    assert code == 2 and err.strip() == "error: the input is bad" and not (tmp_path / "a").exists()
    code, _, _ = _run(capsys, "nvit", "fail", "--inputs", "True", "--out", str(tmp_path / "a2"))
    assert code == 2 and not (tmp_path / "a2").exists()  # session 22: the record of its inputs goes with it
    code, _, _ = _run(capsys, "nvit", "fail", "--partial", "True", "--out", str(tmp_path / "b"))
    assert code == 2 and sorted(p.name for p in (tmp_path / "b").iterdir()) == [".tenfold-run", "config.json",
                                                                               "rows.jsonl"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("a user's file")
    code, _, _ = _run(capsys, "nvit", "fail", "--out", str(tmp_path / "c"))
    assert code == 2 and (tmp_path / "c" / "mine.txt").is_file() and not (tmp_path / "c-1").exists()
    # parents the command had to create go too (the default --out is runs/NAME), parents that were there stay
    code, _, _ = _run(capsys, "nvit", "fail", "--out", str(tmp_path / "new" / "deeper" / "d"))
    assert code == 2 and not (tmp_path / "new").exists() and tmp_path.is_dir()
    (tmp_path / "kept").mkdir()
    code, _, _ = _run(capsys, "nvit", "fail", "--out", str(tmp_path / "kept" / "sub" / "e"))
    assert code == 2 and (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "sub").exists()


def test_dry_run_writes_nothing(fake_method, capsys, tmp_path):
    code, out, _ = _run(capsys, "nvit", "train", "--preset", "paper", "--dry-run", "--out", str(tmp_path / "d"))
    assert code == 0 and json.loads(out)["config"]["steps"] == 99
    assert not (tmp_path / "d").exists()


def _interrupted(cfg: FakeConfig, run_dir: Path, *, ckpt: bool = False, resume: bool = False) -> dict:
    """Ctrl-C in a long run, after writing a checkpoint when asked."""
    if ckpt:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "step-00000010.json").write_text("{}")
    raise KeyboardInterrupt


def test_an_interrupt_says_how_this_run_goes_on(fake_method, capsys, tmp_path):
    """The line read "--resume --out RUN_DIR" (a placeholder), and said a run could go on where it had no checkpoint."""
    fake_method.VERBS["long"] = _interrupted
    code, _, err = _run(capsys, "nvit", "long", "--ckpt", "True", "--out", str(tmp_path / "a"))
    assert code == 130 and err.strip().endswith(f"continue it with: tenfold nvit long --resume --out {tmp_path / 'a'}")
    code, _, err = _run(capsys, "nvit", "long", "--out", str(tmp_path / "b"))
    assert code == 130 and f"interrupted before {tmp_path / 'b'} held a checkpoint" in err and "--resume" not in err


def _rows_then_interrupt(cfg: FakeConfig, run_dir: Path, *, rows: bool = False, resume: bool = False) -> dict:
    """Ctrl-C in a verb that keeps its progress in a row file (gradinversion audit's audit_rows.jsonl)."""
    if rows:
        (run_dir / "rows.jsonl").write_text('{"row": 1}\n')
    raise KeyboardInterrupt


_rows_then_interrupt.resume_files = ("rows.jsonl",)


def test_an_interrupt_counts_a_verbs_own_progress_file_as_something_to_resume(fake_method, capsys, tmp_path):
    """Session 22 review: an audit stopped with finished rows in audit_rows.jsonl was told it had nothing to resume
    from (only checkpoints counted), so a user would start over and lose the finished attacks."""
    from tenfold.gradinversion import verbs

    assert verbs.audit.resume_files == ("audit_rows.jsonl",)
    fake_method.VERBS["rows"] = _rows_then_interrupt
    code, _, err = _run(capsys, "nvit", "rows", "--rows", "True", "--out", str(tmp_path / "a"))
    assert code == 130 and err.strip().endswith(f"continue it with: tenfold nvit rows --resume --out {tmp_path / 'a'}")
    code, _, err = _run(capsys, "nvit", "rows", "--out", str(tmp_path / "b"))
    assert code == 130 and "held a checkpoint" in err and "--resume" not in err


def _sample(cfg: FakeConfig, run_dir: Path, *, checkpoint: str = "") -> dict:
    """Runs with the config saved in ``checkpoint`` (as lsgm's sample and evaluate do)."""
    return {}


def test_dry_run_of_a_checkpoint_verb_shows_the_checkpoints_config(fake_method, capsys, tmp_path):
    """`lsgm sample --checkpoint RUN --dry-run` showed the smoke preset, which such a verb never runs with."""
    fake_method.VERBS["sample"] = _sample
    fake_method.CHECKPOINT_VERBS = ("sample",)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": {"steps": 7, "lr": 0.5}}))
    code, out, _ = _run(capsys, "nvit", "sample", "--checkpoint", str(tmp_path / "run"), "--dry-run")
    shown = json.loads(out)
    assert code == 0 and shown["preset"] is None and shown["config"] == {"steps": 7, "lr": 0.5}
    code, out, _ = _run(capsys, "nvit", "sample", "--checkpoint", str(tmp_path / "none"), "--dry-run")
    assert code == 0 and "not readable now" in json.loads(out)["config"]


def test_resume_reuses_run_dir_and_config(fake_method, capsys, tmp_path):
    _run(capsys, "nvit", "train", "--set", "steps=5", "--out", str(tmp_path / "r"))
    code, out, err = _run(capsys, "nvit", "train", "--resume", "--json", "--out", str(tmp_path / "r"))
    assert code == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["resumed"] is True and m["steps"] == 5 and m["run_dir"] == str(tmp_path / "r")


def test_resume_refuses_a_preset_and_a_corrupt_config(fake_method, capsys, tmp_path):
    """--resume with --preset used to show the preset in --dry-run and then run the saved config; a truncated or
    mistyped config.json was a JSON traceback or passed. Each is one error line now."""
    _run(capsys, "nvit", "train", "--set", "steps=5", "--out", str(tmp_path / "r"))
    code, _, err = _run(capsys, "nvit", "train", "--resume", "--preset", "paper", "--dry-run", "--out",
                        str(tmp_path / "r"))
    assert code == 2 and "--preset cannot be combined with --resume" in err
    cfg = tmp_path / "r" / "config.json"
    good = cfg.read_text()
    cfg.write_text(good[: len(good) // 2])
    code, _, err = _run(capsys, "nvit", "train", "--resume", "--out", str(tmp_path / "r"))
    assert code == 2 and "unreadable config" in err and "Traceback" not in err
    cfg.write_text(good.replace('"steps": 5', '"steps": "abc"'))
    code, _, err = _run(capsys, "nvit", "train", "--resume", "--out", str(tmp_path / "r"))
    assert code == 2 and "steps" in err and "Traceback" not in err


def test_demo_refuses_an_unknown_section(capsys, tmp_path):
    """`tenfold demo --only kamma` ran nothing and exited 0 with an empty report."""
    code, _, err = _run(capsys, "demo", "--only", "kamma", "--out", str(tmp_path / "d"))
    assert code == 2 and "unknown demo section(s) kamma" in err and "kama" in err
    assert not (tmp_path / "d").exists()


def test_resume_keeps_the_verb_options_the_run_started_with(fake_method, capsys, tmp_path):
    """--resume used to rerun the verb with its default options (e.g. a pruning run resumed on the default
    model); it now takes the saved ones and refuses new ones or another verb."""
    _run(capsys, "nvit", "train", "--scale", "3", "--tag", "mine", "--out", str(tmp_path / "r"))
    code, out, err = _run(capsys, "nvit", "train", "--resume", "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "out.txt").read_text() == "3 0.1 3.0 mine True"
    code, _, err = _run(capsys, "nvit", "train", "--resume", "--scale", "2", "--out", str(tmp_path / "r"))
    assert code == 2 and "verb options cannot be combined with --resume" in err and "--scale 2" in err
    code, _, err = _run(capsys, "nvit", "show", "--resume", "--out", str(tmp_path / "r"))
    assert code == 2 and ("'train' run" in err or "cannot resume" in err)


@pytest.mark.parametrize("argv, pattern", [
    (["nvit", "train", "--set", "lrr=1"], "unknown config key 'lrr'; valid keys: steps, lr"),
    (["nvit", "train", "--set", "steps=abc"], "steps"),
    (["nvit", "train", "--scale", "abc"], "scale"),
    (["nvit", "train", "--bogus", "1"], "bogus"),
    (["nvit", "fly"], "invalid choice"),
    (["nvit", "train", "--preset", "huge"], "unknown preset 'huge'; choose one of: smoke, paper"),
    (["nvit", "train", "--resume"], "--resume needs --out"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["hant", "train"], "not implemented yet"),
    (["bench", "kama", "--bad-flag"], "unrecognized arguments: --bad-flag"),  # was argparse's 4-line usage block
    (["bench", "./nvit"], "no benchmark './nvit'; choose one of: core, gradinversion, kama"),  # was an ImportError
    (["bench", "common"], "no benchmark 'common'"),  # a helper module: it ran, did nothing and exited 0
    (["bench", "kama", "--bodies", "0"], "--bodies must be >= 1, got 0"),  # a RuntimeError after the imports
    (["bench", "kama", "--chunk", "0"], "--chunk must be >= 1, got 0"),
    (["bench", "nvit", "--target", "0"], "--target must lie in (0, 1)"),  # checked after minutes of training
    (["bench", "nvit", "--data", "nosuch"], "--data nosuch: unknown dataset 'nosuch'"),
])
def test_user_mistakes_are_one_line_exit_2(fake_method, capsys, argv, pattern):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0]


def test_bench_of_an_imported_benchmark_warns_nothing(capsys):
    """`bench M` in a process that already imported benchmarks.M (a test run, a notebook) used to add runpy's
    "found in sys.modules" RuntimeWarning to stderr: two lines where one error line is promised."""
    import importlib
    import warnings

    before = importlib.import_module("benchmarks.kama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        code, _, err = _run(capsys, "bench", "kama", "--bad-flag")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert sys.modules["benchmarks.kama"] is before  # the earlier import is left in place


def test_real_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tenfold", "eval", "--model", "cifar10-resnet20",
                           "--weights", str(tmp_path / "missing.th"), "--data", "cifar10-mini"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert "missing.th" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verb_help_lists_verb_options(fake_method, capsys):
    code, out, _ = _run(capsys, "nvit", "train", "--help")
    assert code == 0 and "--scale" in out and "--preset" in out
    assert "multiplies the learning rate (a description over two lines)" in " ".join(out.split())
    # the verb's own resume flag is hidden: the CLI's --resume sets it (with the run's saved options)
    assert "--resume" not in out.split("tenfold nvit train:", 1)[1]


def test_every_real_verb_option_has_help():
    """Each option of every implemented verb is described in its docstring's Args section, which is what
    `tenfold METHOD VERB --help` shows (an option added without a line there fails here)."""
    from tenfold.registry import METHODS, load_method

    checked = 0
    for m in METHODS:
        mod = load_method(m)
        if mod is None:
            continue
        for verb, fn in mod.VERBS.items():
            helps = cli.verb_option_help(fn)
            for p in cli.verb_options(fn):
                assert helps.get(p.name), f"{m} {verb}: option '{p.name}' has no Args line in the docstring"
                checked += 1
            assert set(helps) <= {p.name for p in cli.verb_options(fn)}, f"{m} {verb}: Args names a non-option"
    assert checked >= 40  # nvit, kama, lsgm and gradinversion verbs


def test_positional_verb_option(fake_method, capsys, tmp_path):
    code, out, err = _run(capsys, "nvit", "show", "motion.bvh", "--n", "3", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert (tmp_path / "s" / "shown.txt").read_text() == "motion.bvh 3"


def test_no_flag_is_ambiguous_to_torchrun():
    """torchrun classifies every argument against its own options before handing the rest to the script, and
    stops with "ambiguous option" on a flag that abbreviates two of them (LSGM's sample took `--n`, which
    could be `--nnodes` or `--nproc-per-node`): no CLI or verb flag may do that."""
    from torch.distributed.run import get_args_parser

    from tenfold.registry import METHODS, load_method

    own = [s for s in get_args_parser()._option_string_actions if s.startswith("--")]

    def ambiguous(flag: str) -> bool:
        return flag not in own and sum(s.startswith(flag) for s in own) > 1

    assert ambiguous("--n") and not ambiguous("--num-samples")  # the check itself can fail
    flags = {"--preset", "--set", "--out", "--resume", "--dry-run", "--json", "--help"}
    for m in METHODS:
        mod = load_method(m)
        for fn in (mod.VERBS.values() if mod else ()):
            flags |= {"--" + p.name.replace("_", "-") for p in cli.verb_options(fn)}
    assert len(flags) > 40 and not [f for f in sorted(flags) if ambiguous(f)]


def test_a_boolean_option_takes_the_spellings_set_takes(fake_method, capsys, tmp_path):
    """Session 22 review: `--ode false` was refused ("Expected one of ('True', 'False')") while `--set
    binarize=false` was taken; true / false / yes / no / 1 / 0 in any case now read as the booleans."""
    for i, spelling in enumerate((["--partial", "true"], ["--partial=YES"], ["--partial", "1"])):
        code, _, _ = _run(capsys, "nvit", "fail", *spelling, "--out", str(tmp_path / f"t{i}"))
        assert code == 2 and (tmp_path / f"t{i}" / "rows.jsonl").is_file()  # partial=True wrote its rows
    code, _, _ = _run(capsys, "nvit", "fail", "--partial", "false", "--out", str(tmp_path / "f"))
    assert code == 2 and not (tmp_path / "f").exists()
    code, _, err = _run(capsys, "nvit", "fail", "--partial", "maybe", "--out", str(tmp_path / "m"))
    assert code == 2 and "invalid choice 'maybe'" in err


def _slow(cfg: FakeConfig, run_dir: Path, *, resume: bool = False) -> dict:
    """A long run that writes a checkpoint, then is stopped by SIGTERM (a scheduler's kill)."""
    import signal

    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "step-00000010.json").write_text("{}")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    raise AssertionError("SIGTERM did not stop the run")


def _nested(cfg: FakeConfig, run_dir: Path) -> dict:
    """Reads a crafted, deeply nested JSON (RecursionError) as a user's file might make it."""
    json.loads("[" * 100000 + "]" * 100000)
    return {}


def test_sigterm_a_huge_or_nested_input_and_a_failed_run_s_empty_files_are_handled(fake_method, capsys, tmp_path):
    """Session 22 review: SIGTERM killed a run with no word (exit 143, no resume hint); a nested JSON or a header
    claiming terabytes was a RecursionError / MemoryError traceback; a failed run's empty metrics.jsonl kept its
    folder, so the next run went to DIR-1."""
    import signal

    def not_ours(signum, frame):  # reached only when tenfold installed no handler (the process would die)
        raise RuntimeError("SIGTERM reached the test's own handler")

    fake_method.VERBS["slow"] = _slow
    before = signal.signal(signal.SIGTERM, not_ours)
    try:
        code, _, err = _run(capsys, "nvit", "slow", "--out", str(tmp_path / "a"))
        assert signal.getsignal(signal.SIGTERM) is not_ours  # the CLI put the caller's handler back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and err.strip().endswith(f"continue it with: tenfold nvit slow --resume --out {tmp_path / 'a'}")
    fake_method.VERBS["nested"] = _nested
    code, _, err = _run(capsys, "nvit", "nested", "--out", str(tmp_path / "n"))
    assert code == 2 and err.startswith("error: the input is too large or too deeply nested to read (RecursionError "
                                        "in ")  # where it happened, so a bug of ours is not hidden
    assert len(err.strip().splitlines()) == 1

    def empty_then_fail(cfg: FakeConfig, run_dir: Path) -> dict:
        (run_dir / "metrics.jsonl").touch()
        raise InputError("the input is bad")

    fake_method.VERBS["emptyfail"] = empty_then_fail
    code, _, _ = _run(capsys, "nvit", "emptyfail", "--out", str(tmp_path / "e"))
    assert code == 2 and not (tmp_path / "e").exists()


def test_resume_takes_relative_paths_from_the_runs_folder_and_leaves_built_in_names(tmp_path, monkeypatch):
    """--resume from another folder: options saved as typed are read against the folder the run started in, but a
    built-in name stays one even where a folder of that name exists there (a review found `vit` turned into a path)."""
    from tenfold.cli import _from_cwd

    old = tmp_path / "old"
    for d in ("vit", "default", "cifar10-test", "mine", "runs/prune"):
        (old / d).mkdir(parents=True)
    (old / "w.safetensors").write_text("x")
    monkeypatch.chdir(tmp_path)
    for name in ("vit", "default", "cifar10-test", "timm:vit", "", "none"):
        assert _from_cwd(name, str(old)) == name
    assert _from_cwd("w.safetensors", str(old)) == str(old / "w.safetensors")
    assert _from_cwd("runs/prune", str(old)) == str(old / "runs/prune")
    assert _from_cwd("folder:mine", str(old)) == f"folder:{old / 'mine'}"
    assert _from_cwd("nothere.pth", str(old)) == "nothere.pth"  # not there either: left for the verb to refuse
    assert _from_cwd(str(old / "w.safetensors"), str(tmp_path)) == str(old / "w.safetensors")
    monkeypatch.chdir(old)
    assert _from_cwd("w.safetensors", str(old)) == "w.safetensors"  # the same folder: as typed


@pytest.mark.parametrize("argv, message", [
    (["nvit", "prune", "--latency-target", "5"], "--latency-target must be in (0, 1]"),
    (["gradinversion", "attack", "--iterations", "-3"], "--iterations must be >= 0"),
    (["gradinversion", "attack", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["gradinversion", "audit", "--batch-sizes", "4", "4"], "--batch-sizes lists 4 more than once"),
    (["kama", "synth", "--bodies", "-2"], "bodies must be >= 1"),
    (["kama", "fit"], "pass --keypoints FILE"),
    (["lsgm", "sample"], "sample needs --checkpoint RUN_DIR"),
    (["lsgm", "evaluate", "--checkpoint", "x", "--fd-samples", "1"], "fd_samples must be 0 (no FD) or >= 2"),
])
def test_dry_run_checks_the_verbs_options(argv, message, capsys):
    """--dry-run printed a config for verb options the run then refused (--latency-target 5 among them): a verb's
    check_options now runs first, for --dry-run and a real run alike."""
    from tenfold import cli

    assert cli.main([*argv, "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"error: {message}" in err


def test_demo_names_a_skipped_section_on_stderr(capsys, tmp_path, monkeypatch):
    """A section skipped for a missing dependency (nvit's export without onnx) exited 0 with `failed: []` and said
    why only inside report.html."""
    from tenfold import demo
    from tenfold.core.io import DependencyError

    def needs_onnx(run_dir):
        raise DependencyError("ONNX export needs the 'onnx' package (pip install onnx)")

    monkeypatch.setitem(demo.CORE_SECTIONS, "engine", needs_onnx)
    code, _, err = _run(capsys, "demo", "--only", "engine", "--out", str(tmp_path / "d"))
    assert code == 0
    assert "warning: demo section engine skipped: ONNX export needs the 'onnx' package (pip install onnx)" in err


def test_help_of_an_unimplemented_method_and_a_missing_data_root(capsys, tmp_path, monkeypatch):
    """`tenfold hant --help` was an error (exit 2); `tenfold data` with TENFOLD_DATA at a folder that is not there
    listed every item as MISSING without saying why."""
    code, out, _ = _run(capsys, "hant", "--help")
    assert code == 0 and "method 'hant' (HANT: hardware-aware network transformation) is not implemented yet" in out
    monkeypatch.setenv("TENFOLD_DATA", str(tmp_path / "nope"))
    code, out, err = _run(capsys, "data")
    assert code == 0 and f"warning: the data root {tmp_path / 'nope'} is not there; set TENFOLD_DATA" in err
