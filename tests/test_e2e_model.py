"""End to end on the bundled Gemma 3 270M model."""

import pytest

from talesmith.runtime.documents.formats import USER, Chat, Message, Story, StoryHeader
from talesmith.runtime.engine.generate import collect, prepare, stream, stream_document
from talesmith.runtime.settings import SamplingSettings, preset

pytestmark = pytest.mark.model

STORY = Story(
    text="The storm had raged for three days when the knock came at the lighthouse door.",
    header=StoryHeader(title="The Lighthouse Keeper", genre="Mystery"),
)


def test_same_seed_same_text_different_seed_different_text(llama):
    s = preset("default", seed=1234, max_new_tokens=40)
    a = collect(stream_document(llama, STORY, s))
    b = collect(stream_document(llama, STORY, s))
    c = collect(stream_document(llama, STORY, s.replace(seed=99)))
    assert a.text == b.text and a.tokens == b.tokens
    assert a.text != c.text
    assert len(a.text) > 40 and a.timing.generated_tokens == 40 and a.finish_reason == "length"


def test_every_sampler_of_the_chain_runs(llama):
    s = SamplingSettings(
        temperature=0.9,
        top_k=50,
        top_p=0.9,
        min_p=0.02,
        typical_p=0.95,
        repetition_penalty=1.1,
        presence_penalty=0.2,
        frequency_penalty=0.2,
        dry_multiplier=0.8,
        xtc_probability=0.5,
        xtc_threshold=0.1,
        seed=5,
        max_new_tokens=24,
    )
    assert collect(stream_document(llama, STORY, s)).timing.generated_tokens > 0
    for mode in (1, 2):
        m = collect(stream_document(llama, STORY, s.replace(mirostat=mode)))
        assert m.timing.generated_tokens > 0


def test_banned_words_never_appear(llama):
    # Greedy, this prompt continues with "the lighthouse" again and again; ban the phrase.
    base = SamplingSettings(temperature=0, max_new_tokens=60, seed=1)
    free = collect(stream_document(llama, STORY, base))
    assert "lighthouse" in free.text.lower()
    banned = collect(stream_document(llama, STORY, base.replace(banned=("lighthouse", "storm"))))
    assert "lighthouse" not in banned.text.lower() and "storm" not in banned.text.lower()
    assert banned.timing.generated_tokens >= 20


def test_stop_sequences_are_honoured(llama):
    base = SamplingSettings(temperature=0, max_new_tokens=80, seed=1)
    free = collect(stream_document(llama, STORY, base))
    word = free.text.split()[3]
    stopped = collect(stream_document(llama, STORY, base.replace(stop=(word,))))
    assert stopped.finish_reason == "stop" and word not in stopped.text
    assert free.text.startswith(stopped.text)


def test_japanese_streams_without_replacement_characters(llama):
    story = Story(
        japanese=True,
        synopsis="あなたは異世界に転生してしまいました。勇者となって、仲間を作り、異世界を冒険しよう！",
        text="転生すると、ある能力を手に入れていた。それは、",
    )
    chunks = list(stream_document(llama, story, preset("genji-jp", seed=7, max_new_tokens=60)))
    text = "".join(c.text for c in chunks)
    assert all("\ufffd" not in c.text for c in chunks)
    assert any("\u3040" <= ch <= "\u9fff" for ch in text)  # it writes Japanese


def test_shared_prefix_reuses_the_cache(llama):
    s = SamplingSettings(temperature=0, max_new_tokens=8, seed=1)
    first = collect(stream_document(llama, STORY, s))
    longer = Story(text=STORY.text + first.text, header=STORY.header)
    second = collect(stream_document(llama, longer, s))
    assert second.timing.prompt_evaluated <= 2  # the story and its continuation are already cached
    fresh = Story(text="Something else entirely.", header=StoryHeader(title="Other"))
    third = collect(stream_document(llama, fresh, s))
    assert third.timing.prompt_evaluated < third.timing.prompt_tokens  # the BOS and "[ Title:" are shared


def test_reuse_gives_the_same_greedy_text_as_a_fresh_evaluation(llama):
    s = SamplingSettings(temperature=0, max_new_tokens=20, seed=1)
    tokens = llama.tokenize("In the beginning the forest was silent, and")
    collect(stream(llama, tokens[:5], s))  # leave an unrelated continuation in the cache
    reused = collect(stream(llama, tokens, s))
    llama.prefill(llama.tokenize("Reset"))
    fresh = collect(stream(llama, tokens, s))
    assert reused.text == fresh.text


def test_chat_reply_stops_before_the_users_next_line(llama):
    chat = Chat(
        character="Aqua", persona="A cheerful goddess of water.", messages=(Message(USER, "Hello! Who are you?"),)
    )
    reply = collect(stream_document(llama, chat, preset("pygmalion", seed=3, max_new_tokens=80)))
    assert "\nYou:" not in reply.text


def test_long_story_is_trimmed_by_policy_not_cut(llama):
    lines = "".join(f"Chapter line {i}: the keeper climbed the stairs again.\n" for i in range(400))
    story = Story(text=lines, header=STORY.header, memory="The keeper is named Ada.")
    s = SamplingSettings(temperature=0, max_new_tokens=16, seed=1)
    prepared = prepare(llama, story, s)
    assert prepared.fitted.dropped > 0
    assert prepared.fitted.text.startswith(
        "The keeper is named Ada.\n[ Title: The Lighthouse Keeper; Genre: Mystery ]\n***\n"
    )
    assert prepared.fitted.text.endswith("Chapter line 399: the keeper climbed the stairs again.\n")
    assert len(prepared.tokens) + s.max_new_tokens <= llama.n_ctx
