"""Story sets from files: batch outputs (CSV/JSONL with a text and a genre column) and training CSVs
(`prompt`, `response`, `label`)."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.analysis.counting import ALL
from talesmith.runtime.batch_output import allow_big_csv_fields
from talesmith.runtime.errors import InputError
from talesmith.runtime.files import jsonl_objects

TEXT_COLUMNS = ("text", "response")
"""Where a story is, when no column is named: a batch output's `text`, a training CSV's `response`."""
GENRE_COLUMNS = ("genre", "label")
"""Where its genre is, when no column is named; without either, it is read from a genre prompt."""
_INSTRUCTION = re.compile(r"write me an? ([^\n<#]+?)\s*(?:\n|<|#|$)", re.IGNORECASE)


@dataclass(frozen=True)
class StorySet:
    name: str
    texts: tuple[str, ...]
    genres: tuple[str, ...]
    """One per story; "" where a story has none."""


def parse_spec(spec: str) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH` (named after the file's stem) into (name, path)."""
    name, sep, rest = spec.partition("=")
    if sep and name and rest and os.sep not in name and "/" not in name:
        return name, Path(rest)
    return Path(spec).stem, Path(spec)


def genre_from_prompt(prompt: str) -> str:
    """The genre a genre-format prompt asks for ("<human> write me a horror story" -> "horror"), or ""."""
    match = _INSTRUCTION.search(prompt)
    if not match:
        return ""
    genre = match.group(1).strip().lower()
    return genre[: -len(" story")] if genre.endswith(" story") else genre


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a .csv or .jsonl file and its columns (in the order they first appear)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"{path}: unknown file type {suffix or '(none)'}; use a .csv or .jsonl file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"story set {path} does not exist; pass a batch output or a training CSV") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"story set {path} cannot be read ({e}); it must be UTF-8 text") from None
    records = _csv(path, raw) if suffix == ".csv" else jsonl_objects(raw, str(path))
    columns = list(dict.fromkeys(k for r in records for k in r))
    return records, columns


def _csv(path: Path, raw: str) -> list[dict[str, Any]]:
    allow_big_csv_fields()
    try:
        return list(csv.DictReader(io.StringIO(raw, newline="")))
    except csv.Error as e:
        raise InputError(f"{path} is not a readable CSV file ({e})") from None


def _column(path: Path, columns: Sequence[str], given: str | None, defaults: Sequence[str], option: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise InputError(f"{path} has no column {given!r} (columns: {', '.join(columns)}); check {option}")
        return given
    return next((c for c in defaults if c in columns), None)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def read_story_set(
    name: str, path: Path, *, text_column: str | None = None, genre_column: str | None = None
) -> StorySet:
    """A story set from a batch output or training file; the columns default to TEXT_COLUMNS and GENRE_COLUMNS."""
    records, columns = read_records(path)
    if not records:
        raise InputError(f"{path} has no stories")
    text = _column(path, columns, text_column, TEXT_COLUMNS, "--text-column")
    if text is None:
        raise InputError(
            f"{path} has no 'text' or 'response' column (columns: {', '.join(columns)}); "
            f"name the story column with --text-column"
        )
    genre = _column(path, columns, genre_column, GENRE_COLUMNS, "--genre-column")
    if genre is not None:
        genres = tuple(_cell(r.get(genre)).strip() for r in records)
    elif "prompt" in columns:
        genres = tuple(genre_from_prompt(_cell(r.get("prompt"))) for r in records)
    else:
        genres = ("",) * len(records)
    if ALL in genres:
        raise InputError(
            f"{path} has a genre named {ALL!r}, which is the name of all stories together; rename that genre"
        )
    return StorySet(name, tuple(_cell(r.get(text)) for r in records), genres)


def read_story_sets(
    specs: Sequence[str], *, text_column: str | None = None, genre_column: str | None = None
) -> list[StorySet]:
    """The story sets of `[NAME=]PATH` arguments, names unique."""
    if not specs:
        raise InputError("no story sets given; pass one or more [NAME=]PATH")
    named = [parse_spec(s) for s in specs]
    names = [n for n, _ in named]
    for n in names:
        if names.count(n) > 1:
            raise InputError(f"two story sets are named {n!r}; name each one: NAME=PATH")
    return [read_story_set(n, p, text_column=text_column, genre_column=genre_column) for n, p in named]
