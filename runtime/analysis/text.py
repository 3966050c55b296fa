"""Normalization: words of a story, lowercased, stopwords out, stemmed. Pure; the stemmer is passed in."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
"""A run of letters, with apostrophes inside it (don't, o'clock)."""
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def words(text: str) -> list[str]:
    """The lowercase words of `text`: possessive 's dropped, other apostrophes removed (don't -> dont)."""
    found = WORD.findall(text.lower().translate(_APOSTROPHES))
    return [w[:-2].replace("'", "") if w.endswith("'s") else w.replace("'", "") for w in found]


def is_word(entry: str) -> bool:
    """Whether a lexicon entry is one plain word (not an emoticon or a phrase)."""
    return words(entry) == [entry]


def last_words(text: str, count: int = 512) -> str:
    """The last `count` whitespace-separated words of `text`, joined by single spaces."""
    if count < 1:
        raise ValueError(f"count {count}: at least 1 word")
    return " ".join(text.split()[-count:])


class Normalizer:
    """Words to tokens: shorter than `min_length` or a stopword is dropped, the rest stemmed (each word once)."""

    def __init__(self, stem: Callable[[str], str], *, stopwords: Collection[str] = (), min_length: int = 2):
        self.stem: Callable[[str], str] = functools.cache(stem)
        """The stemmer, called once per distinct word."""
        self.stopwords = frozenset(stopwords)
        self.min_length = min_length

    def keeps(self, word: str) -> bool:
        return len(word) >= self.min_length and word not in self.stopwords

    def tokens(self, text: str) -> list[str]:
        """The normalized tokens of a story, in order."""
        return [self.stem(w) for w in words(text) if self.keeps(w)]
