"""The chat screen as a SillyTavern user uses it: a user name and persona, card fields, stops, greetings,
multi-line messages, importing a card that is already kept."""

from __future__ import annotations

import json

import pytest
from test_tui import make_app, saved, settle
from test_tui_chat import CARD, import_card, messages, png_card
from textual.widgets import Input, Static, TextArea
from tui_fakes import TakesBackend, wait_until

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.stories import ChatDocument, Library

pytestmark = pytest.mark.asyncio

SERA = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Sera",
        "description": "Heals {{user}}.",
        "first_mes": "Welcome back {{user}}.",
        "alternate_greetings": ["Oh, {{user}}!"],
        "system_prompt": "{{original}}Reply as {{char}}.",
        "post_history_instructions": "Never write for {{user}}.",
        "creator_notes": "Be kind to her.",
    },
}


async def set_user(pilot, name: str, persona: str, *, own_name: str | None = None) -> None:
    await pilot.press("f8")
    await pilot.pause()
    dialog = pilot.app.screen
    assert pilot.app.focused is dialog.query_one("#name", Input)  # the first field, not the dialog itself
    dialog.query_one("#name", Input).value = name
    dialog.query_one("#persona", TextArea).load_text(persona)
    if own_name is not None:
        dialog.query_one("#own-name", Input).value = own_name
    await pilot.press("ctrl+s")
    await pilot.pause()


async def test_user_name_and_persona_reach_greetings_prompt_and_screen(tmp_path):
    backend = TakesBackend([" Rest now."], n_ctx=4096)
    app = make_app(tmp_path, backend, mode="chat")
    card = tmp_path / "sera.json"
    card.write_text(json.dumps(SERA))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await set_user(pilot, "Sam", "A wounded {{char}}-seeker.")
        await import_card(pilot, card)
        assert [m.swipes for m in screen.doc.messages] == [("Welcome back Sam.", "Oh, Sam!")]
        await pilot.press(*"Thanks", "enter")
        await settle(pilot)
        assert backend.prompts[0] == (
            "Reply as Sera.\nSera's Persona: Heals Sam.\nSam's Persona: A wounded Sera-seeker.\n"
            "<START>\nSera: Welcome back Sam.\nSam: Thanks\nNever write for Sam.\nSera:"
        )
        assert messages(screen)[1] == "Sam\nThanks"
        await set_user(pilot, "Sam", "", own_name="Rin")  # this chat only
        await pilot.press(*"Again", "enter")
        await settle(pilot)
        assert backend.prompts[-1].endswith("Rin: Thanks\nSera: Rest now.\nRin: Again\nNever write for Rin.\nSera:")
        assert "you: Rin (f8)" in str(screen.query_one("#character", Static).render())
        await pilot.press("f5")
        await pilot.pause()
        assert app.screen.query_one("#creator_notes", TextArea).text == "Be kind to her."
        assert app.screen.query_one("#post_history", TextArea).text == "Never write for {{user}}."
        await pilot.press("escape", "ctrl+q")
    [chat] = saved(tmp_path, "chats")
    assert chat["user_name"] == "Rin" and chat["character"]["data"]["system_prompt"] == "{{original}}Reply as {{char}}."
    prefs = json.loads((tmp_path / "data" / "preferences.json").read_text())
    assert prefs["user"] == {"name": "Sam", "persona": ""}


async def test_replies_stop_at_end_and_at_the_user_s_next_line_and_at_the_chat_s_own_stops(tmp_path):
    backend = TakesBackend([" Sure thing.<END> junk", " Fine.\n[ You: Sak", " One. Two. Three."], n_ctx=4096)
    Library(tmp_path / "data" / "chats", "chat").save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen.query_one("#composer").focus()
        await pilot.press(*"a", "enter")
        await settle(pilot)
        await pilot.press(*"b", "enter")
        await settle(pilot)
        await pilot.press("f4")
        await pilot.pause()
        app.screen.query_one("#s-stop", Input).value = '["Two."]'
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press(*"c", "enter")
        await settle(pilot)
        assert [m.text for m in screen.doc.messages][2::2] == ["Sure thing.", "Fine.", "One."]
        assert screen.doc.settings.stop == ("Two.",)


async def test_greetings_stop_at_the_last_and_a_new_one_only_when_asked(tmp_path):
    backend = TakesBackend([" A new hello."], n_ctx=4096)
    app = make_app(tmp_path, backend, mode="chat")
    card = tmp_path / "sera.json"
    card.write_text(json.dumps(SERA))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, card)
        await pilot.press("alt+right")
        assert screen.doc.messages[0].text == "Oh, You!"
        await pilot.press("alt+right")
        await settle(pilot)
        assert backend.calls == 0 and screen.doc.messages[0].index == 1
        assert any("That is the last greeting" in n.message for n in app.notified)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert backend.calls == 1 and screen.doc.messages[0].swipes[-1] == "A new hello."


async def test_a_message_of_several_lines_and_a_long_paste(tmp_path):
    backend = TakesBackend([" Noted."], n_ctx=8192)
    Library(tmp_path / "data" / "chats", "chat").save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        composer = screen.query_one("#composer", TextArea)
        composer.focus()
        await pilot.press(*"First", "shift+enter", *"Second", "ctrl+j", *"Third")
        assert composer.text == "First\nSecond\nThird" and screen.doc.messages[-1].text == "Hi!"
        await pilot.press("enter")
        await settle(pilot)
        assert [m.text for m in screen.doc.messages][1:] == ["First\nSecond\nThird", "Noted."]
        assert composer.text == ""
        long = "\n".join(f"Pasted line {i}." for i in range(200))
        composer.insert(long)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.doc.messages[-2].text == long


async def test_importing_a_card_that_is_already_kept_asks_to_replace_or_keep_both(tmp_path):
    app = make_app(tmp_path, mode="chat")
    card = tmp_path / "aqua.png"
    card.write_bytes(png_card(CARD))
    folder = tmp_path / "data" / "characters"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await import_card(pilot, card)
        assert sorted(p.name for p in folder.iterdir()) == ["aqua.json", "aqua.png"]  # the card and its picture
        (folder / "aqua.json").write_text((folder / "aqua.json").read_text().replace("cheerful", "edited"))
        await import_card(pilot, card)
        assert "aqua.json is already kept" in str(app.screen.query_one("Label").render())
        await pilot.press("k")
        await pilot.pause()
        assert sorted(p.name for p in folder.glob("*.json")) == ["aqua-2.json", "aqua.json"]
        assert "edited" in (folder / "aqua.json").read_text() and (folder / "aqua-2.png").is_file()
        await import_card(pilot, card)
        await pilot.press("r")
        await pilot.pause()
        assert "edited" not in (folder / "aqua.json").read_text()
        await import_card(pilot, card)
        await pilot.press("escape")
        await pilot.pause()
        assert sorted(p.name for p in folder.glob("*.json")) == ["aqua-2.json", "aqua.json"]


async def test_the_user_s_message_is_on_disk_before_the_reply_starts(tmp_path):
    from tui_fakes import SlowBackend

    backend = SlowBackend([" " + "la " * 100], delay=0.5, n_ctx=4096)
    Library(tmp_path / "data" / "chats", "chat").save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen.query_one("#composer").focus()
        await pilot.press(*"Are you there?", "enter")
        await wait_until(pilot, lambda: screen.job is not None)
        [chat] = saved(tmp_path, "chats")
        assert chat["messages"][-1]["swipes"] == ["Are you there?"]
        backend.delay = 0
        await pilot.press("escape")
