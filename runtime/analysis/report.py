"""The result of analyzing story sets, and its JSON form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from talesmith.runtime.analysis.counting import ALL


@dataclass(frozen=True)
class SetReport:
    """One story set: its sentiment by genre (ALL last), top opinion words and LDA topics."""

    name: str
    stories: int
    sentiment: dict[str, dict[str, int]]
    top_positive: list[tuple[str, int]]
    top_negative: list[tuple[str, int]]
    topics: list[list[str]]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stories": self.stories,
            "sentiment": self.sentiment,
            "top_positive": [[w, c] for w, c in self.top_positive],
            "top_negative": [[w, c] for w, c in self.top_negative],
            "topics": [list(t) for t in self.topics],
        }


def to_json(reports: Sequence[SetReport]) -> dict[str, Any]:
    """The `talesmith analyze --json` object: {"sets": [...]}, in the order the sets were given."""
    return {"sets": [r.to_json() for r in reports]}


def genres(reports: Sequence[SetReport]) -> list[str]:
    """Every genre of every set, in the order they first appear, then ALL."""
    seen: dict[str, None] = {}
    for report in reports:
        seen.update({g: None for g in report.sentiment if g != ALL})
    return [*seen, ALL]
