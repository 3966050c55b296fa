"""Story and chat documents: alternatives, swipes, undo history, JSON round trips, atomic saves, the library."""

import json
import os

import pytest

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import CHARACTER, USER, History, Story, StoryHeader
from talesmith.runtime.documents.prompts import render
from talesmith.runtime.documents.stories import (
    Alternatives,
    ChatDocument,
    Library,
    StoryDocument,
    atomic_write,
    dumps,
    export,
    export_markdown,
    export_text,
    from_dict,
    to_dict,
)
from talesmith.runtime.errors import InputError
from talesmith.runtime.settings import preset

AQUA = Character(
    name="Aqua",
    persona="A goddess of water who calls {{user}} a shut-in.",
    scenario="{{char}} meets {{user}}.",
    greeting="Hi, {{user}}!",
    alternate_greetings=("Yo!",),
    examples="<START>\n{{user}}: Hi\n{{char}}: Hello!\n",
    card={
        "spec": "chara_card_v2",
        "data": {"name": "Aqua", "extensions": {"talkativeness": "0.5"}},
        "x_custom": [1, 2],
    },
)


def test_generations_at_one_point_become_alternatives_and_cycle():
    doc = StoryDocument().with_text("Once")
    doc = doc.continued("Once", " upon a time")
    doc = doc.continued("Once", " there was a fox")
    assert doc.text == "Once there was a fox"
    assert doc.live_alternatives().options == (" upon a time", " there was a fox")
    assert doc.cycled(1).text == "Once upon a time"
    assert doc.cycled(-1).cycled(-1).text == "Once there was a fox"
    kept = doc.cycled(1).kept()
    assert kept.text == "Once upon a time" and kept.alternatives is None


def test_alternatives_follow_edits_before_and_after_their_point_and_a_new_point_starts_a_new_list():
    doc = StoryDocument().with_text("Once").continued("Once", " a fox").continued("Once", " a crow")
    after = doc.with_text("Once a crow flew.")  # typed in or after the continuation shown: that one changes
    assert after.live_alternatives() == Alternatives("Once", (" a fox", " a crow flew."), 1)
    assert after.cycled(1).text == "Once a fox" and after.cycled(1).cycled(1).text == "Once a crow flew."
    before = doc.with_text("Long ago, once a crow")  # an edit before them moves their point
    assert before.live_alternatives() == Alternatives("Long ago, once", (" a fox", " a crow"), 1)
    assert before.cycled(1).text == "Long ago, once a fox"
    both = doc.with_text("Twice a cat")  # the text before and the one shown both changed: nothing to follow
    assert both.live_alternatives() is None and both.alternatives is None and both.cycled(1) == both
    further = doc.continued(doc.text, " d")
    assert further.live_alternatives().base == "Once a crow" and further.live_alternatives().options == (" d",)


def test_history_undoes_redoes_and_merges_bursts():
    h = History("a").push("ab").push("abc", merge=True).push("abcd")
    assert h.present == "abcd" and h.past == ("a", "abc")
    h = h.undo()
    assert h.present == "abc" and h.can_redo
    assert h.undo().undo().present == "a" and not h.undo().undo().can_undo
    assert h.redo().present == "abcd"
    assert h.push("x").future == ()
    assert h.push(h.present) is h


def test_chat_messages_swipes_edits_and_deletes():
    chat = ChatDocument.start(AQUA)
    assert [m.swipes for m in chat.messages] == [("Hi, You!", "Yo!")]
    chat = chat.sent("Hello").replied("Hey there")
    chat = chat.swiped_reply("Second try")
    assert chat.messages[-1].swipes == ("Hey there", "Second try") and chat.messages[-1].text == "Second try"
    assert chat.cycled(1).messages[-1].text == "Hey there"
    assert chat.edited(1, "Hello!").messages[1].text == "Hello!"
    assert [m.speaker for m in chat.deleted(1).messages] == [CHARACTER, CHARACTER]


def test_chat_prompt_document_leaves_macros_to_the_prompt_and_keeps_examples():
    chat = ChatDocument.start(AQUA).sent("Who are you?")
    prompt = chat.to_chat()
    assert prompt.persona == "A goddess of water who calls {{user}} a shut-in."
    assert prompt.scenario == "{{char}} meets {{user}}."
    assert prompt.examples == ("{{user}}: Hi\n{{char}}: Hello!",)
    text = render(prompt)  # filled once, by the prompt
    assert "Aqua's Persona: A goddess of water who calls You a shut-in.\nScenario: Aqua meets You.\n" in text
    assert [(m.speaker, m.text) for m in prompt.messages] == [(CHARACTER, "Hi, You!"), (USER, "Who are you?")]
    assert len(chat.to_chat(1).messages) == 1


def test_json_round_trip_keeps_everything():
    story = StoryDocument(
        story=Story(
            text="Once upon",
            header=StoryHeader(title="T", author="A", tags=("x", "y")),
            memory="m",
            author_note="n",
            author_note_depth=2,
        ),
        name="T",
        settings=preset("lit-6b", seed=3, stop=("\n\n",)),
        preset="lit-6b",
        model="gemma",
    )
    story = story.continued("Once upon", " a time").continued("Once upon", " the hill")
    assert from_dict(json.loads(dumps(story))) == story
    chat = ChatDocument.start(AQUA).sent("Hi").replied("Yo").swiped_reply("Hey")
    again = from_dict(json.loads(dumps(chat)))
    assert again == chat
    assert again.character.card["x_custom"] == [1, 2]
    assert to_dict(again)["character"]["data"]["extensions"] == {"talkativeness": "0.5"}


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"kind": "novel"},
        {"kind": "story", "settings": {"temperature": -1}},
        {"kind": "story", "settings": {"nope": 1}},
        {"kind": "chat", "character": 3},
        {"kind": "story", "alternatives": {"base": "", "options": "x"}},
    ],
)
def test_damaged_documents_raise_input_errors(data):
    with pytest.raises(InputError):
        from_dict(data, "x.json")


def test_atomic_write_replaces_whole_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "docs" / "a.json"
    atomic_write(path, "old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == ["a.json"]
    atomic_write(path, "new")
    assert path.read_text() == "new"


def test_library_saves_lists_renames_deletes(tmp_path):
    lib = Library(tmp_path / "stories", "story")
    assert lib.entries() == []
    first = lib.new_id("My Story")
    lib.save(first, StoryDocument(name="My Story").with_text("a"))
    second = lib.new_id("My Story")
    assert second != first
    lib.save(second, StoryDocument(name="Other"))
    (tmp_path / "stories" / "broken.json").write_text("{not json")
    entries = lib.entries()
    assert {e.name for e in entries if not e.error} == {"My Story", "Other"}
    assert [e.id for e in entries if e.error] == ["broken"]
    assert lib.rename(first, "  Renamed ").name == "Renamed" and lib.load(first).text == "a"
    with pytest.raises(InputError):
        lib.rename(first, " ")
    lib.delete(second)
    assert {e.id for e in lib.entries()} == {first, "broken"}
    with pytest.raises(InputError):
        lib.load("../etc/passwd")
    with pytest.raises(InputError):
        Library(tmp_path / "stories", "chat").load(first)


def test_export_text_and_markdown(tmp_path):
    doc = StoryDocument(
        story=Story(
            text="It was dark.\n", header=StoryHeader(title="Night", author="Ann", genre="Horror", tags=("dark",))
        ),
        name="Night",
    )
    assert export(doc, tmp_path / "n.txt").read_text() == "Night\nby Ann\n\nIt was dark.\n"
    assert export_markdown(doc) == "# Night\n\n*by Ann*\n\n_Horror · dark_\n\nIt was dark.\n"
    chat = ChatDocument.start(AQUA).sent("Hi")
    assert export(chat, tmp_path / "c.txt").read_text() == "Chat with Aqua\n\nAqua: Hi, You!\n\nYou: Hi\n\n"
    untitled = StoryDocument(story=Story(text="Once."))
    assert export_text(untitled) == "Untitled story\n\nOnce.\n"
    with pytest.raises(InputError):
        export(doc, tmp_path / "n.pdf")


def test_markdown_export_keeps_line_breaks_and_paragraphs():
    poem = StoryDocument(story=Story(text="Roses are red,\nviolets blue.\n\nThe end.\n"), name="Poem")
    assert export_markdown(poem) == "# Poem\n\nRoses are red,\\\nviolets blue.\n\nThe end.\n"
    chat = ChatDocument.start(AQUA).sent("One\ntwo")
    assert export_markdown(chat).endswith("**You:** One\\\ntwo\n")


@pytest.mark.parametrize(
    "data, line",
    [
        ({"kind": "story", "text": ["a"]}, "x.json: text = ['a'] must be text"),
        ({"kind": "story", "author_note_depth": "deep"}, "x.json: author_note_depth = 'deep' must be a whole number"),
        ({"kind": "story", "header": {"tags": "a"}}, "x.json: header.tags = 'a' must be a list"),
        (
            {"kind": "story", "alternatives": {"base": "", "options": []}},
            "x.json: alternatives.options = [] must not be empty",
        ),
        ({"kind": "story", "settings": 3}, "x.json: settings = 3 must be an object"),
        ({"kind": "story", "extra": [1]}, "x.json: extra = [1] must be an object"),
        ({"kind": "chat", "messages": []}, "x.json: character is missing"),
        (
            {"kind": "chat", "character": {"name": "A"}, "messages": [{"speaker": "narrator", "swipes": ["hi"]}]},
            "x.json: messages.0.speaker = 'narrator' must be 'user' or 'character'",
        ),
        (
            {"kind": "chat", "character": {"name": "A"}, "messages": [{"speaker": "user", "swipes": "hi"}]},
            "x.json: messages.0.swipes = 'hi' must be a list",
        ),
        (
            {"kind": "chat", "character": {"name": "A"}, "lorebooks": [{"world_info": {}}]},
            "x.json: lorebooks.0.name is missing",
        ),
        ({"kind": "novel"}, "x.json is not a talesmith story or chat"),
    ],
)
def test_a_damaged_document_is_one_line_naming_the_field_and_the_value(data, line):
    with pytest.raises(InputError) as e:
        from_dict(data, "x.json")
    assert str(e.value) == line


def test_a_document_written_by_hand_keeps_numbers_as_text_and_clamps_indexes():
    doc = from_dict(
        {"kind": "story", "name": 7, "text": "a", "alternatives": {"base": "", "options": ["a"], "index": 5}}
    )
    assert isinstance(doc, StoryDocument) and doc.name == "7" and doc.alternatives.index == 0


def test_a_document_with_an_unknown_lore_placement_names_it():
    with pytest.raises(InputError) as e:
        from_dict({"kind": "story", "lore_placement": "middle"}, "x.json")
    assert str(e.value) == "x.json: lore_placement is 'middle'; use declared or anchored"
