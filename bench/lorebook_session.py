"""What a lorebook costs a long chat in re-processed prompt tokens.

A scripted 40-turn persona chat whose messages mention a lorebook's keys now and then, so entries fire
and go quiet. Each turn's prompt is built exactly as `generate` builds it (prompt plan, lore, fit) and
tokenized with the bundled model's tokenizer; the tokens re-processed are those after the prefix it
shares with the previous prompt plus the reply (the same common-prefix rule the backends' caches use).
Runs, in one process: no lorebook (the baseline); SillyTavern's placement, the default (entries before
the character definition, quiet ones held while the budget holds them), the same with sticky entries,
and exactly SillyTavern's set (nothing held) before the character and at depth 4; the cache-friendly
anchored placement (with the default budget, and with a budget so small that quiet entries must leave).

    python bench/lorebook_session.py [--turns 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import llama_cpp

from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message
from talesmith.runtime.documents.lorebook import ANCHORED, BEFORE, DECLARED, DEPTH, Entry, Lore, Lorebook, LoreSettings
from talesmith.runtime.documents.prompts import fit, plan
from talesmith.runtime.engine.protocol import common_prefix
from talesmith.runtime.models.resolve import bundled_model_path

PERSONA = (
    "Aqua, a cheerful goddess of water. She loves festivals, lanterns and river boats, boasts about her "
    "divine powers, and cries easily when things go wrong."
)
LORE = {
    "Axel": "Axel is a town of beginner adventurers, with a guild hall, a market square and a river harbor.",
    "guild": "The Adventurers' Guild posts quests on a board; the receptionist Luna stamps every card.",
    "Darkness": "Darkness is a crusader who never hits anything with her sword but can take any blow.",
    "Megumin": "Megumin is an archwizard who knows one spell, Explosion, and faints after casting it.",
    "lich": "Wiz the lich runs a magic shop in Axel and sells items nobody wants.",
    "Demon King": "The Demon King's generals guard his castle; three of them have already fallen.",
    "toad": "Giant toads swallow adventurers whole; they hate metal and sleep through the winter.",
    "lanterns": "On the festival of lanterns the river boats carry candles downstream to the sea.",
}
TOPICS = list(LORE)


def script(turns: int) -> list[tuple[str, str]]:
    """(user message, reply) per turn: a key in roughly half the user messages, some replies echo it."""
    out = []
    for i in range(turns):
        key = TOPICS[(i * 3) % len(TOPICS)]
        user = f"Turn {i + 1}: what do you know about {key}?" if i % 2 == 0 else f"Turn {i + 1}: and then what?"
        reply = (
            f"Oh, {key}! Everyone knows that, I am a goddess after all."
            if i % 4 == 0
            else "Hmm, let me think about it while we walk along the river."
        )
        out.append((user, reply))
    return out


def run(tokenize, turns: int, lore: Lore | None, n_ctx: int) -> dict:
    count = lambda t: len(tokenize(t))  # noqa: E731
    messages: list[Message] = []
    cache: list[int] = []
    reprocessed, changes, lore_seconds, active_before = [], 0, 0.0, set()
    placed_changes, placed_before = 0, set()
    for user, reply in script(turns):
        messages.append(Message(USER, user))
        chat = Chat("Aqua", PERSONA, messages=tuple(messages), user_name="Kazuma")
        prompt_plan = plan(chat)
        if lore is not None:
            started = time.perf_counter()
            prompt_plan, activation = lore.for_document(chat).apply(prompt_plan, count_tokens=count, n_ctx=n_ctx)
            lore_seconds += time.perf_counter() - started
            active = {a.entry.uid for a in activation.entries}
            changes += len(active ^ active_before)
            active_before = active
            placed = active | {a.entry.uid for a in activation.lingering}
            placed_changes += placed != placed_before
            placed_before = placed
        text = fit(prompt_plan, count, n_ctx - 64).text
        tokens = tokenize(text)
        reprocessed.append(len(tokens) - common_prefix(cache, tokens))
        cache = tokenize(text + " " + reply)  # the reply as if the model had just written it
        messages.append(Message(CHARACTER, reply))
    return {
        "reprocessed_total": sum(reprocessed),
        "reprocessed_mean": round(statistics.mean(reprocessed), 1),
        "reprocessed_median": statistics.median(reprocessed),
        "final_prompt_tokens": len(tokens),
        "entries_fired_or_quiet": changes,
        "turns_the_placed_set_changed": placed_changes,
        "lore_ms_per_turn": round(1000 * lore_seconds / len(reprocessed), 2),
        "per_turn": reprocessed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--ctx", type=int, default=4096)
    args = parser.parse_args()
    llm = llama_cpp.Llama(str(bundled_model_path()), vocab_only=True, verbose=False)
    tokenize = lambda t: llm.tokenize(t.encode("utf-8"), add_bos=True, special=False)  # noqa: E731

    def book(position: str, sticky: int = 0) -> Lorebook:
        return Lorebook(
            "konosuba",
            tuple(
                Entry(keys=(k,), content=v, uid=i, position=position, depth=4, sticky=sticky)
                for i, (k, v) in enumerate(LORE.items())
            ),
        )

    exact = LoreSettings(placement=DECLARED, hold=False)
    runs = {
        "no_lorebook": None,
        "sillytavern_before_character_held": Lore((book(BEFORE),), LoreSettings()),
        "sillytavern_before_character_sticky_4": Lore((book(BEFORE, sticky=4),), exact),
        "sillytavern_before_character_exact": Lore((book(BEFORE),), exact),
        "sillytavern_at_depth_4_exact": Lore((book(DEPTH),), exact),
        "anchored": Lore((book(BEFORE),), LoreSettings(placement=ANCHORED)),
        # a budget that holds about three entries: quiet ones must leave to make room
        "anchored_budget_64_tokens": Lore((book(BEFORE),), LoreSettings(placement=ANCHORED, budget_tokens=64)),
    }
    results = {name: run(tokenize, args.turns, lore, args.ctx) for name, lore in runs.items()}
    base = results["no_lorebook"]["reprocessed_total"]
    summary = {
        name: {
            "reprocessed_total": r["reprocessed_total"],
            "ratio_to_no_lorebook": round(r["reprocessed_total"] / base, 2),
            "entries_fired_or_quiet": r["entries_fired_or_quiet"],
            "turns_the_placed_set_changed": r["turns_the_placed_set_changed"],
            "lore_ms_per_turn": r["lore_ms_per_turn"],
        }
        for name, r in results.items()
    }
    print(json.dumps({"turns": args.turns, "summary": summary, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
