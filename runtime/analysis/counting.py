"""Counting over a story set: sentiment by genre, opinion words, overlaps. Pure functions."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from talesmith.runtime.analysis.text import is_word

ALL = "all"
"""The key of every story of a set together, after the genres."""
POSITIVE, NEGATIVE = "positive", "negative"


def label_of(compound: float) -> str:
    """A story's label from a compound score in [-1, 1]: negative below 0, positive otherwise (no neutral)."""
    return NEGATIVE if compound < 0 else POSITIVE


def sentiment_by_genre(genres: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{genre: {"positive": n, "negative": n}} in the order genres first appear, then ALL for every story.

    A story whose genre is "" counts only in ALL.
    """
    if len(genres) != len(labels):
        raise ValueError(f"{len(genres)} genres for {len(labels)} labels")
    unknown = set(labels) - {POSITIVE, NEGATIVE}
    if unknown:
        raise ValueError(f"label {sorted(unknown)[0]!r} is neither {POSITIVE!r} nor {NEGATIVE!r}")
    if ALL in genres:
        raise ValueError(f"a genre is named {ALL!r}, the key of all stories together")
    counts: dict[str, dict[str, int]] = {}
    for genre, label in zip(genres, labels, strict=False):
        if genre:
            counts.setdefault(genre, {POSITIVE: 0, NEGATIVE: 0})[label] += 1
    counts[ALL] = {POSITIVE: labels.count(POSITIVE), NEGATIVE: labels.count(NEGATIVE)}
    return counts


def opinion_stems(lexicon: Mapping[str, float], stem: Callable[[str], str]) -> tuple[frozenset[str], frozenset[str]]:
    """The stems of a lexicon's positive and negative words.

    Only plain words count (emoticons and phrases are left out). Words that share a stem vote with
    their valences: the stem is positive when they add up above 0, negative below, neither at 0.
    """
    total: dict[str, float] = defaultdict(float)
    for word, valence in lexicon.items():
        if is_word(word):
            total[stem(word)] += valence
    return (frozenset(s for s, v in total.items() if v > 0), frozenset(s for s, v in total.items() if v < 0))


def top_words(documents: Iterable[Sequence[str]], vocabulary: frozenset[str], *, n: int = 30) -> list[tuple[str, int]]:
    """The `n` tokens of `vocabulary` most frequent over all documents, with their counts; ties alphabetical."""
    counts = Counter(t for doc in documents for t in doc if t in vocabulary)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def overlap(words: Sequence[tuple[str, int]], reference: Sequence[tuple[str, int]]) -> int:
    """How many of the words in `words` are also in `reference` (counts ignored)."""
    return len({w for w, _ in words} & {w for w, _ in reference})
