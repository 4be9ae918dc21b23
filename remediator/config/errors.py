"""Config errors as an operator reads them: `config error in FILE: KEY.PATH: problem`.

pydantic finds the mistakes; this module says them in the remediator's words. A validator of ours
raises `fail(problem, key=...)` (its own wording, optionally a sub-key below the value it checked);
pydantic's own errors (a wrong type, a number out of range, an unknown key, a missing key) are
worded by the table `_PROBLEMS`, from the error's type.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


class ConfigError(ValueError):
    """The configuration is not usable; the message names the file and the key path."""

    def __init__(self, source: str, key: str, problem: str):
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"config error in {source}: {key}: {problem}" if key else f"config error in {source}: {problem}")


class Required:
    """Annotated metadata: what to say when the key is missing (or given as nothing)."""

    def __init__(self, message: str):
        self.message = message


def fail(problem: str, key: str = "") -> PydanticCustomError:
    """An error raised from a validator; `key` is the path below the validated value (`name`, `[1].name`)."""
    return PydanticCustomError("config", "{problem}", {"problem": problem, "key": key})


def kind(value: Any) -> str:
    """A value as a message names it: `a mapping`, `the string '80'`, `nothing`."""
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}".lower()}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def key_path(loc: Sequence[str | int], below: str = "") -> str:
    """('hosts', 2, 'fence', 'agent') -> hosts[2].fence.agent"""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if below:
        path += below if below.startswith("[") or not path else f".{below}"
    return path


# pydantic error type -> the problem, worded from the error (a dict with its input and ctx).
_PROBLEMS: dict[str, Callable[[dict[str, Any]], str]] = {
    "int_type": lambda e: f"expected an integer, got {kind(e['input'])}",
    "int_from_float": lambda e: f"expected an integer, got {kind(e['input'])}",
    "float_type": lambda e: f"expected a number, got {kind(e['input'])}",
    "bool_type": lambda e: f"expected true or false, got {kind(e['input'])}",
    "string_type": lambda e: f"expected a non-empty string, got {kind(e['input'])}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}, got {e['input']}",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}, got {e['input']}",
    "model_type": lambda e: f"expected a mapping, got {kind(e['input'])}",
    "model_attributes_type": lambda e: f"expected a mapping, got {kind(e['input'])}",
    "dict_type": lambda e: f"expected a mapping, got {kind(e['input'])}",
    "tuple_type": lambda e: f"expected a list, got {kind(e['input'])}",
    "list_type": lambda e: f"expected a list, got {kind(e['input'])}",
}


def translate(error: ValidationError, source: str, root: type[BaseModel]) -> ConfigError:
    """The first of pydantic's errors, as a ConfigError naming `source` and the key path.

    An unknown key comes first: it is often a misspelt one, whose absence is the other errors' cause."""
    errors = error.errors(include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    ctx = first.get("ctx") or {}
    if first["type"] == "config":
        return ConfigError(source, key_path(loc, ctx.get("key", "")), ctx["problem"])
    field = field_at(root, loc)
    required = next((m for m in reversed(field.metadata if field else []) if isinstance(m, Required)), None)  # the outermost
    if first["type"] == "missing" or (first.get("input", ...) is None and required is not None):
        return ConfigError(source, key_path(loc), required.message if required else "required")
    if first["type"] == "invalid_key":  # the key is the error's last step: name the mapping it is in
        return ConfigError(source, key_path(loc[:-1]) or "(top level)", f"keys must be strings, got {first['input']!r}")
    if first["type"] == "extra_forbidden":
        model = model_at(root, loc[:-1])
        allowed = ", ".join(_file_key(n, f) for n, f in model.model_fields.items()) if model else ""
        return ConfigError(source, key_path(loc), f"unknown key (expected one of: {allowed})")
    problem = _PROBLEMS.get(first["type"])
    return ConfigError(source, key_path(loc), problem(first) if problem else first["msg"])


def relocated(error: ValidationError, model: type[BaseModel]) -> PydanticCustomError:
    """A nested model's error, validated apart, raised again below the key being validated."""
    found = translate(error, "", model)
    return fail(found.problem, key=found.key)


def _inner(annotation: Any) -> Any:
    """The model (or item type) inside Optional[...], tuple[X, ...], dict[str, X], Annotated[X, ...]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _inner(args[0]) if len(args) == 1 else annotation
    return annotation


def _step(current: Any, part: str | int) -> tuple[Any, FieldInfo | None]:
    current = _inner(current)
    if isinstance(part, int):
        args = typing.get_args(current)
        return (args[0] if args else None), None
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = next((f for n, f in current.model_fields.items() if _file_key(n, f) == part), None)
        if field is not None:
            return field.annotation, field
    return None, None


def _file_key(name: str, field: FieldInfo) -> str:
    """The key the file uses for a field: its alias (HostConfig.power is `fence`) or its name."""
    return field.validation_alias if isinstance(field.validation_alias, str) else name


def field_at(root: type[BaseModel], loc: Sequence[str | int]) -> FieldInfo | None:
    """The field a key path names, walking the models (None for list items and free-form keys)."""
    current: Any = root
    field = None
    for part in loc:
        current, field = _step(current, part)
        if current is None:
            return None
    return field


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    current: Any = root
    for part in loc:
        current, _ = _step(current, part)
    current = _inner(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None
