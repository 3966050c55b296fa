"""Typed models of the files users and talesmith write, validated in one place.

Each file shape (a saved story or chat, a character card, a `--config` TOML) is a `Model`; `validate` reads
parsed JSON or TOML into it and turns the first thing wrong into one line that names the file, the field
and the value, e.g. `x.json: messages.2.speaker = 'narrator' must be 'user' or 'character'`.

pydantic (v2) rather than msgspec: its errors carry the field's path (`loc`) and the value given (`input`),
which is all that one such line needs; fields can be strict where a file must say what it means and lenient
where talesmith's own older files wrote numbers as text; and the server's request bodies are pydantic
models already (FastAPI), so one library validates everything. msgspec decodes faster, but these files are
small and read once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import pydantic
from pydantic import ConfigDict

from talesmith.runtime.errors import InputError

VALUE_SHOWN = 120
"""Characters of a value's repr shown in an error at most (the rest is elided)."""


class Model(pydantic.BaseModel):
    """A file shape: frozen, fields read as written (numbers are taken as text where text is wanted)."""

    model_config = ConfigDict(frozen=True, coerce_numbers_to_str=True, extra="ignore")

    MESSAGES: ClassVar[Mapping[str, str]] = {}
    """Lines for fields that need more than the generic reason, by field path (`*` as in file names): formatted
    with `field` (the path), `value` (its repr), the error's own `reason` and `n` (the first list index in the
    path, counted from 1). A check of the model's own (a validator's ValueError) words its whole line. A path ending in `:missing` or
    `:extra` is for a field that is missing or not known (`*:extra` for any unknown field)."""


M = TypeVar("M", bound=Model)

_REASONS = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "too_short": "must not be empty",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[: VALUE_SHOWN - 1] + "…"


def _path(data: Any, loc: Sequence[int | str], value: Any) -> tuple[int | str, ...]:
    """The part of `loc` that names a place in `data` (pydantic adds the member's type to the path of a
    value that matches no member of a union): the longest prefix that leads to `value`."""
    found: tuple[int | str, ...] = ()
    here = data
    for i, part in enumerate(loc):
        try:
            here = here[part]
        except (KeyError, IndexError, TypeError):
            break
        if here is value:
            found = tuple(loc[: i + 1])
    return found or tuple(loc)


def _reason(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    template = _REASONS.get(kind)
    return template.format(**ctx) if template else str(error["msg"]).lower()


def describe(model: type[Model], data: Any, error: pydantic.ValidationError) -> str:
    """The first thing wrong, as one line without the file's name: `field = value reason`."""
    first = error.errors(include_url=False)[0]
    loc, kind = tuple(first["loc"]), first["type"]
    if kind in ("missing", "extra_forbidden"):
        field, value, reason = ".".join(map(str, loc)), "", "is missing"
        suffix = ":missing" if kind == "missing" else ":extra"
    else:
        field, value, reason = (
            ".".join(map(str, _path(data, loc, first["input"]))),
            _shown(first["input"]),
            _reason(first),
        )
        suffix = ""
    if kind == "value_error":  # a check of the model's own, which words the whole line
        return reason
    n = next((p + 1 for p in loc if isinstance(p, int)), 0)
    for pattern, line in model.MESSAGES.items():
        name, _, only = pattern.partition(":")
        if (":" + only if only else "") == suffix and fnmatch.fnmatchcase(field, name):
            return line.format(field=field, value=value, reason=reason, n=n)
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind == "missing" or not field:
        return f"{field} {reason}" if field else f"{value} {reason}"
    return f"{field} = {value} {reason}"


def validate(
    model: type[M],
    data: Any,
    where: str,
    *,
    error: type[Exception] = InputError,
    line: Callable[[str], str] | None = None,
) -> M:
    """`data` (parsed JSON or TOML) read as `model`; else `error` with one line naming `where`, the field and
    the value (`line` words it from the field's part when the file's own wording differs)."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        what = describe(model, data, e)
        raise error(line(what) if line else f"{where}: {what}") from None
