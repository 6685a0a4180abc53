"""Base class for models that are also CRD schemas, with CEL rules checked in both places.

A `CelRule` pairs the CEL expression the API server evaluates (`x-kubernetes-validations`)
with a Python predicate that says the same thing, so the operator rejects exactly what the
API server rejects, and the CRD generated from these models carries the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry and its Python twin."""

    rule: str
    message: str
    check: Callable[[Any], bool]


def _add_cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = cls.__dict__.get("__cel_rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": r.rule, "message": r.message} for r in rules]


class CrdModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected, immutable.

    Only the camelCase aliases are accepted as input: the API server knows no other name,
    so accepting snake_case here would let through objects the CRD rejects.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        use_attribute_docstrings=True,
        frozen=True,
        json_schema_extra=_add_cel_rules,
    )

    __cel_rules__: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).__dict__.get("__cel_rules__", ()):
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def from_fields(cls, **fields: Any) -> Self:
        """Build (and validate) from the Python field names: for what the operator writes
        itself. Input from the API server goes through `model_validate` (camelCase only)."""
        return cls.model_validate(fields, by_name=True, by_alias=False)

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
