"""docs/config.md stays exact: every key of the models is in its reference, with its type and default,
and it names no key the models lack; docs/config.example.yml loads and uses only documented keys."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from remediator.config import Config, Environment, load_config
from remediator.config.reference import BEGIN, END, render

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<type>[^|]+?) \| (?P<default>[^|]*?) \| (?P<meaning>.*) \|$")
FREE_FORM = ("hosts[].fence.options", "hosts[].labels")  # their keys are the agent's or the operator's


def _documented() -> dict[str, dict[str, str]]:
    """The reference table of docs/config.md, parsed: key -> {type, default, meaning}."""
    text = (DOCS / "config.md").read_text()
    keys_part = text.split("### Keys", 1)[1].split("### Environment", 1)[0]
    return {m["key"]: m.groupdict() for line in keys_part.splitlines() if (m := ROW.match(line))}


def _model_type(annotation: typing.Any) -> type | None:
    """The model inside X | None, tuple[X, ...], or X itself; None for a plain value."""
    for arg in (annotation, *typing.get_args(annotation)):
        inner = typing.get_args(arg)[0] if typing.get_origin(arg) is tuple else arg
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def _model_keys(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, typing.Any]:
    """Walk the models (independently of reference.py): key path -> its pydantic field."""
    found = {}
    for name, field in model.model_fields.items():
        path = prefix + (field.validation_alias or name)  # the file's key (HostConfig.power is `fence`)
        found[path] = field
        inner = _model_type(field.annotation)
        one_or_list = (field.json_schema_extra or {}).get("one_or_list")  # fence: one device or levels
        if inner is not None:
            list_like = typing.get_origin(field.annotation) is tuple and not one_or_list
            found.update(_model_keys(inner, f"{path}[]." if list_like else f"{path}."))
    return found


def test_config_md_is_what_the_models_write():
    text = (DOCS / "config.md").read_text()
    written = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert written == render(), "docs/config.md is stale: run `python -m remediator.config.reference --write`"


def test_reference_names_every_model_key_and_no_other():
    documented, model = _documented(), _model_keys()
    assert len(model) > 60
    assert sorted(set(model) - set(documented)) == [], "keys of the models missing from docs/config.md"
    assert sorted(set(documented) - set(model)) == [], "keys in docs/config.md that the models lack"


def test_reference_gives_each_key_its_type_default_and_meaning():
    words = {bool: "boolean", int: "integer", float: "number", str: "string"}
    documented = _documented()
    for path, field in _model_keys().items():
        row = documented[path]
        assert row["meaning"].strip(), f"{path}: no meaning in docs/config.md"
        default = field.get_default(call_default_factory=True)
        if field.default is PydanticUndefined and field.default_factory is None:
            assert row["default"] == "required", path
        elif default is None:
            assert row["default"] == "absent", path
        elif isinstance(default, (bool, int, float, str)):
            shown = str(default).lower() if isinstance(default, bool) else (
                f"{default:.4g}" if isinstance(default, float) else str(default))
            assert row["default"] == f"`{shown}`", path
            if not (field.json_schema_extra or {}).get("doc_type"):  # else the type is said in words
                assert row["type"].startswith(words[type(default)]), (path, row["type"])


def _yaml_keys(node: typing.Any, prefix: str = "") -> set[str]:
    if isinstance(node, list):
        return set().union(*(_yaml_keys(item, prefix.removesuffix(".") + "[].") for item in node))
    if not isinstance(node, dict) or prefix.removesuffix(".") in FREE_FORM:
        return set()
    return set().union(*({f"{prefix}{k}"} | _yaml_keys(v, f"{prefix}{k}.") for k, v in node.items()))


def test_example_loads_and_uses_only_documented_keys():
    example = DOCS / "config.example.yml"
    assert load_config(example, env={}).hosts
    used = _yaml_keys(yaml.safe_load(example.read_text()))
    assert "policy.timings.host_down_grace_s" in used and "hosts[].fence.agent" in used
    assert sorted(used - set(_documented())) == []


def test_example_mentions_every_key():
    """Each key is in the example, set or commented out, so an operator editing it sees what exists."""
    text = (DOCS / "config.example.yml").read_text()
    missing = [path for path in _model_keys() if not re.search(rf"\b{re.escape(path.rsplit('.', 1)[-1].removesuffix('[]'))}:", text)]
    assert missing == []


def test_reference_lists_every_environment_variable():
    text = (DOCS / "config.md").read_text()
    for field in Environment.model_fields.values():
        if field.json_schema_extra:  # the refused old names are not documented as overrides
            assert f"| `{field.validation_alias}` |" in text
    assert "REMEDIATOR_FENCE_<HOST>_<OPTION>" in text
