"""Lorebooks (World Info): entries of lore that enter the prompt when their keys appear in the recent text.

Pure logic, following SillyTavern's World Info scan: keys (plain, or `/regex/flags`), secondary keys with
AND ANY / NOT ALL / NOT ANY / AND ALL, case sensitivity and whole words (per entry or from the settings),
constant and disabled entries, insertion order, scan depth, a token budget, recursion with a step limit,
seeded probability and the timed effects sticky, cooldown and delay. `activate` picks the entries; `apply`
places them in a PromptPlan.

Placement is SillyTavern's by default ("declared"): every entry stands where its position says (before the
character, at a depth, ...), as the card's author meant. An entry that went quiet is held where it stands
while the budget left by the active ones holds it (`hold`), so the set of placed entries, and with it the
start of the prompt, changes only when a new entry fires. "anchored" is the cache-friendly choice: an entry
that fires stands in the history at the point where it fired, so a new entry costs only its own tokens.
Holding, timed effects and anchoring replay the history; recent replays are remembered (a memo, same
result) so that a chat's next turn replays only its new messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from talesmith.runtime.documents.cards import fill_macros
from talesmith.runtime.documents.formats import Chat
from talesmith.runtime.documents.prompts import PromptPlan, split_units
from talesmith.runtime.errors import SettingsError

BEFORE = "before"
"""Before the story header (after the memory) or before the character definition."""
AFTER = "after"
"""After the story header (`***`) or after the character definition (before the example dialogue)."""
NOTE_TOP = "note_top"
NOTE_BOTTOM = "note_bottom"
"""Just before / after the author's note (at its depth)."""
DEPTH = "depth"
"""In the history, before the `depth`-th unit (message or line) from the end; 0 is after the last one."""
POSITIONS = (BEFORE, AFTER, NOTE_TOP, NOTE_BOTTOM, DEPTH)

AND_ANY, NOT_ALL, NOT_ANY, AND_ALL = "and_any", "not_all", "not_any", "and_all"
LOGICS = (AND_ANY, NOT_ALL, NOT_ANY, AND_ALL)
"""SillyTavern's selectiveLogic 0, 1, 2, 3, in that order."""

ANCHORED, DECLARED = "anchored", "declared"
REGEX_TIMEOUT = 0.05
"""Seconds a regex key may take on the scanned text before it counts as not matching."""
SCAN_BUDGET = 2.0
"""Seconds of regex searching one prompt may spend on all its lorebooks' keys, replays included; the regex
keys left when it is spent are not searched, and their entries are named in `Activation.skipped`."""
MAX_REGEX_REPEAT = 100_000
"""The most items a regex key may expand to through counted repeats (`a{1000}` is 1,000): beyond it, compiling
alone can take gigabytes (`(?:(?:a{1000}){1000}){100}`), so such a key is never compiled."""
REPLAY_LIMIT = 2048
"""Units of the history replayed at most to find where anchored entries stand (see `replay`)."""
DEFAULT_DEPTH = 4
MARK = "\x01"
"""Starts each scanned message, as in SillyTavern, so `^` and whole words see message starts."""

_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "u": 0, "g": 0, "y": 0}
_REGEX_KEY = regex.compile(r"^/([\w\W]+?)/([gimsuy]*)$")


@dataclass(frozen=True)
class Entry:
    keys: tuple[str, ...]
    content: str
    uid: int = 0
    secondary: tuple[str, ...] = ()
    logic: str = AND_ANY
    selective: bool = True
    """With secondary keys, the logic applies; without `selective` they are ignored (as in SillyTavern)."""
    constant: bool = False
    enabled: bool = True
    order: int = 100
    """Higher order: placed later (nearer the end) and kept first when the budget runs out."""
    position: str = BEFORE
    depth: int = DEFAULT_DEPTH
    scan_depth: int | None = None
    case_sensitive: bool | None = None
    whole_words: bool | None = None
    probability: int = 100
    use_probability: bool = True
    exclude_recursion: bool = False
    """Not activated by other entries' content, only by the text."""
    prevent_recursion: bool = False
    """Its content does not activate other entries."""
    delay_until_recursion: bool = False
    """Activated only by other entries' content."""
    sticky: int = 0
    """Once activated, stays active for this many more units of history (messages, story lines)."""
    cooldown: int = 0
    """Once activated (or when its sticky time ends), cannot activate for this many units."""
    delay: int = 0
    """Cannot activate before the history has this many units."""
    name: str = ""
    book: str = ""
    """The lorebook it came from (set by Lorebook); with `uid` it names the entry."""

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise SettingsError(
                f"lorebook entry {self.uid}: position {self.position!r} is unknown; use one of {', '.join(POSITIONS)}"
            )
        if self.logic not in LOGICS:
            raise SettingsError(
                f"lorebook entry {self.uid}: logic {self.logic!r} is unknown; use one of {', '.join(LOGICS)}"
            )
        if self.depth < 0:
            raise SettingsError(f"lorebook entry {self.uid}: depth {self.depth} is negative; use 0 or more")
        if not 0 <= self.probability <= 100:
            raise SettingsError(f"lorebook entry {self.uid}: probability {self.probability} is outside 0..100")
        for what in ("sticky", "cooldown", "delay"):
            if getattr(self, what) < 0:
                raise SettingsError(
                    f"lorebook entry {self.uid}: {what} {getattr(self, what)} is negative; use 0 or more"
                )

    @property
    def timed(self) -> bool:
        """Whether its activation depends on earlier activations (sticky or cooldown)."""
        return bool(self.sticky or self.cooldown)

    @property
    def ident(self) -> str:
        return f"{self.book}.{self.uid}"

    @property
    def title(self) -> str:
        return self.name or (self.keys[0] if self.keys else f"entry {self.uid}")


@dataclass(frozen=True)
class Lorebook:
    name: str
    entries: tuple[Entry, ...] = ()
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The file as read, so that export writes back what talesmith does not use."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "entries",
            tuple(e if e.book == self.name else dataclasses.replace(e, book=self.name) for e in self.entries),
        )


@dataclass(frozen=True)
class LoreSettings:
    """SillyTavern's World Info activation settings, with its defaults."""

    scan_depth: int = 2
    """Units (messages, or lines of a story) searched for keys, counted from the end."""
    budget_percent: float = 25.0
    """Token budget as a percentage of the context..."""
    budget_tokens: int | None = None
    """...or as a number of tokens (wins when set)."""
    recursive: bool = True
    max_recursion_steps: int = 0
    """Scan passes at most: 0 no limit, 1 no recursion, 2 one level of entries activated by entries, ..."""
    case_sensitive: bool = False
    whole_words: bool = False
    seed: int = 0
    placement: str = DECLARED
    """DECLARED: SillyTavern's positions; ANCHORED: where each entry fired (cache-friendly)."""
    hold: bool = True
    """Keep an entry that went quiet where it stands while the budget holds it, so that the placed set (and
    the prompt before the history) changes only when a new entry fires; False: exactly SillyTavern's set."""

    def __post_init__(self) -> None:
        if self.scan_depth < 0:
            raise SettingsError(f"scan depth {self.scan_depth} is negative; use 0 or more units")
        if self.placement not in (ANCHORED, DECLARED):
            raise SettingsError(f"placement {self.placement!r} is unknown; use {ANCHORED} or {DECLARED}")
        if self.max_recursion_steps < 0:
            raise SettingsError(f"max recursion steps {self.max_recursion_steps} is negative; use 0 (no limit) or more")

    def budget(self, n_ctx: int) -> int:
        if self.budget_tokens is not None:
            return self.budget_tokens
        return round(self.budget_percent * n_ctx / 100)


@dataclass(frozen=True)
class Activated:
    entry: Entry
    tokens: int


@dataclass(frozen=True)
class Activation:
    entries: tuple[Activated, ...]
    """In activation order (highest order first, constant ones before keyword ones of the same order)."""
    overflowed: bool = False
    """The budget ran out and some entries were left out."""
    lingering: tuple[Activated, ...] = ()
    """Entries that went quiet but stay where they stand in the history (anchored placement)."""
    skipped: tuple[tuple[str, str], ...] = ()
    """(title, why) of the entries whose keys were not searched to their end (a regex key too slow, too large,
    or past the prompt's `SCAN_BUDGET`): they stayed out of this prompt."""


# --- matching ---------------------------------------------------------------------------------


_COUNTED = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


def repeat_size(pattern: str) -> int:
    """How many items `pattern` expands to through its counted repeats (`{n}`, `{m,n}`, nested groups
    multiplying), an upper bound that needs no compiling. `*`, `+` and `?` add nothing."""
    stack = [[0, 0]]  # per open group: [items so far, items of the last atom]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            stack[-1][0] += 1
            stack[-1][1] = 1
            i += 2
            continue
        if c == "[":  # a character class is one item
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j = pattern.find("]", j + 1)
            i = len(pattern) if j < 0 else j + 1
            stack[-1][0] += 1
            stack[-1][1] = 1
            continue
        if c == "(":
            stack.append([0, 0])
            if pattern[i + 1 : i + 2] == "?":  # (?:, (?=, (?P<name>, (?i): the group's kind is no item
                j = i + 2
                while j < len(pattern) and pattern[j] not in ":=!>)":
                    j += 1
                i = j if j < len(pattern) and pattern[j] == ")" else j + 1
                continue
        elif c == ")" and len(stack) > 1:
            inner = stack.pop()[0]
            stack[-1][0] += inner
            stack[-1][1] = inner
        elif c == "{" and (m := _COUNTED.match(pattern, i)) and (m.group(1) or m.group(2)):
            low, high = m.group(1), m.group(2)
            times = int(high) if high else int(low or 0)
            last = stack[-1][1]
            stack[-1][0] += last * (max(times, 1) - 1)
            stack[-1][1] = last * max(times, 1)
            i = m.end()
            if stack[-1][0] > MAX_REGEX_REPEAT:
                return stack[-1][0]
            continue
        elif c not in "*+?|":
            stack[-1][0] += 1
            stack[-1][1] = 1
        i += 1
    return sum(frame[0] for frame in stack)


NEVER = regex.compile(r"(?!)")
"""What a regex key too large to compile stands for: it never matches, and its entry is named as skipped."""


@functools.lru_cache(maxsize=8192)
def parse_regex_key(key: str) -> regex.Pattern[str] | None:
    """A `/pattern/flags` key as a compiled pattern; None for a plain key (or one that does not compile);
    `NEVER` for one whose counted repeats expand past `MAX_REGEX_REPEAT`."""
    m = _REGEX_KEY.match(key)
    if not m or regex.search(r"(^|[^\\])/", m.group(1)):
        return None
    flags = 0
    for f in m.group(2):
        flags |= _FLAGS[f]
    source = m.group(1).replace("\\/", "/")
    if repeat_size(source) > MAX_REGEX_REPEAT:
        return NEVER
    try:
        return regex.compile(source, flags)
    except (regex.error, ValueError, OverflowError, MemoryError, RecursionError):
        return None


class _Skipped(Exception):
    """A key that was not searched to its end: the reason is said to the user with the entry's title."""


class _ScanClock(threading.local):
    """The regex search time left to the prompt being scanned on this thread, and the entries it skipped
    (title -> why); both None outside a scan."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.skipped: dict[str, str] | None = None


_CLOCK = _ScanClock()


@contextlib.contextmanager
def bounded_scan() -> Iterator[dict[str, str]]:
    """One prompt's scan: regex keys share `SCAN_BUDGET` seconds, and the entries skipped are collected (a
    scan inside a scan shares the outer one's)."""
    if _CLOCK.skipped is not None:
        yield _CLOCK.skipped
        return
    _CLOCK.deadline, _CLOCK.skipped = time.monotonic() + SCAN_BUDGET, {}
    try:
        yield _CLOCK.skipped
    finally:
        _CLOCK.deadline = _CLOCK.skipped = None


def _search(pattern: regex.Pattern[str], text: str) -> bool:
    timeout = REGEX_TIMEOUT
    if _CLOCK.deadline is not None:
        left = _CLOCK.deadline - time.monotonic()
        if left <= 0:
            raise _Skipped(f"the {SCAN_BUDGET:g} s for all regex keys of this prompt were spent")
        timeout = min(timeout, left)
    try:
        return pattern.search(text, timeout=timeout) is not None
    except TimeoutError:
        raise _Skipped(f"its regex key took more than {REGEX_TIMEOUT * 1000:g} ms") from None


@functools.lru_cache(maxsize=8192)
def _word_pattern(key: str) -> regex.Pattern[str]:
    return regex.compile(r"(?:^|\W)(" + regex.escape(key) + r")(?:$|\W)")


def _hit(text: str, lowered: str, key: str, *, case_sensitive: bool, whole_words: bool) -> bool:
    pattern = parse_regex_key(key)
    if pattern is NEVER:
        raise _Skipped(f"its regex key repeats to more than {MAX_REGEX_REPEAT:,} items, too large to compile")
    if pattern is not None:
        return _search(pattern, text)
    if not case_sensitive:
        text, key = lowered, key.lower()
    if whole_words and len(key.split()) <= 1:
        return _search(_word_pattern(key), text)
    return key in text


def match_key(text: str, key: str, *, case_sensitive: bool, whole_words: bool) -> bool:
    """Whether `key` occurs in `text`, with SillyTavern's rules for regex keys, case and whole words (a key
    too slow or too large counts as not found)."""
    try:
        return _hit(text, text.lower(), key, case_sensitive=case_sensitive, whole_words=whole_words)
    except _Skipped:
        return False


def _matches(entry: Entry, text: str, lowered: str, settings: LoreSettings) -> bool:
    case = settings.case_sensitive if entry.case_sensitive is None else entry.case_sensitive
    whole = settings.whole_words if entry.whole_words is None else entry.whole_words

    def hit(key: str) -> bool:
        key = key.strip()
        return bool(key) and _hit(text, lowered, key, case_sensitive=case, whole_words=whole)

    try:
        if not any(hit(k) for k in entry.keys):
            return False
        if not (entry.selective and entry.secondary):
            return True
        found = [hit(k) for k in entry.secondary]
    except _Skipped as e:  # not searched to its end: the entry stays out, and the user is told
        if _CLOCK.skipped is not None:
            _CLOCK.skipped.setdefault(entry.title, str(e))
        return False
    return {AND_ANY: any(found), NOT_ALL: not all(found), NOT_ANY: not any(found), AND_ALL: all(found)}[entry.logic]


def scan_text(units: Sequence[str], depth: int) -> str:
    """The last `depth` units, newest first, each opened by MARK, as SillyTavern's scan buffer."""
    if depth <= 0:
        return ""
    recent = [u.strip() for u in reversed(units[-depth:])]
    return MARK + ("\n" + MARK).join(recent)


# --- activation -------------------------------------------------------------------------------


def _roll(entry: Entry, seed: int, turn: int) -> float:
    """A number in [0, 100) that depends only on the seed, the entry and how long the history is."""
    return random.Random(f"{seed}:{entry.ident}:{turn}").random() * 100


def _candidates(
    entries: Sequence[Entry],
    units: Sequence[str],
    settings: LoreSettings,
    *,
    done: set[str],
    recursion: Sequence[str],
    first: bool,
    sticky: Collection[str] = (),
    blocked: Collection[str] = (),
) -> list[Entry]:
    """The entries this pass finds: sticky ones first (as SillyTavern sorts them), then in `entries`' order."""
    out, held = [], []
    tail = "\n" + MARK + ("\n" + MARK).join(recursion) if recursion else ""
    windows: dict[int, tuple[str, str]] = {}  # scan depth -> the text and its lower case, made once
    for e in entries:
        if not e.enabled or e.ident in done or (e.delay and len(units) < e.delay):
            continue
        if e.ident in sticky:
            held.append(e)  # active whatever the text says; cooldown and recursion rules do not apply
            continue
        if e.ident in blocked:
            continue
        if e.constant:
            if first:
                out.append(e)
            continue
        if (first and e.delay_until_recursion) or (not first and e.exclude_recursion):
            continue
        depth = settings.scan_depth if e.scan_depth is None else e.scan_depth
        if depth not in windows:
            text = scan_text(units, depth) + tail
            windows[depth] = (text, text.lower())
        if _matches(e, *windows[depth], settings):
            out.append(e)
    return held + out


@dataclass(frozen=True)
class Timers:
    """SillyTavern's timed effects at one length of the history: entry -> the length at which its sticky
    time ends, and at which its cooldown ends. An entry that activates gets both (when it has them) unless
    already running; when its sticky time ends, its cooldown starts again from there."""

    sticky: Mapping[str, int] = field(default_factory=dict)
    cooldown: Mapping[str, int] = field(default_factory=dict)

    def advanced(self, k: int, entries: Mapping[str, Entry]) -> Timers:
        """The timers as the scan at length `k` sees them: ended ones removed (a sticky one that ends
        starts its cooldown)."""
        sticky = {i: end for i, end in self.sticky.items() if i in entries and k < end}
        ended = {i for i, end in self.sticky.items() if i in entries and k >= end and entries[i].cooldown}
        cooldown = {i: end for i, end in self.cooldown.items() if i in entries and k < end}
        cooldown.update({i: k + entries[i].cooldown for i in ended})
        return Timers(sticky, cooldown)

    def in_force(self, k: int) -> tuple[set[str], set[str]]:
        """(sticky, cooling down) at length `k`."""
        return {i for i, end in self.sticky.items() if k < end}, {i for i, end in self.cooldown.items() if k < end}

    def started(self, k: int, activated: Sequence[Entry]) -> Timers:
        """The timers after the entries `activated` at length `k` (each starts what it has and is not running)."""
        sticky, cooldown = dict(self.sticky), dict(self.cooldown)
        for e in activated:
            if e.sticky and e.ident not in sticky:
                sticky[e.ident] = k + e.sticky
            if e.cooldown and e.ident not in cooldown:
                cooldown[e.ident] = k + e.cooldown
        return Timers(sticky, cooldown)


def sort_entries(entries: Sequence[Entry]) -> list[Entry]:
    """SillyTavern's order: highest order first; ties keep their order in the books."""
    return sorted(entries, key=lambda e: -e.order)


def activate(
    books: Sequence[Lorebook],
    units: Sequence[str],
    *,
    settings: LoreSettings = LoreSettings(),
    count_tokens: Callable[[str], int],
    n_ctx: int,
    macros: Mapping[str, str] | None = None,
    timers: Timers | None = None,
) -> Activation:
    """The entries that the history `units` (oldest first) activates, within the token budget; `timers`:
    the sticky and cooldown times in force (see `Timers`), else none."""
    with bounded_scan() as skipped:
        activation = _activate(
            books, units, settings=settings, count_tokens=count_tokens, n_ctx=n_ctx, macros=macros, timers=timers
        )
        return dataclasses.replace(activation, skipped=tuple(skipped.items()))


def _activate(
    books: Sequence[Lorebook],
    units: Sequence[str],
    *,
    settings: LoreSettings,
    count_tokens: Callable[[str], int],
    n_ctx: int,
    macros: Mapping[str, str] | None,
    timers: Timers | None,
) -> Activation:
    sticky, blocked = timers.in_force(len(units)) if timers is not None else ((), ())
    entries = sort_entries([e for b in books for e in b.entries])
    budget = settings.budget(n_ctx)
    done: dict[str, Activated] = {}
    failed: set[str] = set()
    recursion: list[str] = []
    used, overflowed, step = 0, False, 0
    while True:
        if settings.max_recursion_steps and step >= settings.max_recursion_steps:
            break
        found = _candidates(
            entries,
            units,
            settings,
            done=set(done) | failed,
            recursion=recursion,
            first=step == 0,
            sticky=sticky,
            blocked=blocked,
        )
        step += 1
        admitted = []
        for e in found:
            rolls = e.use_probability and e.probability < 100 and e.ident not in sticky
            if rolls and _roll(e, settings.seed, len(units)) >= e.probability:
                failed.add(e.ident)
                continue
            content = fill_macros(e.content, macros)
            cost = count_tokens(content + "\n")
            if used + cost >= budget:
                overflowed = True  # as SillyTavern: the rest of this pass is left out too
                break
            used += cost
            done[e.ident] = Activated(e, count_tokens(content))
            admitted.append(e)
        more = [fill_macros(e.content, macros) for e in admitted if not e.prevent_recursion]
        if overflowed or not settings.recursive or not more:
            break
        recursion.extend(more)
    return Activation(tuple(done.values()), overflowed)


# --- placement --------------------------------------------------------------------------------


def _block(texts: Sequence[str]) -> str:
    texts = [t.strip("\n") for t in texts if t.strip()]
    return "\n".join(texts) + "\n" if texts else ""


def _replay_start(n: int) -> int:
    """Where the replay of the history begins: at the start, or for a history of more than REPLAY_LIMIT
    units, in steps of half of that, so that what stands there changes only once per step."""
    step = REPLAY_LIMIT // 2
    return max(0, (n // step - 1) * step)


Standing = dict[str, tuple[int, Activated]]
"""Entry -> (units before it, the entry as activated)."""


@dataclass(frozen=True)
class _State:
    standing: Standing
    timers: Timers


@dataclass
class _Replay:
    units: list[str]
    states: list[_State]
    """What stands, and the timers, after each prefix of the history, from the replay's start on."""


_REPLAYS: OrderedDict[tuple[str, int], _Replay] = OrderedDict()
"""Memo of recent replays (by lorebooks, settings and tokenizer), so that the next turn of a chat replays
only its new units; the result is the same as replaying from the start."""
_REPLAYS_LOCK = threading.Lock()
REPLAYS_KEPT = 16


def _fingerprint(
    books: Sequence[Lorebook],
    settings: LoreSettings,
    macros: Mapping[str, str] | None,
    n_ctx: int,
    count_tokens: Callable[[str], int],
) -> str:
    costs = tuple(count_tokens(fill_macros(e.content, macros) + "\n") for b in books for e in b.entries)
    text = repr((tuple(books), settings, sorted((macros or {}).items()), n_ctx, costs))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _step(standing: Standing, now: Activation, k: int, *, budget: int, cost: Callable[[Activated], int]) -> Standing:
    """What stands after the prefix of `k` units, whose activation is `now`."""
    active = {a.entry.ident: a for a in now.entries if not a.entry.constant}
    after = {i: (at, active.get(i, a)) for i, (at, a) in standing.items()}
    after.update({i: (k, a) for i, a in active.items() if i not in after})
    room = budget - sum(cost(a) for a in now.entries)
    for ident, (_, a) in sorted(after.items(), key=lambda item: item[1][0]):
        if ident in active:
            continue
        if cost(a) < room:
            room -= cost(a)
        else:
            del after[ident]
    return after


def needs_replay(books: Sequence[Lorebook], settings: LoreSettings) -> bool:
    """Whether the prompt depends on earlier turns: anchored or held entries, or timed effects."""
    return settings.placement == ANCHORED or settings.hold or any(e.timed for b in books for e in b.entries)


def replay(
    books: Sequence[Lorebook],
    units: Sequence[str],
    *,
    settings: LoreSettings,
    count_tokens: Callable[[str], int],
    n_ctx: int,
    macros: Mapping[str, str] | None = None,
) -> tuple[dict[str, int], Activation]:
    """The activation of the history `units` with the timed effects of its earlier lengths, where each
    keyword entry stands (how many units came before it when it fired), and, where entries are held
    (`hold`, or the anchored placement), the entries that went quiet but still stand (`lingering`).

    The history is replayed one unit at a time (the activation of each shorter history), as SillyTavern
    would have scanned it turn by turn: sticky and cooldown times start when an entry activates. An entry
    that fires is put at the end of the history as it was then and stays where it stands while it is
    active. An entry that went quiet stays too while the budget left by the active ones holds it, because
    taking it out re-processes everything after it; when the budget is short, the ones that fired latest
    leave first. The same document always gives the same prompt.
    """
    n, start = len(units), _replay_start(len(units))
    key = (_fingerprint(books, settings, macros, n_ctx, count_tokens), start)
    with _REPLAYS_LOCK:
        memo = _REPLAYS.pop(key, None) or _Replay([], [])
    same = 0
    while same < min(len(memo.units), n) and memo.units[same] == units[same]:
        same += 1
    # states[i] holds after the prefix of start + i units; the last length is always worked out again
    states = memo.states[: max(0, min(same, n - 1) - start + 1)]
    entries = {e.ident: e for b in books for e in b.entries}
    cost = lambda a: count_tokens(fill_macros(a.entry.content, macros) + "\n")  # noqa: E731
    budget = settings.budget(n_ctx)
    now = Activation(())
    for k in range(start + len(states), n + 1):
        before = states[-1] if states else _State({}, Timers())
        timers = before.timers.advanced(k, entries)
        now = activate(
            books, units[:k], settings=settings, count_tokens=count_tokens, n_ctx=n_ctx, macros=macros, timers=timers
        )
        standing = _step(before.standing, now, k, budget=budget, cost=cost)
        states.append(_State(standing, timers.started(k, [a.entry for a in now.entries])))
    with _REPLAYS_LOCK:
        _REPLAYS[key] = _Replay(list(units), states)
        while len(_REPLAYS) > REPLAYS_KEPT:
            _REPLAYS.popitem(last=False)
    standing = states[n - start].standing
    if settings.placement != ANCHORED and not settings.hold:
        return {}, now
    fired = {a.entry.ident for a in now.entries}
    lingering = tuple(a for i, (_, a) in standing.items() if i not in fired)
    return {i: at for i, (at, _) in standing.items()}, dataclasses.replace(now, lingering=lingering)


def place(
    plan: PromptPlan,
    activation: Activation,
    *,
    anchored: Mapping[str, int] | None = None,
    macros: Mapping[str, str] | None = None,
    rank: Mapping[str, int] | None = None,
) -> PromptPlan:
    """The plan with the activated entries placed: at their declared positions, or, for an entry that has
    an anchor, at the point of the history where it fired (its depth or the note's depth counted back from
    there). Entries in one place stand in ascending order; ties by `rank` (their place in the books), so that
    the text depends only on which entries are placed, not on which of them fired last."""
    anchored, rank = anchored or {}, rank or {}
    chosen = sorted(
        (a.entry for a in activation.entries + activation.lingering), key=lambda e: (e.order, rank.get(e.ident, 0))
    )
    head: dict[str, list[str]] = {BEFORE: [], AFTER: []}
    note: dict[str, list[str]] = {NOTE_TOP: [], NOTE_BOTTOM: []}
    inserts: dict[int, list[str]] = {}
    n = len(plan.units)
    for e in chosen:
        text = fill_macros(e.content, macros)
        back = e.depth if e.position == DEPTH else plan.note_depth if e.position in note else 0
        if e.ident in anchored:
            inserts.setdefault(n - max(0, anchored[e.ident] - back), []).append(text)
        elif e.position in head or not plan.units:
            head[e.position if e.position in head else BEFORE].append(text)
        elif e.position in note and plan.note:
            note[e.position].append(text)
        else:
            inserts.setdefault(back, []).append(text)
    before, after = _block(head[BEFORE]), _block(head[AFTER])
    b, a = plan.head_slots
    new_head = plan.head[:b] + before + plan.head[b:a] + after + plan.head[a:]
    new_note = _block(note[NOTE_TOP]) + plan.note + _block(note[NOTE_BOTTOM]) if plan.note else ""
    extra = tuple((depth, _block(texts)) for depth, texts in sorted(inserts.items(), key=lambda i: -i[0]))
    return dataclasses.replace(
        plan, head=new_head, note=new_note, inserts=plan.inserts + extra, head_slots=(b, a + len(before) + len(after))
    )


@dataclass(frozen=True)
class Lore:
    """The lorebooks of one document (its own, its character's and the global ones) and their settings."""

    books: tuple[Lorebook, ...] = ()
    settings: LoreSettings = LoreSettings()
    macros: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Entries are told apart by book name and uid: two books of the same name get distinct names.
        seen: dict[str, int] = {}
        books = []
        for book in self.books:
            seen[book.name] = seen.get(book.name, 0) + 1
            books.append(
                book if seen[book.name] == 1 else dataclasses.replace(book, name=f"{book.name} ({seen[book.name]})")
            )
        object.__setattr__(self, "books", tuple(books))

    def __bool__(self) -> bool:
        return any(b.entries for b in self.books)

    def with_seed(self, seed: int) -> Lore:
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, seed=seed))

    def for_document(self, document: object) -> Lore:
        """The lore with `{{char}}` and `{{user}}` set from a chat's names (other documents keep them)."""
        document = getattr(document, "chat", document)  # an instruct chat holds its chat
        if isinstance(document, Chat):
            return dataclasses.replace(
                self, macros={"char": document.character, "user": document.user_name, **self.macros}
            )
        return self

    def apply(
        self, plan: PromptPlan, *, count_tokens: Callable[[str], int], n_ctx: int
    ) -> tuple[PromptPlan, Activation]:
        """The plan with the entries that its history activates, and which ones fired."""
        count = functools.lru_cache(maxsize=None)(count_tokens)  # each entry is counted once per prompt
        anchored: dict[str, int] = {}
        with bounded_scan() as skipped:  # one time bound for all of this prompt's regex keys, replays included
            if plan.units and needs_replay(self.books, self.settings):
                standing, activation = replay(
                    self.books, plan.units, settings=self.settings, count_tokens=count, n_ctx=n_ctx, macros=self.macros
                )
                anchored = standing if self.settings.placement == ANCHORED else {}
            else:
                scanned = plan.units or split_units(plan.head)  # a prompt without history: its text is scanned
                activation = activate(
                    self.books, scanned, settings=self.settings, count_tokens=count, n_ctx=n_ctx, macros=self.macros
                )
            activation = dataclasses.replace(activation, skipped=tuple(skipped.items()))
        rank = {e.ident: i for i, e in enumerate(e for b in self.books for e in b.entries)}
        return place(plan, activation, anchored=anchored, macros=self.macros, rank=rank), activation


def lore_of(document: object) -> Lore | None:
    """The lorebooks a prompt document carries (`formats.with_lore`), built now if they are a function, so
    that a broken lorebook is an error of this prompt. An instruct prompt or an adventure holds them in what
    it holds."""
    source = getattr(document, "lore", None)
    lore = source() if callable(source) else source
    if lore is not None and not isinstance(lore, Lore):
        raise TypeError(f"a prompt document's lore is a {type(lore).__name__}, not a Lore")
    return lore


def skipped_notes(activation: Activation | None) -> tuple[str, ...]:
    """One line per lorebook entry left out of a prompt because its keys were not searched to their end."""
    if activation is None:
        return ()
    return tuple(f"lorebook entry {title!r} was left out: {why}" for title, why in activation.skipped)
