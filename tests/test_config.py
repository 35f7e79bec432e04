"""conf/ composes to the committed params.yaml; dvc.yaml params exist; sections load and validate."""

from __future__ import annotations

import re

import pytest
import yaml

from ocrslim.compose import compose
from ocrslim.core import config as cfgmod
from ocrslim.core.config import SECTIONS, DetConfig, load_section, schema_defaults
from ocrslim.core.errors import ConfigError

from .conftest import REPO


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_conf_composes_to_committed_params(params):
    assert compose(config_dir=REPO / "conf") == params, "params.yaml is stale: run python -m ocrslim.compose"


def test_dvc_composes_the_same_params_with_the_schema_plugin(params, tmp_path):
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(REPO / "conf"), None, "config", str(REPO), [])  # as `dvc exp run` does
    assert yaml.safe_load(out.read_text()) == params


def _leaves(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": value}`` for every non-mapping value of a nested mapping."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


CONF_OPTIONS = sorted(p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").glob("*/*.yaml"))


def test_the_composed_defaults_are_the_dataclass_defaults(params):
    assert params == schema_defaults()


@pytest.mark.parametrize("option", CONF_OPTIONS)
def test_each_default_is_written_once(option):
    """No conf/ option restates a dataclass default. The options that select the defaults (the teacher
    ``ppocrv4_mobile``, the student ``pruned``, the profile ``default``) exist only to be selectable, so they set
    nothing at all."""
    text = (REPO / "conf" / option).read_text()
    data = yaml.safe_load(text) or {}
    if "@package _global_" not in text:
        data = {option.split("/")[0]: data}  # a group option's keys live under its group's section
    defaults = _leaves(schema_defaults())
    for key, value in _leaves(data).items():
        assert key in defaults, f"conf/{option}: {key} is not a params key"
        assert value != defaults[key], f"conf/{option}: {key} restates the default ({value!r})"


@pytest.mark.parametrize(("old", "new"), sorted(cfgmod.RENAMED.items()))
def test_a_renamed_key_points_at_its_new_name(old, new):
    section, key = old.split(".", 1)
    with pytest.raises(ConfigError, match=re.escape(f"{old} was renamed to {new}")) as info:
        load_section({section: {key: 0}}, section, SECTIONS[section])
    assert "\n" not in str(info.value)


def test_tiny_profile_overrides_eval_limit():
    assert compose(["profile=tiny"], config_dir=REPO / "conf")["eval"]["limit"] == 3


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_section_loads_into_its_dataclass(params, section):
    load_section(params, section, SECTIONS[section])


def test_unknown_key_suggests_the_closest_and_names_the_section():
    with pytest.raises(ConfigError, match=r"det\.treshold is not a DetConfig field \(did you mean 'thresh'\?\)"):
        load_section({"det": {"treshold": 0.3}}, "det", DetConfig)


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("det", {"thresh": 1.5}, r"det\.thresh .*must be in \(0, 1\)"),
        ("det", {"limit_type": "mid"}, r"det\.limit_type"),
        ("rec", {"height": 50}, r"rec\.height"),
        ("export", {"rec_widths": [320]}, r"export\.rec_widths needs at least 2"),
        ("eval", {"limit": "many"}, r"eval\.limit: expected a number"),
        ("det", {"use_dilation": "yes"}, r"det\.use_dilation: expected true/false"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(section, values, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_section({section: values}, section, SECTIONS[section])
    assert "\n" not in str(info.value)


def test_types_are_converted():
    cfg = load_section({"det": {"mean": [0, 0, 0], "limit_side_len": 960.0}}, "det", DetConfig)
    assert cfg.mean == (0.0, 0.0, 0.0) and isinstance(cfg.limit_side_len, int)
