"""Incremental text from token bytes: UTF-8 safe, stop strings, banned phrases.

Pure logic, no model: the generation loop feeds it the bytes of each sampled token and acts on
what comes back.

* A multi-byte character split across tokens is emitted whole once complete, never as U+FFFD.
* Text that could still become a stop string or a banned phrase is held back until it is decided.
* A banned phrase that appears asks the loop to rewind to the token where it began and to ban
  that token there; because everything from that token on was held back, nothing already
  emitted ever has to be taken back.
"""

from __future__ import annotations

import bisect
import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Emit:
    text: str
    """New text, safe to show."""


@dataclass(frozen=True)
class Stopped:
    text: str
    """The last text before the stop string; generation is over."""


@dataclass(frozen=True)
class Rewind:
    token_index: int
    """Generated tokens from this index on must be discarded, and this one banned at its position."""


Event = Emit | Stopped | Rewind


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Phrase:
    """A banned phrase: matched case-insensitively, on word boundaries where it starts or ends with a letter."""

    def __init__(self, phrase: str):
        self.text = phrase
        self.folded = phrase.lower()
        self.left_word = _is_word(phrase[0])
        self.right_word = _is_word(phrase[-1])
        pattern = re.escape(phrase)
        if self.left_word:
            pattern = r"(?<!\w)" + pattern
        if self.right_word:
            pattern += r"(?!\w)"
        self.regex = re.compile(pattern, re.IGNORECASE)

    def first_match(self, text: str, start: int, final: bool) -> tuple[int | None, int | None]:
        """(start of a complete match, start of a match that is not yet decided)."""
        pending = None
        for m in self.regex.finditer(text, start):
            if m.end() == len(text) and self.right_word and not final:
                pending = m.start()  # the next character decides whether a word ends here
                break
            return m.start(), None
        if final:
            return None, None
        # A suffix of the text that could grow into this phrase.
        for k in range(min(len(self.text) - 1, len(text) - start), 0, -1):
            pos = len(text) - k
            if text[pos:].lower() == self.folded[:k] and not (self.left_word and pos > 0 and _is_word(text[pos - 1])):
                pending = pos if pending is None else min(pending, pos)
                break
        return None, pending


class TextStream:
    """Turns the bytes of generated tokens into safe text, one token at a time."""

    def __init__(self, *, stops: Sequence[str] = (), banned: Sequence[str] = ()):
        self._stops = tuple(s for s in stops if s)
        self._phrases = tuple(_Phrase(p) for p in banned if p)
        self._reset()
        self.emitted = 0
        """How many characters of `text` have been handed out."""

    def _reset(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[bytes] = []
        self._chars: list[str] = []
        self._char_token: list[int] = []  # for each character, the token holding its first byte
        self._pending_since = 0

    @property
    def text(self) -> str:
        return "".join(self._chars)

    @property
    def n_tokens(self) -> int:
        return len(self._pieces)

    def _decode(self, piece: bytes) -> None:
        index = len(self._pieces)
        self._pieces.append(piece)
        had_pending = bool(self._decoder.getstate()[0])
        out = self._decoder.decode(piece)
        if out:
            self._char_token.append(self._pending_since if had_pending else index)
            self._char_token.extend([index] * (len(out) - 1))
            self._chars.extend(out)
        if self._decoder.getstate()[0] and (out or not had_pending):
            self._pending_since = index

    def push(self, piece: bytes) -> Event:
        """Add the bytes of the next generated token."""
        self._decode(piece)
        return self._check(final=False)

    def finish(self) -> Event:
        """Generation ended (end of text or token limit): settle what was held back.

        Bytes of an incomplete character at the very end are dropped, never shown as U+FFFD.
        """
        return self._check(final=True)

    def rewind(self, token_index: int) -> None:
        """Forget the tokens from `token_index` on (their text was never emitted)."""
        pieces = self._pieces[:token_index]
        self._reset()
        for piece in pieces:
            self._decode(piece)
        if self.emitted > len(self._chars) and self._decoder.getstate()[0]:
            # Invalid bytes at the end were already shown as U+FFFD (the token after them decided that): they
            # stay as shown, whatever token comes next in their place.
            out = self._decoder.decode(b"", final=True)
            self._char_token.extend([self._pending_since] * len(out))
            self._chars.extend(out)
        assert self.emitted <= len(self._chars), "rewound into emitted text"

    def _token_start(self, char_index: int) -> int:
        """The first character that belongs to the token holding character `char_index`."""
        return bisect.bisect_left(self._char_token, self._char_token[char_index])

    def _check(self, final: bool) -> Event:
        text = self.text
        hold = len(text)

        ban_at: int | None = None
        ban_pending: int | None = None
        for phrase in self._phrases:
            start, pending = phrase.first_match(text, self.emitted, final)
            if start is not None and (ban_at is None or start < ban_at):
                ban_at = start
            if pending is not None:
                ban_pending = pending if ban_pending is None else min(ban_pending, pending)

        stop_at = None
        for stop in self._stops:
            i = text.find(stop, self.emitted)
            if i >= 0 and (stop_at is None or i < stop_at):
                stop_at = i
            elif i < 0 and not final:
                for k in range(min(len(stop) - 1, len(text) - self.emitted), 0, -1):
                    if text.endswith(stop[:k]):
                        hold = min(hold, len(text) - k)
                        break

        if ban_at is not None and (stop_at is None or ban_at < stop_at):
            return Rewind(self._char_token[ban_at])
        if stop_at is not None:
            return Stopped(self._take(stop_at))
        if ban_pending is not None:
            hold = min(hold, self._token_start(ban_pending))
        return Emit(self._take(hold))

    def _take(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = "".join(self._chars[self.emitted : upto])
        self.emitted = upto
        return out

    def confirmed_tokens(self) -> int:
        """How many tokens have had all their text emitted."""
        if self.emitted >= len(self._chars):
            # Everything decoded is out; a token still holding incomplete bytes is not confirmed.
            return self._pending_since if self._decoder.getstate()[0] else len(self._pieces)
        return self._char_token[self.emitted]
