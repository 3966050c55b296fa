"""Each numpy sampler against llama.cpp's native sampler of the same name, on identical logit vectors."""

import ctypes
from types import SimpleNamespace

import llama_cpp
import numpy as np
import pytest

from talesmith.runtime.engine import samplers as S
from talesmith.runtime.engine.llama import LlamaSampler
from talesmith.runtime.settings import SamplingSettings

N_VOCAB = 2000


def logit_vectors(n=6, seed=0, size=N_VOCAB):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(size) * scale).astype(np.float32) for scale in np.linspace(0.5, 6, n)]


def native(smpl, logits, *, history=(), free=True):
    """Apply one native sampler to `logits` after accepting `history`; the surviving (ids, logits, probs), selected."""
    for token in history:
        llama_cpp.llama_sampler_accept(smpl, token)
    data = (llama_cpp.llama_token_data * len(logits))(
        *[llama_cpp.llama_token_data(i, float(x), 0.0) for i, x in enumerate(logits)]
    )
    arr = llama_cpp.llama_token_data_array(
        data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=len(logits), selected=-1, sorted=False
    )
    llama_cpp.llama_sampler_apply(smpl, ctypes.byref(arr))
    out = [arr.data[i] for i in range(arr.size)]
    selected = out[arr.selected].id if arr.selected >= 0 else None
    if free:
        llama_cpp.llama_sampler_free(smpl)
    return (
        np.array([d.id for d in out]),
        np.array([d.logit for d in out], dtype=np.float32),
        np.array([d.p for d in out], dtype=np.float32),
    ), selected


def same(ours: S.Candidates, theirs, *, probs=True):
    ids, logits, p = theirs
    assert sorted(ours.ids.tolist()) == sorted(ids.tolist())
    np.testing.assert_allclose(ours.logits, logits, rtol=1e-6, atol=1e-6)
    differ = ours.ids != ids
    assert np.array_equal(ours.logits[differ], logits[differ])  # the order differs only among equal logits
    if probs:
        assert ours.probs is not None
        np.testing.assert_allclose(ours.probs, p, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("k", [1, 5, 40, 300, N_VOCAB + 5])
def test_top_k(k):
    for logits in logit_vectors():
        same(S.top_k(S.candidates(logits), k), native(llama_cpp.llama_sampler_init_top_k(k), logits)[0], probs=False)


@pytest.mark.parametrize("k", [1, 40, 500])
def test_top_k_over_a_large_vocabulary_keeps_what_a_full_sort_keeps(k):
    """Above 8k candidates top-k bounds the k-th logit from a sample instead of sorting them all: the same
    candidates in the same order as the full stable sort, ties (many here) included, and as llama.cpp."""
    rng = np.random.default_rng(5)
    vectors = [
        (rng.standard_normal(50_000) * 3).astype(np.float32),
        rng.integers(-20, 5, 50_000).astype(np.float32),  # thousands of equal logits around the k-th
        np.where(rng.random(50_000) < 0.99, -np.inf, rng.standard_normal(50_000)).astype(np.float32),
        np.full(50_000, -np.inf, dtype=np.float32),
    ]
    for logits in vectors:
        c = S.candidates(logits)
        full = S.sort(c)
        ours = S.top_k(c, k)
        assert ours.ids.tolist() == full.ids[:k].tolist()
        assert ours.logits.tolist() == full.logits[:k].tolist()
    theirs, _ = native(llama_cpp.llama_sampler_init_top_k(k), vectors[0])
    same(S.top_k(S.candidates(vectors[0]), k), theirs, probs=False)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.99])
def test_top_p(p):
    for logits in logit_vectors():
        same(S.top_p(S.candidates(logits), p), native(llama_cpp.llama_sampler_init_top_p(p, 1), logits)[0])


@pytest.mark.parametrize("p", [0.01, 0.05, 0.3, 0.9])
def test_min_p(p):
    for logits in logit_vectors():
        same(S.min_p(S.candidates(logits), p), native(llama_cpp.llama_sampler_init_min_p(p, 1), logits)[0], probs=False)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.95])
def test_typical_p(p):
    for logits in logit_vectors():
        same(S.typical_p(S.candidates(logits), p), native(llama_cpp.llama_sampler_init_typical(p, 1), logits)[0])


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 1.7])
def test_temperature(t):
    for logits in logit_vectors():
        same(
            S.temperature(S.candidates(logits), t), native(llama_cpp.llama_sampler_init_temp(t), logits)[0], probs=False
        )


def test_filters_compose_after_sorting():
    """top-k then top-p then min-p: probabilities are over what survived, as in llama.cpp."""
    logits = logit_vectors(1, seed=3)[0]
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for smpl in (
        llama_cpp.llama_sampler_init_top_k(50),
        llama_cpp.llama_sampler_init_top_p(0.8, 1),
        llama_cpp.llama_sampler_init_min_p(0.1, 1),
    ):
        llama_cpp.llama_sampler_chain_add(chain, smpl)
    ours = S.min_p(S.top_p(S.top_k(S.candidates(logits), 50), 0.8), 0.1)
    same(ours, native(chain, logits)[0])
    assert 1 < len(ours) < 50


@pytest.mark.parametrize(
    "repeat,freq,presence,window", [(1.3, 0.0, 0.0, 64), (0.8, 0.0, 0.0, 64), (1.1, 0.2, 0.5, 8), (1.0, 0.0, 1.5, 3)]
)
def test_penalties_with_window(repeat, freq, presence, window):
    rng = np.random.default_rng(1)
    for logits in logit_vectors(3):
        history = rng.integers(0, 40, size=30).tolist()  # repeats, some outside a short window
        theirs, _ = native(
            llama_cpp.llama_sampler_init_penalties(N_VOCAB, window, repeat, freq, presence), logits, history=history
        )
        ours = S.penalties(S.candidates(logits), history[-window:], repeat=repeat, frequency=freq, presence=presence)
        same(ours, theirs, probs=False)
        assert not np.array_equal(ours.logits, logits)


def _dry_history():
    # "a b c d e" repeated with noise between, ending in "a b c": DRY must push down "d".
    return [5, 6, 7, 8, 9, 30, 31, 5, 6, 7, 8, 9, 40, 5, 6, 7, 8, 12, 13, 5, 6, 7]


@pytest.mark.parametrize("multiplier,base,allowed,window", [(0.8, 1.75, 2, -1), (2.0, 1.1, 1, 12), (0.5, 3.0, 3, 50)])
def test_dry_without_breakers(multiplier, base, allowed, window):
    history = _dry_history()
    for logits in logit_vectors(3):
        smpl = llama_cpp.llama_sampler_init_dry(
            None, multiplier, base, allowed, window if window > 0 else 4096, None, 0
        )
        theirs, _ = native(smpl, logits, history=history)
        recent = history[-window:] if window > 0 else history
        ours = S.dry(S.candidates(logits), recent, multiplier=multiplier, base=base, allowed_length=allowed)
        same(ours, theirs, probs=False)
        assert ours.logits[8] < logits[8]


@pytest.fixture(scope="module")
def gemma_vocab(bundled_path):
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(bundled_path).encode(), params)
    vocab = llama_cpp.llama_model_get_vocab(model)
    yield vocab
    llama_cpp.llama_model_free(model)


def _pieces(vocab):
    buf = ctypes.create_string_buffer(256)
    out = []
    for t in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        n = llama_cpp.llama_token_to_piece(vocab, t, buf, 256, 0, True)
        out.append(buf.raw[: max(n, 0)])
    return out


def _tokenize(vocab, text):
    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(data) + 8, False, False)
    return list(buf[:n])


def test_dry_with_sequence_breakers(gemma_vocab):
    breakers = ["\n", ":", '"', "*"]
    table = S.dry_breakers(breakers, _pieces(gemma_vocab), lambda s: _tokenize(gemma_vocab, s))
    newline = _tokenize(gemma_vocab, "\n")[0]
    assert () in table[newline]
    n_vocab = llama_cpp.llama_vocab_n_tokens(gemma_vocab)
    history = [1000, 1001, 1002, newline, 1000, 1001, 1002, 1003, 2000, 1000, 1001, 1002, newline, 1000, 1001]
    rng = np.random.default_rng(5)
    logits = rng.standard_normal(n_vocab).astype(np.float32)
    arr = (ctypes.c_char_p * len(breakers))(*[b.encode() for b in breakers])
    smpl = llama_cpp.llama_sampler_init_dry(gemma_vocab, 1.0, 1.75, 2, 64, arr, len(breakers))
    theirs, _ = native(smpl, logits, history=history)
    ours = S.dry(S.candidates(logits), history, multiplier=1.0, base=1.75, allowed_length=2, breakers=table)
    same(ours, theirs, probs=False)


def test_xtc_with_seed():
    for seed in range(5):
        smpl = llama_cpp.llama_sampler_init_xtc(0.6, 0.05, 1, seed)
        rng = S.Mt19937(seed)
        for logits in logit_vectors(4, seed=seed, size=200):
            theirs, _ = native(smpl, logits, free=False)
            same(
                S.xtc(S.candidates(logits), probability=0.6, threshold=0.05, rng=rng),
                theirs,
                probs=len(theirs[0]) != 200,
            )
        llama_cpp.llama_sampler_free(smpl)


def test_dist_draws_the_same_tokens_for_a_seed():
    smpl = llama_cpp.llama_sampler_init_dist(1234)
    rng = S.Mt19937(1234)
    picks = []
    for logits in logit_vectors(20, size=50):
        _, theirs = native(smpl, logits, free=False)
        picks.append(S.dist(S.candidates(logits), rng))
        assert picks[-1] == theirs
    llama_cpp.llama_sampler_free(smpl)
    assert len(set(picks)) > 3


@pytest.mark.parametrize("mode", [1, 2])
def test_mirostat(mode):
    tau, eta, seed = 3.0, 0.2, 77
    smpl = (
        llama_cpp.llama_sampler_init_mirostat(N_VOCAB, seed, tau, eta, 100)
        if mode == 1
        else llama_cpp.llama_sampler_init_mirostat_v2(seed, tau, eta)
    )
    rng, state = S.Mt19937(seed), S.MirostatState(2 * tau)
    for logits in logit_vectors(12, seed=9):
        theirs, token = native(smpl, logits, free=False)
        c = S.candidates(logits)
        kept, ours = (
            S.mirostat(c, state, n_vocab=N_VOCAB, tau=tau, eta=eta, rng=rng)
            if mode == 1
            else S.mirostat_v2(c, state, tau=tau, eta=eta, rng=rng)
        )
        same(kept, theirs)
        assert ours == token
    llama_cpp.llama_sampler_free(smpl)


def test_sampler_arguments_are_checked():
    c = S.candidates(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="top_p 1.5"):
        S.top_p(c, 1.5)
    with pytest.raises(ValueError, match="top_k -1"):
        S.top_k(c, -1)
    with pytest.raises(ValueError, match="min_p 1.0"):
        S.min_p(c, 1.0)


CHAINS = {
    "default": SamplingSettings(
        temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1, repetition_window=16
    ),
    "typical+xtc": SamplingSettings(
        temperature=1.2,
        typical_p=0.9,
        xtc_probability=0.5,
        xtc_threshold=0.02,
        presence_penalty=0.4,
        frequency_penalty=0.1,
    ),
    "dry": SamplingSettings(temperature=1.0, top_k=100, dry_multiplier=0.8, dry_sequence_breakers=()),
    "mirostat1": SamplingSettings(temperature=0.9, mirostat=1, mirostat_tau=4.0),
    "mirostat2": SamplingSettings(temperature=0.7, mirostat=2, repetition_penalty=1.2),
    "greedy": SamplingSettings(temperature=0.0, repetition_penalty=1.5, repetition_window=4),
}


@pytest.mark.parametrize("vocab", [300, 5000])
@pytest.mark.parametrize("name", list(CHAINS))
def test_whole_chain_picks_the_same_tokens_as_llama_cpp(name, vocab):
    """talesmith's llama.cpp chain and the numpy chain, same seed and history: the same 40 tokens (over
    5,000 tokens top-k takes its bounded path)."""
    settings = CHAINS[name]
    history = [3, 4, 5, 3, 4, 5, 3, 4]
    fake = SimpleNamespace(n_ctx=256, n_vocab=vocab, vocab=None)
    theirs = LlamaSampler(fake, settings, 42, history, native=True)
    ours = S.SamplerChain(settings, n_vocab=vocab, n_ctx=256, seed=42, history=history)
    rng = np.random.default_rng(11)
    tokens = []
    for step in range(40):
        if step == 25:  # a rewind: both start over from the history, with the next seed
            theirs.reset(history + tokens)
            ours.reset(history + tokens, seed=42 + 1)
        logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
        logits[tokens[-1] if tokens else 0] += 4.0  # make repeats likely, so penalties matter
        # With a banned (-inf) token llama.cpp's typical sampler takes 0 * log(0) as NaN entropy and its
        # order is then undefined; the numpy one takes it as 0. Compare bans on the other chains.
        banned = {int(np.argmax(logits))} if step % 7 == 3 and settings.typical_p == 1.0 else set()
        masked = logits.copy()
        masked[list(banned)] = -np.inf  # as LlamaSampler.sample bans tokens
        _, expected = native(theirs._chain, masked, free=False)
        llama_cpp.llama_sampler_accept(theirs._chain, expected)
        tokens.append(ours.sample(logits, banned))
        assert tokens[-1] == expected, f"step {step}"
    theirs.close()
    assert len(set(tokens)) > 1 or name == "greedy"


def test_plan_lists_the_steps_in_llama_cpp_order_without_neutral_ones():
    plan = S.plan_chain(
        SamplingSettings(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.1), n_ctx=512
    )
    assert [(s.name, s.args) for s in plan.steps] == [
        ("penalties", (64, 1.1, 0.0, 0.0)),
        ("top_k", (40,)),
        ("top_p", (0.95, 1)),
        ("min_p", (0.05, 1)),
        ("temp", (0.8,)),
        ("dist", ()),
    ]
    assert plan.history == 64
    greedy = S.plan_chain(SamplingSettings(temperature=0.0, dry_multiplier=0.8, dry_window=-1), n_ctx=300)
    assert [s.name for s in greedy.steps] == ["dry", "greedy"]
    assert greedy.history == 300  # the whole context
    assert S.plan_chain(SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0), n_ctx=64).history == 0


@pytest.mark.parametrize("name", list(CHAINS))
def test_llama_cpp_chain_is_built_from_the_same_plan(name):
    """One description for both backends: llama.cpp's chain holds the plan's samplers, in its order."""
    fake = SimpleNamespace(n_ctx=256, n_vocab=300, vocab=None)
    theirs = LlamaSampler(fake, CHAINS[name], 42, [], native=True)
    plan = S.plan_chain(CHAINS[name], n_ctx=256)
    names = [
        llama_cpp.llama_sampler_name(llama_cpp.llama_sampler_chain_get(theirs._chain, i)).decode().lstrip("?")
        for i in range(llama_cpp.llama_sampler_chain_n(theirs._chain))
    ]
    theirs.close()
    # llama.cpp names its samplers with dashes, and marks one that does nothing (temperature 1) with "?"
    assert names == [s.name.replace("_", "-") for s in plan.steps]


def test_penalties_and_dry_find_their_tokens_among_any_candidates():
    """At the start of a chain a token stands at its own id; among other candidates (sorted, a subset,
    a token of the window missing) the same tokens get the same logits."""
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(300) * 3).astype(np.float32)
    recent = [5, 9, 5, 250, 7, 9, 5, 299, 1000]  # 1000 is no candidate at all
    whole = S.penalties(S.candidates(logits), recent, repeat=1.3, frequency=0.2, presence=0.1)
    some = S.top_k(S.candidates(logits), 120)
    kept = S.penalties(some, recent, repeat=1.3, frequency=0.2, presence=0.1)
    assert kept.ids.tolist() == some.ids.tolist()
    assert kept.logits.tolist() == whole.logits[some.ids].tolist()
    history = [4, 8, 15, 16, 4, 8, 15]  # 16 would extend the repeat "4 8 15"
    whole = S.dry(S.candidates(logits), history, multiplier=0.8)
    kept = S.dry(some, history, multiplier=0.8)
    assert kept.logits.tolist() == whole.logits[some.ids].tolist()
    assert whole.logits[16] < logits[16]


def test_greedy_alone_is_one_argmax_that_picks_what_the_full_chain_picks():
    """A plan of greedy alone skips building candidates: the first highest logit that is not banned, as the
    full chain (bans written as -inf, then greedy) picks it, also with ties and with the best tokens banned."""
    settings = SamplingSettings(temperature=0.0)
    fast = S.SamplerChain(settings, n_vocab=N_VOCAB, n_ctx=64, seed=1)
    full = S.SamplerChain(settings, n_vocab=N_VOCAB, n_ctx=64, seed=1)
    full._argmax_only = False
    assert fast._argmax_only
    rng = np.random.default_rng(4)
    for step, logits in enumerate(logit_vectors(n=40, seed=4)):
        logits = np.round(logits)  # many ties
        order = np.argsort(-logits, kind="stable")
        banned = set(order[: step % 4].tolist()) | set(rng.integers(0, N_VOCAB, size=step % 3).tolist())
        expected = next(int(i) for i in order if int(i) not in banned)
        assert fast.sample(logits, banned) == full.sample(logits, banned) == expected
    assert (
        S.SamplerChain(
            SamplingSettings(temperature=0.0, repetition_penalty=1.2), n_vocab=9, n_ctx=8, seed=1
        )._argmax_only
        is False
    )
