"""Lorebooks from the command line and in batch: one prompt builder for `generate`, `batch` and the library."""

import json
import subprocess
import sys

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.batch import RecordSpec, Row, Task, decode_task
from talesmith.runtime.documents.formats import make_document, with_lore
from talesmith.runtime.documents.worldinfo import load_lore
from talesmith.runtime.engine.generate import prepare
from talesmith.runtime.settings import SamplingSettings

TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]
SETTINGS = SamplingSettings(max_new_tokens=4, seed=3)
WORLD = {
    "entries": {
        "0": {"uid": 0, "key": ["lighthouse"], "content": "The lighthouse is haunted.", "order": 10},
        "1": {"uid": 1, "key": ["storm"], "content": "Storms here last a week.", "order": 20, "position": 1},
    }
}


def talesmith(*args):
    return subprocess.run([*TALESMITH, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def world(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(json.dumps(WORLD))
    return path


def test_batch_and_generate_build_the_same_prompt(world):
    lore = load_lore([world])
    backend = ScriptedBackend("ok", n_ctx=512)
    fields = {"title": "Keeper"}
    document = make_document("story", "The lighthouse stood in the storm.", fields)
    direct = prepare(backend, with_lore(document, lore), SETTINGS)
    record, _ = decode_task(
        backend,
        Task(Row("r", "The lighthouse stood in the storm.", {}, {}), 0),
        RecordSpec("story", fields, SETTINGS, "m", "x", lore=lore),
    )
    assert (
        record["prompt"]
        == direct.fitted.text
        == (
            "The lighthouse is haunted.\n[ Title: Keeper ]\n***\nStorms here last a week.\nThe lighthouse stood in the storm."
        )
    )
    assert [a.entry.uid for a in direct.lore.entries] == [1, 0]


def test_a_file_that_is_not_a_lorebook_is_one_line(tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": 1}')
    result = talesmith("generate", "--lorebook", bad, "hi")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "notes.json is not a lorebook" in result.stderr


def test_config_lorebooks_must_be_a_list_of_paths(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('lorebooks = "world.json"\n')
    result = talesmith("generate", "--config", config, "hi")
    assert result.returncode == 2 and "lorebooks = 'world.json' must be a list of paths" in result.stderr


@pytest.mark.model
def test_generate_with_lorebooks_from_the_option_and_the_config(tmp_path, world):
    other = tmp_path / "more.json"
    other.write_text(
        json.dumps({"entries": {"0": {"uid": 0, "key": [], "content": "It is 1890.", "constant": True, "order": 1}}})
    )
    config = tmp_path / "c.toml"
    config.write_text('format = "story"\nlorebooks = ["more.json"]\n[sampling]\nmax_new_tokens = 4\nseed = 1\n')
    result = talesmith("generate", "--config", config, "--lorebook", world, "--json", "The lighthouse was dark.")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == "It is 1890.\nThe lighthouse is haunted.\nThe lighthouse was dark."


@pytest.mark.model
def test_batch_with_a_lorebook(tmp_path, world):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "prompt": "A storm came."}\n{"id": "b", "prompt": "Calm seas."}\n')
    out = tmp_path / "out.jsonl"
    result = talesmith("batch", rows, "-o", out, "--format", "story", "--lorebook", world, "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    prompts = {r["id"]: r["prompt"] for r in map(json.loads, out.read_text().splitlines())}
    assert prompts == {"a": "Storms here last a week.\nA storm came.", "b": "Calm seas."}


def test_lorebook_probability_follows_the_sampling_seed():
    lore = load_lore([])
    assert lore is None
    from talesmith.runtime.documents.lorebook import Entry, Lore, Lorebook

    lore = Lore((Lorebook("b", tuple(Entry(("x",), f"Entry {i}.", uid=i, probability=50) for i in range(20))),))
    backend = ScriptedBackend("ok", n_ctx=2048)
    document = make_document("raw", "x")
    texts = [prepare(backend, with_lore(document, lore), SETTINGS.replace(seed=s)).fitted.text for s in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


def test_lorebooks_reach_every_kind_of_prompt_document_one_way():
    from talesmith.runtime.documents.adventure import Adventure
    from talesmith.runtime.documents.formats import Chat, RawText, Story
    from talesmith.runtime.documents.lorebook import Entry, Lore, Lorebook

    lore = Lore((Lorebook("b", (Entry(("x",), "Lore."),)),))
    assert with_lore(Story("x"), lore).lore is lore and with_lore(Chat("A"), lore).lore is lore
    assert with_lore(RawText("x"), lore).lore is lore
    assert with_lore(RawText("x"), None) == RawText("x")
    held = with_lore(Adventure(Story("x")), lore)  # a document that holds a story gives it the lorebooks
    assert held.story.lore is lore and held.lore is lore
    prompt = prepare(ScriptedBackend("ok", n_ctx=512), with_lore(RawText("x"), lore), SETTINGS).fitted.text
    assert prompt == "Lore.\nx"
