"""Long sessions on the bundled model: cost per turn with talesmith's caching against fresh evaluation.

1. A 60-turn persona chat in a 1024-token context (it overflows several times), run twice in one
   process: with caching (prefix reuse + context shifting) and without (the cache emptied before each
   turn, so the whole prompt is evaluated). Per-turn prompt-processing time for both, the ratio of
   turn 60 to turn 5 for each, and the total-time ratio.
2. Reopening a saved story of 1,500+ tokens: time to the first new token with its saved KV state
   against without it.

With `--format instruct`, the same chat (the same messages and replies) runs in the Pygmalion format and in
the instruct format through a chat template (the bundled Gemma 3 carries none: the built-in `gemma` preset,
whose markers are its vocabulary's special tokens), and the prompt tokens each turn re-processes are
compared.

    python bench/long_session.py [--turns 60] [--format instruct]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message, Story
from talesmith.runtime.documents.instruct import InstructChat
from talesmith.runtime.engine import kvstate
from talesmith.runtime.engine.generate import collect, prepare, stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.models.resolve import bundled_model_path
from talesmith.runtime.settings import preset
from talesmith.runtime.templates import ChatTemplate
from talesmith.runtime.templates.presets import builtin_template

PERSONA = (
    "Aqua, a cheerful goddess of water. She loves festivals, lanterns and river boats, boasts about her "
    "divine powers, and cries easily when things go wrong."
)


def chat_run(backend: LlamaCppBackend, turns: int, *, caching: bool, template: ChatTemplate | None = None) -> dict:
    settings = preset("pygmalion", seed=7, max_new_tokens=24, min_new_tokens=24)
    chat = Chat("Aqua", PERSONA)
    prompt_seconds, evaluated, dropped, shifts = [], [], [], 0
    started = time.perf_counter()
    backend.reset()
    for i in range(turns):
        chat = Chat(
            chat.character,
            chat.persona,
            messages=chat.messages + (Message(USER, f"Turn {i + 1}: tell me about the lanterns on the river."),),
        )
        if not caching:
            backend.reset()
        document = InstructChat(chat, template, dt.date(2026, 1, 1)) if template else chat
        prepared = prepare(backend, document, settings)
        reply = collect(stream(backend, prepared.tokens, settings, stops=prepared.stops))
        shifts += bool(caching and backend.last_shift)
        prompt_seconds.append(reply.timing.prompt_seconds)
        evaluated.append(reply.timing.prompt_evaluated)
        dropped.append(prepared.fitted.dropped)
        chat = Chat(chat.character, chat.persona, messages=chat.messages + (Message(CHARACTER, reply.text),))
    total = time.perf_counter() - started
    # A turn's cost, smoothed over its neighbours (the machine is noisy): turns 4-6 and 58-60.
    early, late = statistics.median(prompt_seconds[3:6]), statistics.median(prompt_seconds[-3:])
    return {
        "total_seconds": round(total, 2),
        "total_prompt_seconds": round(sum(prompt_seconds), 2),
        "turn5_prompt_seconds": round(early, 4),
        "turn60_prompt_seconds": round(late, 4),
        "turn60_over_turn5": round(late / early, 2),
        "prompt_tokens_evaluated": sum(evaluated),
        "overflowed_turns": sum(1 for d in dropped if d),
        "cache_shifts": shifts,
        "per_turn_prompt_seconds": [round(s, 4) for s in prompt_seconds],
    }


REPLIES = (
    "The lanterns drift down the river, each one a wish that someone made tonight.",
    "Oh, you should see them near the bridge! They glow like a hundred tiny moons.",
    "I blessed every single one of them, of course. A goddess has her duties!",
)


def replayed_run(backend: LlamaCppBackend, turns: int, *, template: ChatTemplate | None = None) -> dict:
    """The same chat in a prompt format, with the same replies in every format (the model's own replies would
    differ between formats): per turn, the prompt is evaluated as generation would (prefix reuse and context
    shifting), then the reply's tokens as the model would have written them. Counts the prompt tokens each
    turn evaluates again; the reply's own tokens are not counted."""
    settings = preset("pygmalion", seed=7, max_new_tokens=24)
    chat = Chat("Aqua", PERSONA)
    backend.reset()
    evaluated, dropped = [], 0
    for i in range(turns):
        message = Message(USER, f"Turn {i + 1}: tell me about the lanterns on the river.")
        chat = Chat(chat.character, chat.persona, messages=chat.messages + (message,))
        document = InstructChat(chat, template, dt.date(2026, 1, 1)) if template else chat
        prepared = prepare(backend, document, settings)
        evaluated.append(backend.prefill(prepared.tokens))
        dropped += bool(prepared.fitted.dropped)
        reply = REPLIES[i % len(REPLIES)]
        written = backend.tokenize(reply if template else " " + reply, add_bos=False)  # as the model writes it
        backend.prefill(list(prepared.tokens) + written)  # the reply, in one batch
        chat = Chat(chat.character, chat.persona, messages=chat.messages + (Message(CHARACTER, reply),))
    return {
        "prompt_tokens_evaluated": sum(evaluated),
        "first_turn": evaluated[0],
        "median_later_turn": statistics.median(evaluated[1:]) if len(evaluated) > 1 else None,
        "overflowed_turns": dropped,
    }


def reopen(path: Path) -> dict:
    backend = LlamaCppBackend(path, n_ctx=2048)
    settings = preset("default", seed=3, max_new_tokens=1)
    story = Story(
        text="".join(
            f"Chapter line {i}: the keeper climbed the stairs, wound the clock and lit the lamp "
            f"while the storm beat on the glass.\n"
            for i in range(60)
        )
    )
    tokens = prepare(backend, story, settings).tokens
    with tempfile.TemporaryDirectory() as folder:
        doc = Path(folder) / "story.json"
        collect(stream(backend, tokens, settings))
        kvstate.save(backend, doc)
        results = {}
        for label in ("without_state", "with_state", "without_state_again", "with_state_again"):
            backend.reset()
            started = time.perf_counter()
            if label.startswith("with_state"):
                kvstate.restore(backend, doc, tokens)
            first = collect(stream(backend, tokens, settings))
            results[label] = (time.perf_counter() - started, first.timing.prompt_evaluated)
    backend.close()
    without = min(results["without_state"][0], results["without_state_again"][0])
    with_state = min(results["with_state"][0], results["with_state_again"][0])
    return {
        "story_tokens": len(tokens),
        "first_token_seconds_without_state": round(without, 4),
        "first_token_seconds_with_state": round(with_state, 4),
        "speedup": round(without / with_state, 1),
        "evaluated_with_state": results["with_state"][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--format", choices=("chat", "instruct"), default="chat")
    args = parser.parse_args()
    path = bundled_model_path()
    backend = LlamaCppBackend(path, n_ctx=1024)
    if args.format == "instruct":
        pygmalion = replayed_run(backend, args.turns)
        instruct = replayed_run(backend, args.turns, template=builtin_template("gemma"))
        backend.close()
        print(
            json.dumps(
                {
                    "benchmark": "long_session --format instruct",
                    "turns": args.turns,
                    "n_ctx": 1024,
                    "pygmalion": pygmalion,
                    "instruct": instruct,
                    "reprocessed_tokens_instruct_over_pygmalion": round(
                        instruct["prompt_tokens_evaluated"] / pygmalion["prompt_tokens_evaluated"], 2
                    ),
                }
            )
        )
        return
    on = chat_run(backend, args.turns, caching=True)
    print(json.dumps({"caching_on": on}), file=sys.stderr, flush=True)  # progress: the run is long
    off = chat_run(backend, args.turns, caching=False)
    backend.close()
    print(
        json.dumps(
            {
                "benchmark": "long_session",
                "turns": args.turns,
                "n_ctx": 1024,
                "caching_on": on,
                "caching_off": off,
                "total_time_ratio_off_over_on": round(off["total_seconds"] / on["total_seconds"], 2),
                "prompt_time_ratio_off_over_on": round(off["total_prompt_seconds"] / on["total_prompt_seconds"], 2),
                "reopen": reopen(path),
            }
        )
    )


if __name__ == "__main__":
    main()
