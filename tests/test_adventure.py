"""Adventure mode: actions written into the story, the prompt stopped at the next action, KoboldAI saves."""

import json

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.documents.adventure import (
    DO,
    SAY,
    STORY,
    Adventure,
    Segment,
    action_line,
    kobold_actions,
    segments,
    with_action,
)
from talesmith.runtime.documents.formats import FORMATS, Story, make_document
from talesmith.runtime.documents.importers.kobold import story_to_kobold
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.engine.generate import collect, prepare, stream
from talesmith.runtime.errors import SettingsError
from talesmith.runtime.settings import SamplingSettings

pytest_plugins = ["cli_fakes"]  # the run_cli fixture


@pytest.mark.parametrize(
    ("kind", "text", "line"),
    [
        (DO, "open the door", "> You open the door."),
        (DO, "You Open the door!", "> You open the door!"),
        (DO, "NPCs wave", "> You NPCs wave."),
        (SAY, "Hello there", '> You say, "Hello there."'),
        (SAY, '"Who goes?"', '> You say, "Who goes?"'),
        (STORY, "  The wind  rose. ", "The wind rose."),
    ],
)
def test_action_lines(kind, text, line):
    assert action_line(kind, text) == line


def test_an_action_is_written_into_the_text_between_blank_lines():
    assert with_action("The cave is dark.\n", DO, "light a torch") == "The cave is dark.\n\n> You light a torch.\n\n"
    assert with_action("", SAY, "hi") == '> You say, "hi."\n\n'
    assert with_action("The cave is dark.", STORY, "A bat flies by.") == "The cave is dark.\n\nA bat flies by."
    assert with_action("Dark.", DO, "   ") == "Dark."
    with pytest.raises(SettingsError, match="action kind 'shout' is unknown; use one of: do, say, story"):
        action_line("shout", "x")


def test_the_format_is_registered_and_stops_at_the_next_action():
    assert "adventure" in FORMATS
    doc = make_document("adventure", "The cave is dark.", {"title": "Cave", "action": "light a torch"})
    assert isinstance(doc, Adventure) and doc.story.header.title == "Cave"
    p = plan(doc)
    assert p.render() == "[ Title: Cave ]\n***\nThe cave is dark.\n\n> You light a torch.\n\n"
    assert p.stops == ("\n> ", "> ")
    with pytest.raises(SettingsError, match="--action-kind needs an --action"):
        make_document("adventure", "x", {"action_kind": "say"})


@pytest.mark.parametrize(
    ("written", "kept"),
    [("The torch flares.\n> You run away.", "The torch flares."), ("> My eyes meet yours.", ""), ("a -> b", "a -")],
)
def test_the_models_output_ends_where_it_starts_the_next_action(written, kept):
    backend = ScriptedBackend(written, n_ctx=512)
    doc = make_document("adventure", "Dark.", {"action": "light a torch"})
    prepared = prepare(backend, doc, SamplingSettings(max_new_tokens=64))
    out = collect(stream(backend, prepared.tokens, SamplingSettings(max_new_tokens=64), stops=prepared.stops))
    assert out.text == kept and out.finish_reason == "stop"


def test_actions_are_found_for_styling():
    text = "Dark.\n\n> You light a torch.\n\nIt flares."
    assert segments(text) == [Segment(0, 7, False), Segment(7, 27, True), Segment(27, 39, False)]
    assert text[7:27] == "> You light a torch."
    assert segments("") == []


def test_a_story_with_actions_is_saved_as_a_koboldai_story_with_its_actions():
    text = 'Dark.\n\n> You light a torch.\n\nIt flares.\n\n> You say, "Hi."\n\nNo answer.'
    assert kobold_actions(text[len("Dark.") :]) == [
        "\n\n> You light a torch.\n\n",
        "It flares.",
        '\n\n> You say, "Hi."\n\n',
        "No answer.",
    ]
    saved = story_to_kobold(StoryDocument(story=Story(text=text)))
    assert saved["prompt"] == "Dark." and saved["prompt"] + "".join(saved["actions"]) == text
    assert saved["actions"][0] == "\n\n> You light a torch.\n\n"
    imported = {"gamestarted": True, "prompt": "Dark.", "actions": ["\n\n> You light a torch.\n\n"]}
    more = StoryDocument(story=Story(text=text), extra={"koboldai": imported})
    assert story_to_kobold(more)["actions"] == kobold_actions(text[len("Dark.") :])


def test_generate_plays_an_action(run_cli, monkeypatch, tmp_path):
    from talesmith.runtime.engine import loading

    backend = ScriptedBackend("The torch flares.\n> You run.", n_ctx=512)
    monkeypatch.setitem(loading.OPENERS, "llama", lambda path, **options: backend)
    model = tmp_path / "scripted.gguf"
    model.write_bytes(b"not read")
    args = ["generate", "-m", model, "--format", "adventure", "--json", "The cave is dark."]
    result = run_cli(*args, "--action", "light a torch")
    sample = json.loads(result.stdout)
    assert sample["prompt"] == "The cave is dark.\n\n> You light a torch.\n\n"
    assert sample["text"] == "The torch flares." and sample["finish_reason"] == "stop"
    said = json.loads(run_cli(*args, "--action", "Hello", "--action-kind", "say").stdout)
    assert said["prompt"] == 'The cave is dark.\n\n> You say, "Hello."\n\n'
    bad = run_cli(*args, "--action", "x", "--action-kind", "shout")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: action kind 'shout' is unknown; use one of: do, say, story"
    )
