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
from talesmith.runtime.files import jsonl_numbered, read_text

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
    notes: tuple[str, ...] = ()
    """Records left out, each named by its line (a story that is not text)."""


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


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The records of a .csv or .jsonl file, its columns (in the order they first appear) and where each
    record is ("line 3" of a .jsonl, "row 2" of a .csv: its second record)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise InputError(f"{path}: unknown file type {suffix or '(none)'}; use a .csv or .jsonl file")
    raw = read_text(
        path,
        str,
        encoding="utf-8-sig",
        missing=f"story set {path} does not exist; pass a batch output or a training CSV",
        unreadable=lambda e: f"story set {path} cannot be read ({e}); it must be UTF-8 text",
    )
    if suffix == ".csv":
        records = _csv(path, raw)
        places = [f"row {i}" for i in range(1, len(records) + 1)]
    else:
        numbered = jsonl_numbered(raw, str(path))
        records, places = [r for _, r in numbered], [f"line {n}" for n, _ in numbered]
    columns = list(dict.fromkeys(k for r in records for k in r))
    return records, columns, places


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


def _genre(value: Any) -> str:
    """A genre cell as text: a list of genres (["horror", "gothic"]) is its items joined by ", ", a
    number its digits, nothing ""."""
    if isinstance(value, list):
        return ", ".join(_genre(v) for v in value if _genre(v))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_genre(v)}" for k, v in value.items())
    if isinstance(value, bool):
        return str(value).lower()
    return _cell(value).strip()


def _not_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return "an object" if isinstance(value, dict) else "a list"


def _stories(
    path: Path, records: list[dict[str, Any]], places: list[str], column: str
) -> tuple[list[int], list[str], list[str]]:
    """The records whose story is text (their indexes and texts), and a note for each left out."""
    kept, texts, notes = [], [], []
    for i, (record, place) in enumerate(zip(records, places, strict=True)):
        value = record.get(column)
        if isinstance(value, str):
            kept.append(i)
            texts.append(value)
        else:
            notes.append(f"{path} {place}: {column!r} is {_not_text(value)}, not a story; left out")
    return kept, texts, notes


def read_story_set(
    name: str, path: Path, *, text_column: str | None = None, genre_column: str | None = None
) -> StorySet:
    """A story set from a batch output or training file; the columns default to TEXT_COLUMNS and GENRE_COLUMNS."""
    records, columns, places = read_records(path)
    if not records:
        raise InputError(f"{path} has no stories")
    text = _column(path, columns, text_column, TEXT_COLUMNS, "--text-column")
    if text is None:
        raise InputError(
            f"{path} has no 'text' or 'response' column (columns: {', '.join(columns)}); "
            f"name the story column with --text-column"
        )
    kept, texts, notes = _stories(path, records, places, text)
    if not texts:
        raise InputError(f"{path} has no stories: no record's {text!r} is text ({notes[0]})")
    records = [records[i] for i in kept]
    genre = _column(path, columns, genre_column, GENRE_COLUMNS, "--genre-column")
    if genre is not None:
        genres = tuple(_genre(r.get(genre)) for r in records)
    elif "prompt" in columns:
        genres = tuple(genre_from_prompt(_cell(r.get("prompt"))) for r in records)
    else:
        genres = ("",) * len(records)
    if ALL in genres:
        raise InputError(
            f"{path} has a genre named {ALL!r}, which is the name of all stories together; rename that genre"
        )
    return StorySet(name, tuple(texts), genres, tuple(notes))


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
