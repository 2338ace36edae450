"""Frozen dataclass configs: named presets, typed and checked overrides, saved as JSON.

Every method has a frozen ``Config`` dataclass and a ``PRESETS`` dict (at least ``smoke`` and
``paper``). Overrides arrive as ``key=value`` strings (the CLI's ``--set``) and are parsed by
tyro against the field's type annotation, so ``steps=abc`` or an unknown key is an error
that names the valid choices, never a silent string.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tenfold.core.io import ConfigError, to_jsonable, write_json

C = TypeVar("C")


def get_preset(presets: Mapping[str, C], name: str) -> C:
    """Return ``presets[name]`` or raise :class:`ConfigError` listing the preset names."""
    if name not in presets:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(presets)}")
    return presets[name]


def field_names(cfg: Any) -> list[str]:
    """The override keys a config accepts."""
    return [f.name for f in dataclasses.fields(cfg)]


def _tyro_message(text: str) -> str:
    """Squeeze tyro's boxed error text into one line."""
    lines = [ln.strip(" -|\u2502\u2500\u256d\u256e\u2570\u256f") for ln in text.splitlines()]
    lines = ["" if ln.startswith("For full helptext") else ln for ln in lines]  # "" ends a paragraph
    hits = [i for i, ln in enumerate(lines) if ln and re.search(r"Error parsing|invalid choice|could not|Expected|"
                                                                r"expected|Unrecognized|required", ln)]
    if hits:
        i = max(hits, key=lambda j: len(lines[j]))  # the detailed line, not the box title
        parts = [lines[i]]
        for ln in lines[i + 1:]:  # tyro wraps at 80 columns: keep the rest of the paragraph (e.g. every choice)
            if not ln:
                break
            parts.append(ln)
        return " ".join(parts)
    rest = [ln for ln in lines if ln]
    return rest[-1] if rest else "invalid value"


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """Split ``["a=1", "b=x y"]`` into ``{"a": "1", "b": "x y"}``; a missing '=' is an error."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v
    return out


_BOOL_WORDS = {"true": "True", "1": "True", "yes": "True", "on": "True",
               "false": "False", "0": "False", "no": "False", "off": "False"}


def _parse_bool(key: str, value: str) -> str:
    """``true``/``false`` in any case (also 1/0, yes/no, on/off) as tyro's ``True``/``False``; else one clear line."""
    word = _BOOL_WORDS.get(value.strip().lower())
    if word is None:
        raise ConfigError(f"bad override: {key} takes true or false, got '{value}'")
    return word


def apply_overrides(cfg: C, overrides: Mapping[str, Any] | Sequence[str]) -> C:
    """Return a copy of the frozen ``cfg`` with ``overrides`` applied and type-checked.

    ``overrides`` may be ``key=value`` strings (parsed with tyro against each field's type) or
    a mapping of already-typed Python values (checked against the field's type the same way).
    """
    if not dataclasses.is_dataclass(cfg):
        raise TypeError("cfg must be a dataclass instance")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(list(overrides))
    if not overrides:
        return cfg
    valid = field_names(cfg)
    for k in overrides:
        if k not in valid:
            raise ConfigError(f"unknown config key '{k}'; valid keys: {', '.join(valid)}")
    import tyro

    hints = typing.get_type_hints(type(cfg))
    args: list[str] = []
    for k, v in overrides.items():
        if isinstance(v, str) and typing.get_origin(hints.get(k)) in (tuple, list):
            vals = [x for x in re.split(r"[,\s]+", v.strip("()[] ")) if x]  # "3,4" or "3 4"
        elif isinstance(v, str) and hints.get(k) is bool:
            vals = [_parse_bool(k, v)]
        elif isinstance(v, str):
            vals = [v]
        elif isinstance(v, (list, tuple)):
            vals = [str(x) for x in v]
        else:
            vals = [str(v)]
        # one value as --key=value: a value starting with '-' (data=-x) was read as a flag ("missing value")
        args += [f"--{k}={vals[0]}"] if len(vals) == 1 and typing.get_origin(hints.get(k)) not in (tuple, list) \
            else [f"--{k}", *vals]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            new = tyro.cli(type(cfg), args=args, default=cfg, config=(tyro.conf.FlagConversionOff,))
    except SystemExit:
        raise ConfigError(f"bad override: {_tyro_message(buf.getvalue())}") from None
    # Re-validate with the dataclass's own checks (a __post_init__ may reject combinations).
    return new


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as a plain JSON-able dict."""
    return to_jsonable(cfg)


def save_config(cfg: Any, run_dir: str | Path, name: str = "config.json", **extra: Any) -> Path:
    """Write the resolved config (plus e.g. ``method``, ``preset``) into the run directory."""
    payload = {"config": config_dict(cfg), **extra}
    return write_json(Path(run_dir) / name, payload)


def load_config(cls: type[C], path: str | Path) -> C:
    """Rebuild a config dataclass from a JSON file written by :func:`save_config`; values are type-checked as
    ``--set`` values are. A corrupt or mistyped file is one ConfigError (it was a JSON traceback, and
    ``"stage1_steps": "abc"`` passed)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    data = data.get("config", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object, got {type(data).__name__}")
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if v is None:  # save_config writes NaN as null (JSON has no NaN): a NaN float reloads, anything else is refused
            if hints.get(k) is not float:  # (null in a str field read as the text 'None')
                raise ConfigError(f"{path}: '{k}' is null")
            v = float("nan")
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    try:
        return apply_overrides(cls(), kwargs)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
