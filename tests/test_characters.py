"""The character library: cards listed with initials, creator and tags, searched, their chats, deleted."""

from __future__ import annotations

import json

import pytest
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
