"""Long chats and stories on the bundled model: prefix reuse, context shifting, saved KV state."""

import pytest

from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message
from talesmith.runtime.engine.generate import collect, prepare, stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.settings import SamplingSettings

pytestmark = pytest.mark.model
GREEDY = SamplingSettings(temperature=0, max_new_tokens=12, min_new_tokens=12, seed=1)
PERSONA = "A cheerful goddess of water who loves festivals and hates the undead."


def turn(backend, chat, text):
    chat = Chat(chat.character, chat.persona, messages=chat.messages + (Message(USER, text),))
    prepared = prepare(backend, chat, GREEDY)
    reply = collect(stream(backend, prepared.tokens, GREEDY, stops=prepared.stops))
    return (
        Chat(chat.character, chat.persona, messages=chat.messages + (Message(CHARACTER, reply.text),)),
        prepared,
        reply,
    )


def test_shifting_keeps_the_persona_and_matches_fresh_evaluation_until_overflow(bundled_path):
    backend = LlamaCppBackend(bundled_path, n_ctx=320)
    chat = Chat("Aqua", PERSONA)
    shifted = 0
    for i in range(24):
        before = list(backend.cached_tokens)
        chat, prepared, reply = turn(backend, chat, f"Tell me about festival number {i}, please.")
        if prepared.fitted.dropped == 0:
            # Not overflowed yet: the reused cache must give exactly what a fresh evaluation gives.
            assert reply.timing.prompt_evaluated < len(prepared.tokens) or not before
            fresh = LlamaCppBackend(bundled_path, n_ctx=320)
            assert collect(stream(fresh, prepared.tokens, GREEDY, stops=prepared.stops)).text == reply.text
            fresh.close()
        elif backend.last_shift:
            shifted += 1
            # The dropped turns left the cache; the persona block and the kept turns are intact.
            assert reply.timing.prompt_evaluated < 60
            cached = list(backend.cached_tokens)
            assert cached[: len(prepared.tokens) - 1] == prepared.tokens[:-1]
            text = b"".join(backend.token_bytes(t) for t in cached).decode("utf-8", "replace")
            assert text.startswith("Aqua's Persona: " + PERSONA + "\n<START>\n")
    assert shifted >= 2
    backend.close()


def test_saved_state_resumes_without_reprocessing_and_refuses_strangers(llama, tmp_path):
    from talesmith.runtime.models.resolve import sha256

    digest = sha256(llama.model_path)
    story = "".join(f"Line {i}: the keeper climbed the stairs and lit the lamp again.\n" for i in range(40))
    tokens = llama.tokenize(story)
    expected = collect(stream(llama, tokens, GREEDY)).text
    llama.prefill(tokens)
    state = tmp_path / "story.kv"
    llama.save_state(state, model_sha256=digest)

    llama.reset()
    assert llama.load_state(state, tokens, model_sha256="0" * 64) == 0  # another model
    assert llama.load_state(state, llama.tokenize("Another story entirely."), model_sha256=digest) == 0
    assert llama.load_state(state, tokens, model_sha256=digest) == len(tokens)
    resumed = collect(stream(llama, tokens, GREEDY))
    assert resumed.timing.prompt_evaluated == 1 and resumed.text == expected
    llama.save_state(state, model_sha256=digest)  # now holding the reply too, past the prompt
    llama.reset()
    shorter = tokens[:-5]
    assert llama.load_state(state, shorter, model_sha256=digest) == len(shorter)
    assert list(llama.cached_tokens) == shorter
    (tmp_path / "story.kv").write_bytes(b"garbage")
    llama.reset()
    assert llama.load_state(state, tokens, model_sha256=digest) == 0
    assert list(llama.cached_tokens) == []


def test_kvstate_beside_a_document_and_the_reprocess_count(llama, tmp_path):
    from talesmith.runtime.engine import kvstate

    doc = tmp_path / "stories" / "lighthouse.json"
    doc.parent.mkdir()
    doc.write_text("{}")
    tokens = llama.tokenize("The keeper climbed the stairs. " * 30)
    llama.prefill(tokens)
    assert kvstate.reprocess_count(llama, tokens) == 1
    assert kvstate.save(llama, doc) and kvstate.state_path(doc).exists()
    assert sorted(p.name for p in doc.parent.glob("*.json")) == ["lighthouse.json"]  # the library lists only documents
    llama.reset()
    assert kvstate.reprocess_count(llama, tokens) == len(tokens)
    assert kvstate.restore(llama, doc, tokens) == len(tokens)
    assert kvstate.reprocess_count(llama, tokens + llama.tokenize(" And then", add_bos=False)) == 2


def test_a_reopened_story_with_an_author_s_note_is_shifted_as_the_live_session_is(llama, tmp_path):
    import dataclasses

    from talesmith.runtime.documents.formats import Story
    from talesmith.runtime.models.resolve import sha256

    lines = "".join(f"Line {i}: the keeper climbed the stairs and lit the lamp again.\n" for i in range(30))
    story = Story(text=lines, author_note="The night is cold and slow.", author_note_depth=3)
    llama.reset()
    reply = collect(stream(llama, prepare(llama, story, GREEDY).tokens, GREEDY))
    # The story goes on by two lines: the note moves two lines down, past what the cache holds.
    later = prepare(llama, dataclasses.replace(story, text=lines + reply.text + "\nLine 31.\nLine 32.\n"), GREEDY)
    live = llama.pending(later.tokens)
    state = tmp_path / "story.kv"
    llama.save_state(state, model_sha256=sha256(llama.model_path))
    llama.reset()
    held = llama.load_state(state, later.tokens, model_sha256=sha256(llama.model_path))
    assert llama.pending(later.tokens) == live
    common = next(i for i, (a, b) in enumerate(zip(llama.cached_tokens, later.tokens, strict=False)) if a != b)
    assert held == len(later.tokens) - live and live < len(later.tokens) - common  # not cut back to `common`
    resumed = collect(stream(llama, later.tokens, GREEDY))
    assert resumed.timing.prompt_evaluated == live
