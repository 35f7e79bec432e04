"""conf/ composes to the committed params.yaml; dvc.yaml params exist; sections load and validate."""

from __future__ import annotations

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


def test_each_default_is_written_once(params):
    """The composed defaults are the dataclasses' defaults, and conf/ restates none of them."""
    assert params == schema_defaults()
    defaults = schema_defaults()
    for option in ("profile/tiny.yaml", "student/seed.yaml", "teacher/ppocrv6_small.yaml"):
        data = yaml.safe_load((REPO / "conf" / option).read_text())
        if option.startswith("teacher/"):
            data = {"teacher": data}
        for section, values in data.items():
            for key, value in values.items():
                assert value != defaults[section][key], f"conf/{option}: {section}.{key} restates the default"


def test_a_renamed_key_points_at_its_new_name(monkeypatch):
    monkeypatch.setitem(cfgmod.RENAMED, "det.old_thresh", "det.thresh")
    with pytest.raises(ConfigError, match=r"det\.old_thresh was renamed to det\.thresh") as info:
        load_section({"det": {"old_thresh": 0.3}}, "det", DetConfig)
    assert "\n" not in str(info.value)


def test_tiny_profile_overrides_eval_limit():
    assert compose(["profile=tiny"], config_dir=REPO / "conf")["eval"]["limit"] == 3


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_section_loads_into_its_dataclass(params, section):
    load_section(params, section, SECTIONS[section])


def _dvc_param_keys() -> set[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    keys: set[str] = set()
    for stage in stages.values():
        body = stage.get("do", stage)
        tasks = stage.get("matrix", {}).get("task", [None])
        for key in body.get("params", []):
            keys.update(key.replace("${item.task}", t) for t in tasks if t) if "${item.task}" in key else keys.add(key)
    return keys


def test_every_dvc_params_key_exists(params):
    for key in _dvc_param_keys():
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml names params key {key!r}, not in params.yaml"
            node = node[part]


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
