"""Lorebook keys that would cost too much: a regex that expands past what can be compiled, and regex keys
that together would take minutes. Each entry is left out of the prompt and named; nothing hangs."""

from __future__ import annotations

import json

import pytest

from talesmith.runtime.documents import lorebook
from talesmith.runtime.documents.lorebook import (
    MAX_REGEX_REPEAT,
    NEVER,
    Entry,
    Lorebook,
    activate,
    parse_regex_key,
    repeat_size,
    skipped_notes,
)

pytest_plugins = ["cli_fakes"]

HUGE = "/(?:(?:a{1000}){1000}){100}/"


def count(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize(
    ("pattern", "size"),
    [
        ("dragon", 6),
        ("a{1000}", 1000),
        ("(?:a{1000}){1000}", 1_000_000),
        ("(?:ab){3}c", 7),
        ("[a-z{}]{5}", 5),
        (r"\{3\}", 3),
        ("a{2,4}", 4),
        ("a{,3}", 3),
        ("(a+)+$", 2),
        ("(?P<x>ab)(?i){2}", 2),
        ("x{y}", 4),
    ],
)
def test_repeat_size_is_an_upper_bound_read_from_the_text(pattern, size):
    assert repeat_size(pattern) == size


def test_a_regex_key_too_large_to_compile_is_never_compiled():
    assert parse_regex_key(HUGE) is NEVER
    assert parse_regex_key("/a{1000}/") is not NEVER
    assert repeat_size("(?:(?:a{1000}){1000}){100}") > MAX_REGEX_REPEAT


def test_its_entry_is_left_out_and_named():
    book = Lorebook(
        "Hostile",
        (
            Entry(uid=1, keys=(HUGE,), content="never placed", name="Bomb"),
            Entry(uid=2, keys=("lighthouse",), content="The lighthouse is haunted."),
        ),
    )
    activation = activate([book], ["aaaa the lighthouse"], count_tokens=count, n_ctx=512)
    assert [a.entry.uid for a in activation.entries] == [2]
    assert skipped_notes(activation) == (
        "lorebook entry 'Bomb' was left out: its regex key repeats to more than 100,000 items, too large to compile",
    )


def test_regex_keys_share_one_time_bound_per_prompt(monkeypatch):
    monkeypatch.setattr(lorebook, "SCAN_BUDGET", 0.3)
    entries = tuple(Entry(uid=i, keys=("/(a+)+$/",), content=f"lore {i}", name=f"slow {i}") for i in range(1500))
    book = Lorebook("Slow", (*entries, Entry(uid=9999, keys=("keeper",), content="The keeper.", name="plain")))
    message = "keeper " + "a" * 5000 + "!"
    activation = activate([book], [message], count_tokens=count, n_ctx=4096)
    assert [a.entry.uid for a in activation.entries] == [9999]  # plain keys are still searched
    reasons = dict(activation.skipped)
    assert len(reasons) == 1500
    assert set(reasons.values()) <= {
        "its regex key took more than 50 ms",
        "the 0.3 s for all regex keys of this prompt were spent",
    }
    assert reasons["slow 1499"] == "the 0.3 s for all regex keys of this prompt were spent"


def test_generate_names_the_entries_it_left_out(tmp_path, run_cli, scripted_model):
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": [HUGE], "content": "x", "comment": "Bomb"}}}))
    result = run_cli("generate", "--model", scripted_model, "--lorebook", world, "--max-new-tokens", "3", "aaa")
    assert result.returncode == 0, result.stderr
    assert (
        "note: lorebook entry 'Bomb' was left out: its regex key repeats to more than 100,000 items, too large to "
        "compile" in " ".join(result.stderr.split())
    )
