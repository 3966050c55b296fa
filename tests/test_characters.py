"""The character library: cards listed with initials, creator and tags, searched, their chats, deleted."""

from __future__ import annotations

import json

import pytest
from test_lorebook_tui import add_entry
from test_tui import make_app, settle
from textual.widgets import Input, OptionList
from tui_fakes import TakesBackend

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.characters import (
    CardEntry,
    chats_of,
    delete_card,
    initials,
    list_cards,
    search,
)
from talesmith.runtime.documents.stories import ChatDocument, Library
from talesmith.tui.characters import CharacterLibrary

pytest_plugins = ["cli_fakes"]  # the run_cli fixture


def card(name, creator="", tags=()):
    data = {"name": name, "description": f"{name}.", "first_mes": "Hi!", "creator": creator, "tags": list(tags)}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data" / "characters"
    folder.mkdir(parents=True)
    (folder / "seraphina.json").write_text(json.dumps(card("Seraphina", "OtisAlejandro", ["fantasy", "healer"])))
    (folder / "aqua.json").write_text(json.dumps(card("Aqua", "Konosuba fan", ["comedy"])))
    (folder / "broken.json").write_text("{not json")
    Library(tmp_path / "data" / "chats", "chat").save("c1", ChatDocument.start(Character(name="Aqua", greeting="Yo")))
    return tmp_path / "data"


def test_initials():
    names = ("Seraphina", "Hatsune Miku", "小鳥遊ホシノ", "  ", "x_y")
    assert [initials(n) for n in names] == ["SE", "HM", "小鳥", "?", "XY"]


def test_cards_are_listed_searched_and_deleted(data):
    cards = list_cards(data)
    assert [(c.name, c.creator, c.tags, c.initials) for c in cards if not c.error] == [
        ("Aqua", "Konosuba fan", ("comedy",), "AQ"),
        ("Seraphina", "OtisAlejandro", ("fantasy", "healer"), "SE"),
    ]
    assert [c.path.name for c in cards if c.error] == ["broken.json"]
    assert [c.name for c in search(cards, "HEAL fant")] == ["Seraphina"]
    assert [c.name for c in search(cards, "konosuba")] == ["Aqua"]
    aqua = cards[0]
    assert chats_of(data, aqua) == [("c1", "Chat with Aqua")] and chats_of(data, cards[-1]) == []
    delete_card(aqua)
    assert [c.name for c in list_cards(data)] == ["broken", "Seraphina"]
    delete_card(CardEntry(data / "characters" / "gone.json", "gone"))  # already gone: nothing to do


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_start_a_chat_from_the_library_and_open_a_cards_chat(data, size):
    backend = TakesBackend([" Hello."], n_ctx=1024)
    app = make_app(data.parent, backend, mode="chat")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        chat = app.screen
        await pilot.press("alt+c")
        await pilot.pause()
        assert isinstance(app.screen, CharacterLibrary)
        assert app.screen.query_one(OptionList).option_count == 3
        await pilot.press(*"heal")
        await pilot.pause()
        assert [c.name for c in app.screen.shown] == ["Seraphina"]
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is chat and chat.doc.character.name == "Seraphina" and chat.doc.messages[0].text == "Hi!"
        await pilot.press("alt+c")
        await pilot.pause()
        app.screen.query_one("#search", Input).value = "aqua"
        await pilot.pause()
        await pilot.press("alt+o")
        await pilot.pause()
        assert app.screen.chats == [("c1", "Chat with Aqua")]
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is chat and chat.doc_id == "c1"
        await pilot.press("alt+c")
        await pilot.pause()
        await pilot.press(*"aqua", "ctrl+d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert [c.name for c in app.screen.cards] == ["broken", "Seraphina"]
        assert not (data / "characters" / "aqua.json").exists() and (data / "chats" / "c1.json").exists()


def test_a_card_is_exported_as_png_with_its_picture_and_as_json(data, tmp_path):
    from talesmith.runtime.documents.cards import blank_png, load_card, png_text_chunks
    from talesmith.runtime.documents.characters import export_card, keep_avatar

    sera = next(c for c in list_cards(data) if c.name == "Seraphina")
    picture = blank_png()  # stands for the card's own picture
    source = tmp_path / "Seraphina.png"
    source.write_bytes(picture)
    assert keep_avatar(source, sera.path) == data / "characters" / "seraphina.png"
    assert keep_avatar(sera.path, sera.path) is None  # a JSON card has no picture
    png, card = export_card(sera, data / "exports")
    assert (png.name, card.name) == ("seraphina.png", "seraphina.json")
    out = png.read_bytes()
    assert out.startswith(picture[: picture.index(b"IEND") - 4])  # the picture's own chunks, first and whole
    assert set(png_text_chunks(out)) == {"chara", "ccv3"}
    read = load_card(png)  # V3 first, as SillyTavern reads it
    assert read.name == "Seraphina" and read.card["spec"] == "chara_card_v3" and read.card["data"]["tags"]
    assert json.loads(card.read_text())["spec"] == "chara_card_v2"
    again = export_card(sera, data / "exports", v3=True)  # nothing written over
    assert [p.name for p in again] == ["seraphina-2.png", "seraphina-2.json"]
    assert json.loads(again[1].read_text())["spec"] == "chara_card_v3"


def test_the_editor_sets_creator_tags_version_and_alternate_greetings():
    from talesmith.runtime.documents.cards import card_details, to_card, with_details
    from talesmith.tui.cardeditor import join_greetings, split_greetings

    text = join_greetings(("Hello.", "Hi!\nWho are you?"))
    assert text == "Hello.\n<GREETING>\nHi!\nWho are you?"
    assert split_greetings(text) == ("Hello.", "Hi!\nWho are you?") and split_greetings("  ") == ()
    c = with_details(Character(name="Aqua"), creator="me", tags=("comedy", "goddess"), version="1.2")
    assert card_details(c) == ("me", ("comedy", "goddess"), "1.2")
    assert to_card(c)["data"]["character_version"] == "1.2"


@pytest.mark.asyncio
async def test_edit_a_cards_details_in_the_app(data):
    from talesmith.tui.cardeditor import CharacterEditor

    app = make_app(data.parent, TakesBackend([" Hi."], n_ctx=1024), mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        chat = app.screen
        await pilot.press("alt+c", *"sera", "enter")
        await pilot.pause()
        await pilot.press("f5")
        await pilot.pause()
        editor = app.screen
        assert isinstance(editor, CharacterEditor) and editor.query_one("#creator", Input).value == "OtisAlejandro"
        assert editor.query_one("#tags", Input).value == "fantasy, healer"
        editor.query_one("#tags", Input).value = "fantasy, healer, forest"
        editor.query_one("#character_version", Input).value = "2"
        from textual.widgets import TextArea

        editor.query_one("#alternate_greetings", TextArea).load_text("Awake?\n<GREETING>\nRest now.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is chat and chat.doc.character.alternate_greetings == ("Awake?", "Rest now.")
    kept = json.loads((data / "characters" / "seraphina.json").read_text())["data"]
    assert kept["tags"] == ["fantasy", "healer", "forest"] and kept["character_version"] == "2"
    assert kept["alternate_greetings"] == ["Awake?", "Rest now."] and kept["creator"] == "OtisAlejandro"


@pytest.mark.asyncio
async def test_a_png_cards_picture_is_kept_on_import(tmp_path):
    from talesmith.runtime.documents.cards import blank_png, parse_json_card, png_with_card

    source = tmp_path / "Nia.png"
    source.write_bytes(png_with_card(blank_png(), parse_json_card(json.dumps(card("Nia", "me")))))
    app = make_app(tmp_path, TakesBackend([" Hi."], n_ctx=1024), mode="chat")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f7")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = str(source)
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.doc.character.name == "Nia"
    assert (tmp_path / "data" / "characters" / "nia.png").read_bytes() == source.read_bytes()


REAL = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "real"


def test_a_cards_lorebook_is_written_back_as_it_was_read():
    from talesmith.runtime.documents.cards import load_card
    from talesmith.runtime.documents.worldinfo import card_lorebook, from_character_book, to_character_book

    png = REAL / "card-st-seraphina" / "default_Seraphina.png"
    if not png.exists():
        pytest.skip("../shared/real is not here")
    card = load_card(png).card
    book = card_lorebook(card)
    assert book is not None and len(book.entries) == 4
    assert to_character_book(book) == card["data"]["character_book"]  # unchanged entries exactly as read
    import dataclasses

    edited = dataclasses.replace(book.entries[0], content="Eldoria is a kingdom.", sticky=2)
    written = to_character_book(dataclasses.replace(book, entries=(edited, *book.entries[1:])))
    again = from_character_book(written, "again")
    assert again.entries[0].content == "Eldoria is a kingdom." and again.entries[0].sticky == 2
    assert again.entries[1:] == tuple(dataclasses.replace(e, book=again.name) for e in book.entries[1:])
    assert written["entries"][1:] == card["data"]["character_book"]["entries"][1:]


@pytest.mark.asyncio
async def test_edit_the_cards_lorebook_in_the_card_editor(data):
    backend = TakesBackend([" Hi."], n_ctx=1024)
    app = make_app(data.parent, backend, mode="chat")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        chat = app.screen
        await pilot.press("alt+c", *"sera", "enter")
        await pilot.pause()
        await pilot.press("f5")
        await pilot.pause()
        await add_entry(pilot, "glade", "The glade heals.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "(1 entries)" in str(app.screen.query_one("#book-hint").render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is chat and chat.doc.character.book_entries == 1
        chat.query_one("#composer").focus()
        await pilot.press(*"The glade?", "enter")
        await settle(pilot)
        assert backend.prompts[-1].startswith("The glade heals.\n")  # before the character, as a card's lore
    kept = json.loads((data / "characters" / "seraphina.json").read_text())["data"]["character_book"]
    assert [(e["keys"], e["content"]) for e in kept["entries"]] == [(["glade"], "The glade heals.")]


def test_talesmith_import_keeps_a_png_cards_picture(run_cli, tmp_path):
    from talesmith.runtime.documents.cards import blank_png, parse_json_card, png_with_card

    source = tmp_path / "Nia.png"
    source.write_bytes(png_with_card(blank_png(), parse_json_card(json.dumps(card("Nia")))))
    result = run_cli("import", "--data-dir", tmp_path / "d", source)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d" / "characters" / "nia.png").read_bytes() == source.read_bytes()
    json_card = tmp_path / "nia.json"
    json_card.write_text(json.dumps(card("Nia", "other")))
    assert run_cli("import", "--data-dir", tmp_path / "d", "--keep-both", json_card).returncode == 0
    assert sorted(p.name for p in (tmp_path / "d" / "characters").iterdir()) == ["nia-2.json", "nia.json", "nia.png"]
