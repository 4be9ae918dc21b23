"""The value types the config is made of, and the two kinds of model: a section (all defaults) and a record.

Numbers are strict (YAML `'80'` is not a port, `true` is not a count); a number key refuses negative
values unless it says otherwise. Each type's wording on error is errors._PROBLEMS's, or its validator's.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, StrictBool, StrictFloat,
                      StrictInt, model_validator)

from remediator.config.errors import Required, fail, kind


class Record(BaseModel):
    """A mapping of the file: unknown keys are refused, the result cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Record):
    """A mapping whose every key has a default: absent or empty (`policy:`) means all defaults."""

    @model_validator(mode="before")
    @classmethod
    def _nothing_is_defaults(cls, value: Any) -> Any:
        return {} if value is None else value


def _non_empty_string(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise fail(f"expected a non-empty string, got {kind(value)}")
    return value


def _non_empty_secret(value: Any) -> Any:
    revealed = value.get_secret_value() if isinstance(value, SecretStr) else value  # SecretStr: from the environment
    if not isinstance(revealed, str) or not revealed:
        # named by its kind only: a mistyped secret is still a secret, not for the logs
        raise fail(f"expected a non-empty string, got {'nothing' if revealed in (None, '') else type(revealed).__name__}")
    return value if isinstance(value, SecretStr) else SecretStr(value)


MISSING_STRING = Required("expected a non-empty string, got nothing")
Text = Annotated[str, BeforeValidator(_non_empty_string), MISSING_STRING]
Secret = Annotated[SecretStr, BeforeValidator(_non_empty_secret), MISSING_STRING]

Count = Annotated[StrictInt, Field(ge=0)]
AtLeastOne = Annotated[StrictInt, Field(ge=1)]
Seconds = Annotated[StrictFloat, Field(ge=0.0)]  # a wait that may be zero
Positive = Annotated[StrictFloat, Field(gt=0.0)]  # a timeout or a ratio: zero would mean never or nothing
Flag = StrictBool


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise fail(f"must be 0..65535, got {value}")
    return value


Port = Annotated[StrictInt, AfterValidator(_port), Field(json_schema_extra={"doc_type": "integer 0..65535"})]

