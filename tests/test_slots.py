"""The server's slot engine: requests over kept caches, one loop, cancelling within one step."""

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.engine.generate import collect, stream
from talesmith.runtime.engine.slots import SerialDecoder, SlotEngine
from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings

GREEDY = SamplingSettings(temperature=0, max_new_tokens=40, seed=1)


def drain(engine, ticket, limit=500):
    """Run the engine's loop in this thread until the ticket ends; its chunks."""
    for _ in range(limit):
        if ticket.finished:
            break
        engine.run_once()
    assert ticket.finished
    return list(ticket)


def test_a_request_writes_what_stream_writes_and_ends_with_a_reason():
    engine = SlotEngine(SerialDecoder(ScriptedBackend("A tale of two cities.")))
    tokens = list(b"Once: ")
    chunks = drain(engine, engine.submit(tokens, GREEDY.replace(stop=("two",))))
    alone = collect(stream(ScriptedBackend("A tale of two cities."), tokens, GREEDY.replace(stop=("two",))))
    assert "".join(c.text for c in chunks) == alone.text == "A tale of "
    assert [c.finish_reason for c in chunks][-1] == "stop"
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_a_resent_conversation_evaluates_only_what_changed():
    backend = ScriptedBackend("Hi.")
    engine = SlotEngine(SerialDecoder(backend))
    first = list(b"User: hello\nBot:")
    reply = drain(engine, engine.submit(first, GREEDY))
    assert reply[-1].timing.prompt_evaluated == len(first)
    second = first + list(b"Hi.\nUser: and now?\nBot:")
    again = drain(engine, engine.submit(second, GREEDY))
    # the cache kept the first turn and the reply: only the new lines are evaluated
    assert again[-1].timing.prompt_evaluated == len(b"\nUser: and now?\nBot:")


def test_cancelling_frees_the_slot_before_the_next_step_and_the_next_request_runs():
    engine = SlotEngine(SerialDecoder(ScriptedBackend("a long story " * 10)))
    ticket = engine.submit(list(b"x"), GREEDY.replace(max_new_tokens=100))
    for _ in range(5):
        engine.run_once()
    steps = engine.decoder.steps
    ticket.cancel()
    engine.run_once()
    assert engine.decoder.steps == steps  # the slot was free before the step: nothing of it was evaluated
    assert ticket.finished and engine.busy() == 0
    received = list(ticket)  # what it had received, then a clean end (no final chunk, no error)
    assert "".join(c.text for c in received) == "".join(ticket.text) != ""
    assert all(c.finish_reason is None for c in received)
    after = drain(engine, engine.submit(list(b"y"), GREEDY.replace(max_new_tokens=4)))
    assert after[-1].finish_reason == "length"


def test_waiting_requests_run_in_order_on_one_slot():
    engine = SlotEngine(SerialDecoder(ScriptedBackend("ok")))
    tickets = [engine.submit(list(f"q{i}".encode()), GREEDY) for i in range(3)]
    for _ in range(100):
        engine.run_once()
    assert [t.finished for t in tickets] == [True, True, True]
    assert ["".join(c.text for c in t) for t in tickets] == ["ok", "ok", "ok"]
    assert engine.served == 3


def test_a_prompt_the_context_cannot_hold_is_refused_at_once():
    engine = SlotEngine(SerialDecoder(ScriptedBackend("x", n_ctx=16)))
    with pytest.raises(ContextOverflowError, match="the prompt is 20 tokens but the context holds 16"):
        engine.submit(list(range(20)), GREEDY)


def test_the_engine_thread_serves_and_stops():
    engine = SlotEngine(SerialDecoder(ScriptedBackend("threaded")))
    engine.start()
    try:
        chunks = list(engine.submit(list(b"go"), GREEDY))
    finally:
        engine.close()
    assert "".join(c.text for c in chunks) == "threaded"
