import pytest
from fakes import ScriptedBackend

from talesmith.runtime.documents.formats import USER, Chat, Message, RawText, Story
from talesmith.runtime.engine.generate import collect, prepare, stream, stream_document
from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings

GREEDY = SamplingSettings(temperature=0, max_new_tokens=64, seed=1)


def run(backend, prompt="P", **settings):
    return collect(stream(backend, backend.tokenize(prompt), GREEDY.replace(**settings)))


def test_generates_the_script_and_stops_at_end_of_text():
    c = run(ScriptedBackend("Hello world."))
    assert c.text == "Hello world." and c.finish_reason == "eos"
    assert len(c.tokens) == len("Hello world.")


def test_max_new_tokens_ends_with_reason_length():
    c = run(ScriptedBackend("Hello world."), max_new_tokens=5)
    assert c.text == "Hello" and c.finish_reason == "length" and c.timing.generated_tokens == 5


def test_min_new_tokens_suppresses_end_of_text():
    c = run(ScriptedBackend("Hi"), min_new_tokens=4, max_new_tokens=10)
    assert c.text == "Hixx" and c.tokens == tuple(b"Hixx") and c.finish_reason == "eos"  # x: the fallback byte


def test_stop_string_ends_generation_without_it():
    c = run(ScriptedBackend("Sure thing.\nYou: and more"), stop=("\nYou:",))
    assert c.text == "Sure thing." and c.finish_reason == "stop"


def test_banned_word_never_appears_even_across_tokens():
    backend = ScriptedBackend("Oh Damn it", pieces=[b"Oh", b" Da", b"mn", b" it"])
    chunks = list(stream(backend, [80], GREEDY.replace(banned=("Damn",))))
    text = "".join(c.text for c in chunks)
    assert "damn" not in text.lower()
    assert text == "Oh xamn it"  # " Da" banned, then " ", then "D" banned: the fallback byte
    assert all("Da" not in c.text for c in chunks)


def test_japanese_streams_without_replacement_characters():
    script = "転生すると、ある能力を手に入れていた。"
    chunks = list(stream(ScriptedBackend(script), [80], GREEDY))  # one byte per token
    assert "".join(c.text for c in chunks) == script
    assert all("\ufffd" not in c.text for c in chunks)
    assert sum(1 for c in chunks if c.text) == len(script)


def test_chunks_carry_tokens_timing_and_one_final_reason():
    chunks = list(stream(ScriptedBackend("abc"), [80], GREEDY))
    assert [c.finish_reason for c in chunks] == [None, None, None, "eos"]
    assert [c.tokens for c in chunks[:3]] == [(97,), (98,), (99,)]
    assert chunks[-1].timing.generated_tokens == 3 and chunks[-1].timing.prompt_tokens == 1
    assert chunks[-1].seed == 1


def test_shared_prefix_is_not_evaluated_again():
    backend = ScriptedBackend("xyz")
    first = run(backend, "The same long prompt")
    assert first.timing.prompt_evaluated == len("The same long prompt")
    second = run(backend, "The same long prompt, extended")
    assert second.timing.prompt_evaluated == len(", extended")  # only what follows the cached prefix


def test_closing_the_stream_stops_at_once():
    backend = ScriptedBackend("a" * 50)
    gen = stream(backend, [80], GREEDY)
    next(gen), next(gen)
    gen.close()
    assert backend.cached_tokens == (80, 97)  # the prompt and the first token; the second was never evaluated


def test_a_random_seed_is_chosen_and_reported():
    c = collect(stream(ScriptedBackend("a"), [80], GREEDY.replace(seed=None)))
    assert isinstance(c.seed, int) and 0 <= c.seed < 2**31
    assert collect(stream(ScriptedBackend("a"), [80], GREEDY.replace(seed=c.seed))).seed == c.seed


def test_prompt_that_fills_the_context_is_an_error():
    backend = ScriptedBackend("a", n_ctx=8)
    with pytest.raises(ContextOverflowError, match="the prompt is 9 tokens but the context holds 8"):
        run(backend, "123456789")


def test_prepare_trims_oldest_story_lines_to_leave_room_for_the_reply():
    backend = ScriptedBackend("x", n_ctx=60)
    story = Story(text="".join(f"Line {i}.\n" for i in range(10)))
    prepared = prepare(backend, story, GREEDY.replace(max_new_tokens=20))
    assert prepared.fitted.dropped == 5 and prepared.fitted.text == "Line 5.\nLine 6.\nLine 7.\nLine 8.\nLine 9.\n"
    assert prepared.tokens == list(prepared.fitted.text.encode())  # one token per byte: 40, 20 left for the reply


def test_prepare_refuses_a_reply_longer_than_the_context():
    with pytest.raises(ContextOverflowError, match="max_new_tokens 100 leaves no room"):
        prepare(ScriptedBackend("x", n_ctx=64), RawText("hi"), GREEDY.replace(max_new_tokens=100))


def test_chat_stops_when_the_model_starts_the_users_line():
    backend = ScriptedBackend(" Of course!\nYou: thanks")
    chat = Chat(character="Aqua", persona="Goddess.", messages=(Message(USER, "Heal me"),))
    c = collect(stream_document(backend, chat, GREEDY))
    assert c.text == " Of course!" and c.finish_reason == "stop"
