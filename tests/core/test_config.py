"""core.config: typed overrides through tyro, unknown keys listed, presets checked, JSON round trip."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from tenfold.core.config import apply_overrides, get_preset, load_config, save_config
from tenfold.core.io import ConfigError


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 0.1
    steps: int = 10
    amp: bool = False
    mode: Literal["a", "b"] = "a"
    dims: tuple[int, ...] = (1, 2)


PRESETS = {"smoke": Cfg(steps=2), "paper": Cfg(steps=1000)}


def test_overrides_are_typed():
    cfg = apply_overrides(PRESETS["smoke"], ["lr=0.5", "amp=True", "mode=b", "dims=3 4"])
    assert cfg == Cfg(lr=0.5, steps=2, amp=True, mode="b", dims=(3, 4))
    assert isinstance(cfg.lr, float)
    assert apply_overrides(cfg, {"steps": 7}).steps == 7


@pytest.mark.parametrize("word, value", [("false", False), ("FALSE", False), ("0", False), ("true", True),
                                         ("True", True), ("yes", True)])
def test_bool_overrides_take_lowercase_words(word, value):
    """The READMEs write ``--set binarize=false``; tyro alone only took ``False``."""
    assert apply_overrides(Cfg(amp=not value), [f"amp={word}"]).amp is value


def test_bad_bool_is_one_clear_line():
    with pytest.raises(ConfigError, match="amp takes true or false, got 'maybe'"):
        apply_overrides(Cfg(), ["amp=maybe"])


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'; valid keys: lr, steps, amp, mode, dims"):
        apply_overrides(Cfg(), ["lrr=1"])


@pytest.mark.parametrize("bad, pattern", [("steps=abc", "steps"), ("mode=c", "'c'"), ("lr", "key=value")])
def test_wrong_type_is_one_line(bad, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        apply_overrides(Cfg(), [bad])
    assert "\n" not in str(e.value)


def test_bad_choice_lists_every_choice():
    """tyro wraps its message at 80 columns; the one line used to stop mid-list of the choices."""
    @dataclasses.dataclass(frozen=True)
    class Many:
        rule: Literal["alpha_rule", "beta_rule", "gamma_rule", "delta_rule", "epsilon_rule",
                      "omega_rule"] = "alpha_rule"

    with pytest.raises(ConfigError) as e:
        apply_overrides(Many(), ["rule=nope"])
    assert "invalid choice 'nope'" in str(e.value) and "'omega_rule')" in str(e.value) and "\n" not in str(e.value)


def test_presets():
    assert get_preset(PRESETS, "paper").steps == 1000
    with pytest.raises(ConfigError, match="smoke, paper"):
        get_preset(PRESETS, "large")


def test_save_load_roundtrip(tmp_path):
    cfg = Cfg(lr=0.3, dims=(5,))
    save_config(cfg, tmp_path, method="unit")
    assert load_config(Cfg, tmp_path / "config.json") == cfg


def test_tuple_overrides_take_commas_and_brackets():
    """The READMEs write both ``dims=3,4`` and ``dims=(3, 4)``; only the space-separated form was tested."""
    for text in ("3,4", "(3, 4)", "[3,4]", "3 4"):
        assert apply_overrides(Cfg(), [f"dims={text}"]).dims == (3, 4)


def test_values_keep_their_equals_signs_and_keys_take_dashes():
    """``data=folder:/x=y`` keeps everything after the first '='; ``batch-size=4`` is the field batch_size."""
    @dataclasses.dataclass(frozen=True)
    class Run:
        data: str = "digits"
        batch_size: int = 8

    assert apply_overrides(Run(), ["data=folder:/tmp/a=b", "batch-size=4"]) == Run("folder:/tmp/a=b", 4)


@dataclasses.dataclass(frozen=True)
class _Strs:
    data: str = "x"
    scale: float = 1.0


def test_config_round_trips_nan_and_takes_values_that_start_with_a_dash(tmp_path):
    """A NaN float was saved as null and the config.json could not be read back (so --resume failed); a null str read
    as the text 'None'; `--set data=-x` was taken for a flag ("missing value")."""
    import json
    import math

    cfg = apply_overrides(_Strs(), ["scale=nan", "data=-x"])
    assert math.isnan(cfg.scale) and cfg.data == "-x"
    save_config(cfg, tmp_path)
    back = load_config(_Strs, tmp_path / "config.json")
    assert math.isnan(back.scale) and back.data == "-x"
    (tmp_path / "bad.json").write_text(json.dumps({"config": {"data": None}}))
    with pytest.raises(ConfigError, match="'data' is null"):
        load_config(_Strs, tmp_path / "bad.json")
