"""Everything a user, a model or a card wrote is shown as plain text: brackets are never markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tui import make_app, settle, status
from test_tui_chat import import_card, messages, png_card
from textual.widgets import Input, OptionList, Static
from tui_fakes import TakesBackend

from talesmith.runtime.documents.formats import Story, StoryHeader
from talesmith.runtime.documents.stories import Library, StoryDocument

pytestmark = pytest.mark.asyncio

HOSTILE = '[b]bold[/b] [/] [Seraphina\'s Personality= "caring"] [@click=app.quit]quit[/] [Narrator]'
REAL_CARD = Path(__file__).parent.parent.parent / "shared" / "real" / "card-st-seraphina" / "default_Seraphina.png"


def shown(widget) -> str:
    return str(widget.render())


async def test_a_card_a_message_and_a_reply_with_brackets_are_shown_as_written(tmp_path):
    backend = TakesBackend([" [Narrator] She [b]smiles[/b]. [/]"], n_ctx=4096)
    app = make_app(tmp_path, backend, mode="chat")
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "[Narrator]",
            "description": HOSTILE,
            "scenario": "[/] the glade",
            "first_mes": "[b]Welcome[/b], {{user}} [/]",
        },
    }
    path = tmp_path / "bracket [b] card.png"
    path.write_bytes(png_card(card))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, path)
        panel = shown(screen.query_one("#character", Static))
        assert "[Narrator]" in panel and HOSTILE[:60] in panel and "[/] the glade" in panel
        assert messages(screen) == ["[Narrator]\n[b]Welcome[/b], You [/]"]
        await pilot.press(*"[Narrator] The door of the guild opens.", "enter")
        await settle(pilot)
        assert messages(screen)[1:] == [
            "You\n[Narrator] The door of the guild opens.",
            "[Narrator]\n[Narrator] She [b]smiles[/b]. [/]",
        ]
        assert any("Imported [Narrator]" in n.message for n in app.notified)
        assert app.is_running  # [@click=app.quit] was never a link


async def test_titles_names_and_paths_in_the_library_and_status_line_are_plain(tmp_path):
    story = StoryDocument(story=Story(text="x", header=StoryHeader(title=HOSTILE)), name=HOSTILE)
    Library(tmp_path / "data" / "stories", "story").save("s", story)
    app = make_app(tmp_path, model_name="[b]model[/] [/]")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        assert status(app.screen).startswith("[b]model[/] [/] · scripted")
        await pilot.press("ctrl+o")
        await pilot.pause()
        option = app.screen.query_one("#entries", OptionList).get_option_at_index(0)
        assert str(option.prompt).startswith(HOSTILE)
        await pilot.press("r")
        await pilot.pause()
        assert "[@click=app.quit]quit[/] [Narrator]" in shown(app.screen.query_one("Label"))
        assert app.screen.query_one("#answer", Input).value == HOSTILE
        await pilot.press("escape", "escape")
        app.notify("a [b]note[/] [/] with [Narrator]")
        await pilot.pause()
        assert app.is_running


async def test_a_missing_card_path_with_brackets_is_one_plain_notification(tmp_path):
    app = make_app(tmp_path, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await import_card(pilot, tmp_path / "[/]odd[b].png")
        assert any("[/]odd[b].png does not exist" in n.message and not n.markup for n in app.notified)


@pytest.mark.skipif(not REAL_CARD.exists(), reason="the real SillyTavern card is not here")
async def test_sillytavern_s_default_card_imports_and_shows(tmp_path):
    app = make_app(tmp_path, TakesBackend([" *She smiles.*"], n_ctx=8192), mode="chat")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, REAL_CARD)
        assert screen.doc.character.name == "Seraphina"
        panel = shown(screen.query_one("#character", Static))
        assert panel.startswith("Seraphina\n\n[Seraphina's Personality=")
        assert "Lorebook: 4 entries from the card (ctrl+l)" in panel
        assert messages(screen)[0].startswith("Seraphina\n*You wake with a start")
        await pilot.press(*"[Narrator] Hello?", "enter")
        await settle(pilot)
        assert messages(screen)[-1] == "Seraphina\n*She smiles.*"
        await pilot.press("f5")
        await pilot.pause()
        assert app.screen.query_one("#creator_notes").text.startswith("ST Default Bot contest winner")
    kept = json.loads(next((tmp_path / "data" / "characters").glob("*.json")).read_text())
    assert len(kept["data"]["character_book"]["entries"]) == 4
