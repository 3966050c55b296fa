"""Samplers as small pure numpy functions, with llama.cpp's semantics, order and random numbers.

Each function takes a `Candidates` (token ids and their logits, in llama.cpp's candidate order)
and returns a new one, exactly as llama.cpp's sampler of the same name filters and reorders its
`llama_token_data_array`: probabilities are a softmax over the candidates left at that point,
sorting is by logit, descending, and ties keep id order. `Mt19937` draws the same numbers as the
C++ standard library's `std::mt19937` behind llama.cpp's `dist`, `xtc` and `mirostat`, so that
a chain with the same seed picks the same tokens.

`plan_chain` turns one `SamplingSettings` into the chain's steps in llama.cpp's order (penalties,
DRY, then greedy, or temperature + mirostat, or top-k, typical, top-p, min-p, XTC, temperature and a
seeded draw); `SamplerChain` makes a closure of each step once, and talesmith.runtime.engine.llama
builds llama.cpp's native chain from the same plan.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from talesmith.runtime.settings import WHOLE_CONTEXT, SamplingSettings

_F32 = np.float32


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray
    """Token ids (int32), in candidate order."""
    logits: np.ndarray
    """Their logits (float32)."""
    probs: np.ndarray | None = None
    """Probabilities from the last softmax over these candidates, if one was taken."""
    sorted: bool = False
    """Whether the candidates are sorted by logit, descending."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def p(self) -> np.ndarray:
        """The probabilities, which only a softmax gives."""
        if self.probs is None:
            raise ValueError("these candidates have no probabilities yet: take a softmax first")
        return self.probs


def candidates(logits: np.ndarray) -> Candidates:
    """Every token of the vocabulary, in id order, as llama.cpp starts each step."""
    logits = np.asarray(logits, dtype=_F32)
    return Candidates(np.arange(len(logits), dtype=np.int32), logits.copy())


def _take(c: Candidates, order: np.ndarray, *, sorted: bool) -> Candidates:
    return Candidates(c.ids[order], c.logits[order], None if c.probs is None else c.probs[order], sorted)


def sort(c: Candidates) -> Candidates:
    """By logit, descending; ties keep their order."""
    if c.sorted:
        return c
    return _take(c, np.argsort(-c.logits, kind="stable"), sorted=True)


def softmax(c: Candidates, *, do_sort: bool = False) -> Candidates:
    """Probabilities over the candidates (float32, as llama.cpp computes them)."""
    if not len(c):
        raise ValueError("softmax of no candidates")
    if do_sort:
        c = sort(c)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(c.logits - c.logits.max(), dtype=_F32)
    total = np.cumsum(e, dtype=_F32)[-1]  # sequential float32 sum, as in llama.cpp
    return replace(c, probs=(e / total).astype(_F32))


def top_k(c: Candidates, k: int) -> Candidates:
    """Keep the `k` most likely candidates; k <= 0 keeps all."""
    if k < 0:
        raise ValueError(f"top_k {k} is negative")
    if k == 0:
        return c
    if not c.sorted and len(c) > 8 * k:
        top = _top_positions(c.logits, k)
        if top is not None:
            return _take(c, top[np.argsort(-c.logits[top], kind="stable")], sorted=True)
    c = sort(c)
    return _take(c, np.arange(min(k, len(c))), sorted=True)


def _top_positions(logits: np.ndarray, k: int) -> np.ndarray | None:
    """The positions of the k largest logits, ties going to the earlier position (so that a stable sort of
    them gives exactly the first k of a stable sort of all), found without sorting them all: a bound at or
    below the k-th largest, the k-th largest of a strided sample (a subset), leaves a few thousand of a
    large vocabulary, and a partition of those finds the k-th itself. None where no finite bound exists."""
    stride = max(1, math.isqrt(len(logits) // k))
    sample = logits[::stride]
    bound = np.partition(sample, len(sample) - k)[len(sample) - k]
    if not np.isfinite(bound):
        return None
    survivors = np.flatnonzero(logits >= bound)
    if len(survivors) < k:
        return None
    values = logits[survivors]
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = survivors[values > kth]
    return np.concatenate([above, survivors[values == kth][: k - len(above)]])


def _keeps_all(name: str, p: float) -> bool:
    """Whether probability mass `p`, which must lie in (0, 1], keeps every candidate."""
    if not 0 < p <= 1:
        raise ValueError(f"{name} {p} is outside (0, 1]")
    return p >= 1.0


def top_p(c: Candidates, p: float, *, min_keep: int = 1) -> Candidates:
    """Keep the smallest set of most likely candidates whose probability adds up to at least `p`."""
    if _keeps_all("top_p", p):
        return c
    c = sort(softmax(c))
    cum = np.cumsum(c.p, dtype=_F32)
    hit = np.nonzero((cum >= _F32(p)) & (np.arange(1, len(c) + 1) >= min_keep))[0]
    last = int(hit[0]) + 1 if len(hit) else len(c)
    return _take(c, np.arange(last), sorted=True)


def min_p(c: Candidates, p: float, *, min_keep: int = 1) -> Candidates:
    """Drop candidates less likely than `p` times the most likely one (kept in their order)."""
    if not 0 <= p < 1:
        raise ValueError(f"min_p {p} is outside [0, 1)")
    if p <= 0.0 or not len(c):
        return c
    threshold = _F32(c.logits.max() + _F32(math.log(p)))
    keep = np.nonzero(c.logits >= threshold)[0]
    if len(keep) >= max(min_keep, 1):
        return _take(c, keep, sorted=c.sorted)
    c = sort(c)
    n = max(1, min_keep, int(np.count_nonzero(c.logits >= threshold)))
    return _take(c, np.arange(min(n, len(c))), sorted=True)


def typical_p(c: Candidates, p: float, *, min_keep: int = 1) -> Candidates:
    """Locally typical sampling: keep the candidates whose surprise is closest to the entropy, up to mass `p`."""
    if _keeps_all("typical_p", p):
        return c
    c = softmax(c, do_sort=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(c.p, dtype=_F32)
        entropy = np.cumsum(np.nan_to_num(-c.p * logp), dtype=_F32)[-1]
        shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(c.p[order], dtype=_F32)
    hit = np.nonzero((cum > _F32(p)) & (np.arange(len(c)) >= min_keep - 1))[0]
    last = int(hit[0]) + 1 if len(hit) else len(c)
    return _take(c, order[:last], sorted=False)


def temperature(c: Candidates, t: float) -> Candidates:
    """Divide the logits by `t`; t <= 0 leaves only the most likely candidate finite."""
    if t <= 0.0:
        if not len(c):
            return c
        logits = np.full_like(c.logits, -np.inf)
        best = int(np.argmax(c.logits))
        logits[best] = c.logits[best]
        return replace(c, logits=logits, probs=None)
    return replace(c, logits=(c.logits / _F32(t)).astype(_F32), probs=None)


def penalties(
    c: Candidates, recent: Sequence[int], *, repeat: float = 1.0, frequency: float = 0.0, presence: float = 0.0
) -> Candidates:
    """Repetition (divide positive logits, multiply negative ones), frequency and presence penalties
    for the tokens in `recent` (the window of recent tokens, oldest first)."""
    if repeat <= 0:
        raise ValueError(f"repetition penalty {repeat} must be above 0")
    if not recent or (repeat == 1.0 and frequency == 0.0 and presence == 0.0):
        return c
    tokens, counts = np.unique(np.fromiter(recent, dtype=np.int64, count=len(recent)), return_counts=True)
    at, tokens, counts = _where(c, tokens, counts)
    logits = c.logits.copy()
    x = logits[at]
    x = np.where(x <= 0, x * _F32(repeat), x / _F32(repeat)).astype(_F32)
    logits[at] = x - (counts.astype(_F32) * _F32(frequency) + _F32(1.0) * _F32(presence))
    return Candidates(c.ids, logits, None, False)


def _where(c: Candidates, tokens: np.ndarray, *also: np.ndarray) -> tuple[np.ndarray, ...]:
    """The positions of those of `tokens` that are candidates (each at most once), then those tokens and
    the matching items of each array in `also`. While the candidates are still the whole vocabulary in
    id order, as at the start of a chain, a token stands at its own id."""
    inside = (tokens >= 0) & (tokens < len(c))
    inside[inside] = c.ids[tokens[inside]] == tokens[inside]
    if inside.all():
        return (tokens, tokens, *also)
    found = np.isin(tokens, c.ids)
    order = np.argsort(c.ids, kind="stable")
    at = order[np.searchsorted(c.ids, tokens[found], sorter=order)]
    return (at, tokens[found], *(a[found] for a in also))


Breakers = Mapping[int, Sequence[tuple[int, ...]]]
"""DRY sequence breakers: head token -> the token tails that complete a breaker (empty for one token)."""


def dry_breakers(
    strings: Iterable[str],
    vocab: Sequence[bytes],
    tokenize: Callable[[str], list[int]],
    *,
    max_chars: int = 40,
    max_tail: int = 20,
) -> dict[int, list[tuple[int, ...]]]:
    """The breakers' token sequences, as llama.cpp derives them from a vocabulary.

    `vocab[i]` is token i's bytes; a token that contains a breaker is a breaker by itself, a token
    that ends with the start of one is a head whose tail is the rest, tokenized.
    """
    out: dict[int, list[tuple[int, ...]]] = {}
    for s in strings:
        s = s[:max_chars] if s else s
        if not s:
            continue
        data = s.encode("utf-8")
        for token, word in enumerate(vocab):
            if data in word:
                out.setdefault(token, []).append(())
                continue
            pos = word.find(data[:1])
            while pos != -1:
                i = 1
                match = True
                while i < len(data) and pos + i < len(word):
                    if word[pos + i] != data[i]:
                        match = False
                        break
                    i += 1
                if match:
                    tail = tuple(tokenize(data[i:].decode("utf-8", errors="ignore")))[:max_tail]
                    if tail not in out.get(token, []):
                        out.setdefault(token, []).append(tail)
                pos = word.find(data[:1], pos + 1)
    return out


def dry(
    c: Candidates,
    recent: Sequence[int],
    *,
    multiplier: float,
    base: float = 1.75,
    allowed_length: int = 2,
    breakers: Breakers | None = None,
) -> Candidates:
    """DRY ("don't repeat yourself"): penalize tokens that would extend a sequence already in `recent`
    (the window, oldest first) by multiplier * base ** (length - allowed_length)."""
    breakers = breakers or {}
    n = len(recent)
    if multiplier == 0.0 or base < 1.0 or n <= allowed_length:
        return c
    rat = lambda i: recent[n - 1 - i]  # noqa: E731  (i-th token from the end, as llama.cpp's ring buffer)
    rep_limit = n
    for i in range(n):
        tails = breakers.get(rat(i))
        if not tails:
            continue
        longest = -1
        for tail in tails:
            if longest < len(tail) <= i and all(tail[k] == rat(i - k - 1) for k in range(len(tail))):
                longest = len(tail)
        if longest >= 0:
            rep_limit = i - longest
            break
    if rep_limit < allowed_length:
        return c
    # For each position, the length of the longest suffix of `recent` that also ends there.
    counts = [0] * n
    last = n - 1
    lt = rt = 0
    for k in range(1, n):
        if k > rt:
            m = 0
            while m + k < n and rat(m) == rat(m + k):
                m += 1
            counts[last - k] = min(m, rep_limit)
            if m > 0:
                lt, rt = k, k + m - 1
        else:
            p = k - lt
            right = rt - k + 1
            if counts[last - p] < right:
                counts[last - k] = min(counts[last - p], rep_limit)
            else:
                i = rt + 1
                while i < n and rat(i) == rat(i - k):
                    i += 1
                counts[last - k] = min(i - k, rep_limit)
                lt, rt = k, i - 1
    longest_for: dict[int, int] = {}
    for i in range(n - 1):
        if counts[i] >= allowed_length:
            token = rat(n - 2 - i)
            longest_for[token] = max(longest_for.get(token, 0), counts[i])
    if not longest_for:
        return Candidates(c.ids, c.logits, None, False)
    max_exponent = int(_F32(88.7228391) / _F32(math.log(base))) if base > 1.000001 else 0
    logits = c.logits.copy()
    at, tokens = _where(c, np.fromiter(longest_for, dtype=np.int64, count=len(longest_for)))
    for i, token in zip(at.tolist(), tokens.tolist(), strict=True):
        if any(len(t) == 0 for t in breakers.get(token, ())):
            continue
        exponent = longest_for[token] - allowed_length
        if max_exponent > 0:
            exponent = min(exponent, max_exponent)
        logits[i] = _F32(logits[i] - _F32(multiplier) * _F32(math.pow(_F32(base), exponent)))
    return Candidates(c.ids, logits, None, False)


class Mt19937:
    """The random numbers of C++'s std::mt19937 with libstdc++'s distributions, as llama.cpp draws them."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(int(seed) % 2**32)  # std::mt19937(seed): the same init_genrand

    def _next(self) -> int:
        return int(self._bits.random_raw())

    def uniform_double(self) -> float:
        """std::uniform_real_distribution<double>(0, 1): two 32-bit draws."""
        value = (float(self._next()) + float(self._next()) * 2.0**32) / 2.0**64
        return value if value < 1.0 else math.nextafter(1.0, 0.0)

    def uniform_float(self) -> float:
        """std::uniform_real_distribution<float>(0, 1): one 32-bit draw."""
        value = _F32(self._next()) / _F32(2.0**32)
        return float(value) if value < 1.0 else float(np.nextafter(_F32(1.0), _F32(0.0)))

    def discrete(self, probs: np.ndarray) -> int:
        """std::discrete_distribution over `probs`: no draw for a single outcome."""
        if len(probs) < 2:
            return 0
        weights = np.asarray(probs, dtype=np.float64)
        cp = np.cumsum(weights / weights.sum())
        cp[-1] = 1.0
        return int(np.searchsorted(cp, self.uniform_double(), side="left"))


def xtc(c: Candidates, *, probability: float, threshold: float, rng: Mt19937, min_keep: int = 1) -> Candidates:
    """Exclude Top Choices: with chance `probability`, drop every candidate above `threshold` but the least likely of them."""
    if probability <= 0.0 or threshold > 0.5 or len(c) < 2:
        return c
    if rng.uniform_float() > probability:
        return c
    c = softmax(c, do_sort=True)
    above = c.p >= _F32(threshold)
    pos_last = 0
    for i in range(len(c)):
        if not above[i]:
            break
        pos_last = i
    if len(c) - pos_last >= min_keep and pos_last > 0:
        return _take(c, np.arange(pos_last, len(c)), sorted=True)
    return c


def dist(c: Candidates, rng: Mt19937) -> int:
    """Draw a token from the softmax of the candidates (llama.cpp's `dist`)."""
    if not len(c):
        raise ValueError("no candidates to sample from")
    if len(c) == 1:
        rng.uniform_double()
        return int(c.ids[0])
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(c.logits - c.logits.max(), dtype=_F32).astype(np.float64)
    cum = np.cumsum(e)
    target = cum[-1] * rng.uniform_double()
    hit = np.nonzero(cum >= target)[0]
    return int(c.ids[hit[0] if len(hit) else len(c) - 1])


def greedy(c: Candidates) -> int:
    """The candidate with the highest logit (the first one among equals)."""
    return int(c.ids[int(np.argmax(c.logits))])


@dataclass
class MirostatState:
    mu: float


def mirostat(
    c: Candidates, state: MirostatState, *, n_vocab: int, tau: float, eta: float, rng: Mt19937, m: int = 100
) -> tuple[Candidates, int]:
    """Mirostat 1: estimate the Zipf exponent from the top `m` candidates, keep the top k that target
    surprise `tau`, draw, and move `state.mu` towards the target. Returns the kept candidates and the token."""
    c = softmax(c, do_sort=True)
    p = c.p
    sum_ti_bi = sum_ti_sq = _F32(0.0)
    for i in range(min(m - 1, len(c) - 1)):
        t_i = _F32(math.log((i + 2) / (i + 1)))
        b_i = _F32(math.log(p[i] / p[i + 1])) if p[i + 1] > 0 else _F32(np.inf)
        sum_ti_bi = _F32(sum_ti_bi + t_i * b_i)
        sum_ti_sq = _F32(sum_ti_sq + t_i * t_i)
    s_hat = _F32(sum_ti_bi / sum_ti_sq) if sum_ti_sq else _F32(np.nan)
    epsilon = _F32(s_hat - 1)
    with np.errstate(all="ignore"):
        k = np.power(
            _F32(epsilon * np.power(_F32(2), _F32(state.mu))) / _F32(1 - np.power(_F32(n_vocab), -epsilon)),
            _F32(1) / s_hat,
            dtype=_F32,
        )
    k_int = _c_int(k)
    c = softmax(top_k(c, max(k_int, 1)), do_sort=True)
    idx = rng.discrete(c.p)
    _update_mu(state, c.p[idx], tau, eta)
    return c, int(c.ids[idx])


def mirostat_v2(c: Candidates, state: MirostatState, *, tau: float, eta: float, rng: Mt19937) -> tuple[Candidates, int]:
    """Mirostat 2: drop candidates whose surprise exceeds `state.mu`, draw, move mu towards `tau`."""
    c = softmax(c, do_sort=True)
    with np.errstate(divide="ignore"):
        surprise = -np.log2(c.p, dtype=_F32)
    over = np.nonzero(surprise > _F32(state.mu))[0]
    size = max(int(over[0]) if len(over) else len(c), 1)
    c = softmax(_take(c, np.arange(size), sorted=True), do_sort=True)
    idx = rng.discrete(c.p)
    _update_mu(state, c.p[idx], tau, eta)
    return c, int(c.ids[idx])


def _update_mu(state: MirostatState, p: float, tau: float, eta: float) -> None:
    surprise = -np.log2(_F32(p), dtype=_F32)
    state.mu = float(_F32(_F32(state.mu) - _F32(eta) * _F32(surprise - _F32(tau))))


def _c_int(x: np.float32) -> int:
    """C's int(float): truncation, with NaN and overflow giving INT_MIN as on x86."""
    if not np.isfinite(x) or abs(float(x)) >= 2**31:
        return -(2**31)
    return int(x)


@dataclass(frozen=True)
class Step:
    """One sampler of a chain: llama.cpp's name for it (`llama_sampler_init_<name>`) and its arguments
    in that function's order, leaving out the vocabulary and the seed, which the backend adds."""

    name: str
    args: tuple[float, ...] = ()


SEEDED = frozenset({"mirostat", "mirostat_v2", "xtc", "dist"})
"""The steps that draw random numbers, and so take a seed."""


@dataclass(frozen=True)
class ChainPlan:
    """The sampler chain that one SamplingSettings asks for, in llama.cpp's order, built once and
    read by both backends (SamplerChain here, LlamaSampler in llama.py)."""

    steps: tuple[Step, ...]
    penalty_window: int
    dry_window: int
    breakers: tuple[str, ...]

    @property
    def history(self) -> int:
        """How many recent tokens the chain remembers: those its penalties and DRY read, 0 without them."""
        windows = {"penalties": self.penalty_window, "dry": self.dry_window}
        return max((windows[step.name] for step in self.steps if step.name in windows), default=0)


def plan_chain(s: SamplingSettings, *, n_ctx: int) -> ChainPlan:
    """Penalties, DRY, then greedy; or temperature and mirostat; or top-k, typical, top-p, min-p, XTC,
    temperature and a seeded draw. A setting at its neutral value adds no step."""
    penalty_window = n_ctx if s.repetition_window == WHOLE_CONTEXT else s.repetition_window
    dry_window = n_ctx if s.dry_window == WHOLE_CONTEXT else s.dry_window
    steps: list[Step] = []
    if s.repetition_penalty != 1.0 or s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
        steps.append(Step("penalties", (penalty_window, s.repetition_penalty, s.frequency_penalty, s.presence_penalty)))
    if s.dry_multiplier > 0.0:
        steps.append(Step("dry", (s.dry_multiplier, s.dry_base, s.dry_allowed_length, dry_window)))
    if s.greedy:
        steps.append(Step("greedy"))
    elif s.mirostat:
        steps.append(Step("temp", (s.temperature,)))
        if s.mirostat == 1:
            steps.append(Step("mirostat", (s.mirostat_tau, s.mirostat_eta, 100)))
        else:
            steps.append(Step("mirostat_v2", (s.mirostat_tau, s.mirostat_eta)))
    else:
        filters = [
            ("top_k", s.top_k > 0, (s.top_k,)),
            ("typical", s.typical_p < 1.0, (s.typical_p, 1)),
            ("top_p", s.top_p < 1.0, (s.top_p, 1)),
            ("min_p", s.min_p > 0.0, (s.min_p, 1)),
            ("xtc", s.xtc_probability > 0.0, (s.xtc_probability, s.xtc_threshold, 1)),
        ]
        steps += [Step(name, args) for name, wanted, args in filters if wanted]
        steps += [Step("temp", (s.temperature,)), Step("dist")]
    breakers = tuple(s.dry_sequence_breakers) if s.dry_multiplier > 0.0 else ()
    return ChainPlan(tuple(steps), penalty_window, dry_window, breakers)


def narrows_first(plan: ChainPlan) -> bool:
    """Whether the chain comes down to a few candidates before anything reads the whole vocabulary: the
    penalties touch only the tokens in their window, then top-k or greedy. DRY (its breakers are tokenized
    by the backend) and mirostat (it sorts every candidate) do not."""
    names = [step.name for step in plan.steps]
    return (
        "dry" not in names
        and not any(n.startswith("mirostat") for n in names)
        and bool({"top_k", "greedy"} & set(names))
    )


Filter = Callable[[Candidates], Candidates]
Pick = Callable[[Candidates], int]


class SamplerChain:
    """A ChainPlan applied to one logit vector per step, as closures made once.

    Keeps the state that spans steps: the penalty and DRY windows, the random generators and mirostat's mu.
    """

    def __init__(
        self,
        settings: SamplingSettings,
        *,
        n_vocab: int,
        n_ctx: int,
        seed: int,
        history: Sequence[int] = (),
        breakers: Breakers | None = None,
    ):
        self.settings = settings
        self.n_vocab = n_vocab
        self.plan = plan_chain(settings, n_ctx=n_ctx)
        self._seed = seed % 2**32
        self._breakers = breakers or {}
        self._ids = np.arange(n_vocab, dtype=np.int32)
        *filters, pick = (self._make(step) for step in self.plan.steps)
        self._filters: list[Filter] = filters  # type: ignore[assignment]
        self._pick: Pick = pick  # type: ignore[assignment]
        self._argmax_only = not filters and pick is greedy
        """A plan of greedy alone: the first highest logit not banned, without building candidates."""
        self.reset(history)

    def _make(self, step: Step) -> Filter | Pick:
        """The closure for one step; the last step of a plan picks the token."""
        a = step.args
        match step.name:
            case "penalties":
                return lambda c: penalties(c, self._recent, repeat=a[1], frequency=a[2], presence=a[3])
            case "dry":
                return lambda c: dry(
                    c, self._dry_recent, multiplier=a[0], base=a[1], allowed_length=int(a[2]), breakers=self._breakers
                )
            case "greedy":
                return greedy
            case "temp":
                return lambda c: temperature(c, a[0])
            case "mirostat":
                n_vocab = self.n_vocab
                return lambda c: mirostat(
                    c, self._mirostat, n_vocab=n_vocab, tau=a[0], eta=a[1], rng=self._rng, m=int(a[2])
                )[1]
            case "mirostat_v2":
                return lambda c: mirostat_v2(c, self._mirostat, tau=a[0], eta=a[1], rng=self._rng)[1]
            case "top_k":
                return lambda c: top_k(c, int(a[0]))
            case "typical":
                return lambda c: typical_p(c, a[0], min_keep=int(a[1]))
            case "top_p":
                return lambda c: top_p(c, a[0], min_keep=int(a[1]))
            case "min_p":
                return lambda c: min_p(c, a[0], min_keep=int(a[1]))
            case "xtc":
                return lambda c: xtc(c, probability=a[0], threshold=a[1], min_keep=int(a[2]), rng=self._xtc_rng)
            case "dist":
                return lambda c: dist(c, self._rng)
        raise ValueError(f"no sampler named {step.name!r}")

    def reset(self, history: Sequence[int], *, seed: int | None = None) -> None:
        """Start over: fresh random generators (from `seed`, default the chain's own) and windows holding `history`."""
        seed = self._seed if seed is None else seed % 2**32
        self._xtc_rng = Mt19937(seed)
        self._rng = Mt19937(seed)
        self._mirostat = MirostatState(2.0 * float(_F32(self.settings.mirostat_tau)))
        self._recent: deque[int] = deque(maxlen=max(self.plan.penalty_window, 1))
        self._dry_recent: deque[int] = deque(maxlen=max(self.plan.dry_window, 1))
        windows = {"penalties": self._recent, "dry": self._dry_recent}
        self._remember = [windows[step.name].append for step in self.plan.steps if step.name in windows]
        for token in list(history)[-self.plan.history :] if self.plan.history else ():
            self.accept(token)

    def accept(self, token: int) -> None:
        """Remember a token for the penalties and DRY."""
        for remember in self._remember:
            remember(int(token))

    def sample(self, logits: np.ndarray, banned: Collection[int] = ()) -> int:
        """Pick the next token (never one of `banned`) and remember it."""
        logits = np.asarray(logits, dtype=_F32)  # the steps make new arrays; only the bans write in place
        if self._argmax_only:
            best = int(np.argmax(logits))
            if best not in banned:
                return best  # greedy remembers nothing
        if banned:
            logits = logits.copy()
            logits[np.fromiter(banned, dtype=np.int64)] = -np.inf
        if len(self._ids) != len(logits):
            self._ids = np.arange(len(logits), dtype=np.int32)
        c = Candidates(self._ids, logits)  # every token in id order, as llama.cpp starts a step
        for step in self._filters:
            c = step(c)
        token = self._pick(c)
        self.accept(token)
        return token
