"""The lorebook editor (ctrl+l) driven through the pilot, and its pure edits."""

from __future__ import annotations

import json

import pytest
from test_tui import make_app, saved, settle
from textual.widgets import Input, TextArea
from tui_fakes import TakesBackend

from talesmith.runtime.documents.lorebook import Entry, Lorebook
from talesmith.tui.lorebook import EntryEditor, LorebookScreen, describe, replace_entry, rows, toggled


def test_pure_edits():
    books = (Lorebook("a", (Entry(("x",), "X.", uid=0),)), Lorebook("b", (Entry(("y",), "Y.", uid=4),)))
    assert rows(books) == [(0, 0), (1, 0)]
    added = replace_entry(books, 1, 1, Entry(("z",), "Z.", uid=5))
    assert [e.uid for e in added[1].entries] == [4, 5] and added[1].entries[1].book == "b"
    assert replace_entry(added, 0, 0, None)[0].entries == ()
    assert toggled(books, 0, 0)[0].entries[0].enabled is False
    assert describe(toggled(books, 0, 0)[0].entries[0]) == "x  [x · off]  before · order 100"
    assert (
        describe(Entry((), "C.", constant=True, position="depth", depth=2))
        == "entry 0  [constant]  depth 2 · order 100"
    )


async def add_entry(pilot, keys: str, content: str) -> None:
    """Open the lorebook editor (ctrl+l), add an entry with these keys and content and save it (back in the editor)."""
    app = pilot.app
    await pilot.press("ctrl+l")
    await pilot.pause()
    assert isinstance(app.screen, LorebookScreen)
    await pilot.press("a")
    await pilot.pause()
    assert isinstance(app.screen, EntryEditor)
    app.screen.query_one("#keys", Input).value = keys
    app.screen.query_one("#content", TextArea).load_text(content)
    await pilot.press("ctrl+s")
    await pilot.pause()


@pytest.mark.asyncio
async def test_add_an_entry_attach_a_file_and_the_story_uses_them(tmp_path):
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["harbor"], "content": "The harbor is closed."}}}))
    backend = TakesBackend([" Then."], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        story = app.screen
        story.query_one("#editor").focus()
        await pilot.press(*"The lighthouse by the harbor.")
        await add_entry(pilot, "lighthouse", "The lighthouse is haunted.")
        await pilot.press("o")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = str(world)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is story
        assert [len(b.entries) for b in story.doc.lorebooks] == [1, 1]
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "The lighthouse is haunted.\nThe harbor is closed.\nThe lighthouse by the harbor."
    [doc] = saved(tmp_path)
    assert [b["name"] for b in doc["lorebooks"]] == ["Untitled story lore", "world"]


@pytest.mark.asyncio
async def test_escape_leaves_the_lorebooks_as_they_were(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        story = app.screen
        await pilot.press("ctrl+l")
        await pilot.pause()
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("ctrl+s")  # no keys: refused, the editor stays
        await pilot.pause()
        assert isinstance(app.screen, EntryEditor)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert app.screen is story and story.doc.lorebooks == ()


@pytest.mark.asyncio
async def test_global_lorebooks_apply_to_every_story(tmp_path):
    folder = tmp_path / "data" / "lorebooks" / "global"
    folder.mkdir(parents=True)
    (folder / "world.json").write_text(
        json.dumps({"entries": {"0": {"uid": 0, "key": [], "constant": True, "content": "It is always winter."}}})
    )
    backend = TakesBackend([" Then."], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.screen.query_one("#editor").focus()
        await pilot.press(*"Snow fell.")
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "It is always winter.\nSnow fell."
        (folder / "broken.json").write_text("{")
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "Snow fell. Then."  # an unreadable global lorebook: none, and a warning


@pytest.mark.asyncio
async def test_the_import_key_brings_in_a_sillytavern_chat_and_a_preset(tmp_path):
    from test_tui_chat import CARD, import_card, png_card

    chat = tmp_path / "Aqua.jsonl"
    chat.write_text(
        '{"user_name":"Kazuma","character_name":"Aqua","create_date":1}\n'
        '{"name":"Aqua","is_user":false,"mes":"Hi!","swipes":["Hi!","Yo!"],"swipe_id":0}\n'
        '{"name":"Kazuma","is_user":true,"mes":"Hello."}\n'
    )
    preset = tmp_path / "Godlike.json"
    preset.write_text(json.dumps({"temp": 0.7, "rep_pen": 1.1, "top_a": 0.75}))
    card = tmp_path / "aqua.png"
    card.write_bytes(png_card(CARD))
    backend = TakesBackend([" Welcome back."], n_ctx=2048)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, card)  # the card first: the chat then finds its character
        await import_card(pilot, chat)
        assert screen.doc.character.persona == "A cheerful goddess of water."
        assert [m.swipes for m in screen.doc.messages] == [("Hi!", "Yo!"), ("Hello.",)]
        assert screen.doc.user_name == "Kazuma"
        await import_card(pilot, preset)
        assert (tmp_path / "data" / "presets" / "godlike.json").is_file()
        await pilot.press("ctrl+q")
    assert any(c["name"] == "Chat with Aqua" and len(c["messages"]) == 2 for c in saved(tmp_path, "chats"))


@pytest.mark.asyncio
async def test_attach_a_library_lorebook_by_name_and_choose_the_placement(tmp_path):
    library = tmp_path / "data" / "lorebooks"
    library.mkdir(parents=True)
    entry = {"uid": 0, "key": ["harbor"], "content": "The harbor is closed."}
    (library / "honkai-impact-rpg.json").write_text(json.dumps({"entries": {"0": entry}}))
    backend = TakesBackend([" Then."], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        story = app.screen
        story.query_one("#editor").focus()
        await pilot.press(*"Night.", "enter", *"The harbor.", "enter", *"Calm.")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert "SillyTavern's placement" in str(app.screen.query_one("#placement").render())
        await pilot.press("o")
        await pilot.pause()
        assert str(app.screen.query_one("Label").render()) == "Lorebook name or file (honkai-impact-rpg)"
        app.screen.query_one("#answer", Input).value = "Honkai Impact RPG"
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        assert "cache-friendly" in str(app.screen.query_one("#placement").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is story and story.doc.lore_placement == "anchored"
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "Night.\nThe harbor.\nThe harbor is closed.\nCalm."  # where it fired
    [doc] = saved(tmp_path)
    assert doc["lore_placement"] == "anchored" and [b["name"] for b in doc["lorebooks"]] == ["honkai-impact-rpg"]
