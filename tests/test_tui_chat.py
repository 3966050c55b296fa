"""The chat screen driven through the pilot: cards, sending, swipes, editing, context overflow."""

from __future__ import annotations

import json

import pytest
from test_tui import make_app, saved, settle, status
from textual.widgets import Input, ListView, Static, TextArea
from tui_fakes import TakesBackend, measured, wait_until, workers_done

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.stories import ChatDocument, Library

pytestmark = pytest.mark.asyncio

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Aqua",
        "description": "A cheerful goddess of water.",
        "scenario": "A guild hall.",
        "first_mes": "Hello, {{user}}!",
        "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Yo!",
        "creator_notes": "kept",
        "extensions": {"fav": True},
    },
}


def png_card(card: dict) -> bytes:
    from test_cards import tiny_png

    from talesmith.runtime.documents.cards import parse_json_card, png_with_card

    return png_with_card(tiny_png(), parse_json_card(json.dumps(card)))


async def import_card(pilot, path) -> None:
    await pilot.press("f7")
    await pilot.pause()
    pilot.app.screen.query_one("#answer", Input).value = str(path)
    await pilot.press("enter")
    await pilot.pause()


def messages(screen) -> list[str]:
    return [str(s.render()) for s in screen.query_one("#messages", ListView).query(Static)]


async def test_import_a_png_card_then_chat_and_swipe(tmp_path):
    backend = TakesBackend([" Nice to meet you!", " Welcome!", " Greetings."], n_ctx=2048)
    app = make_app(tmp_path, backend, mode="chat")
    card = tmp_path / "aqua.png"
    card.write_bytes(png_card(CARD))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, card)
        assert screen.doc.character.name == "Aqua"
        assert [m.text for m in screen.doc.messages] == ["Hello, You!"]
        await pilot.press(*"Hi there", "enter")
        await settle(pilot)
        assert [m.text for m in screen.doc.messages] == ["Hello, You!", "Hi there", "Nice to meet you!"]
        assert backend.prompts[0] == (
            "Aqua's Persona: A cheerful goddess of water.\nScenario: A guild hall.\n"
            "<START>\nYou: Hi\nAqua: Yo!\n<START>\nAqua: Hello, You!\nYou: Hi there\nAqua:"
        )
        await pilot.press("alt+right")  # past the last swipe: a new reply
        await settle(pilot)
        assert screen.doc.messages[-1].swipes == ("Nice to meet you!", "Welcome!")
        assert backend.prompts[1] == backend.prompts[0]
        assert "‹2/2›" in messages(screen)[-1]
        await pilot.press("alt+left")
        assert screen.doc.messages[-1].text == "Nice to meet you!"
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert screen.doc.messages[-1].swipes == ("Nice to meet you!", "Welcome!", "Greetings.")
        await pilot.press("ctrl+q")
    [chat] = saved(tmp_path, "chats")
    assert chat["character"]["data"]["creator_notes"] == "kept"
    assert [m["swipes"] for m in chat["messages"]][-1] == ["Nice to meet you!", "Welcome!", "Greetings."]
    [kept] = (tmp_path / "data" / "characters").glob("*.json")
    assert json.loads(kept.read_text())["data"]["extensions"] == {"fav": True}


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x10tEXtchara\0!!!!!!!!!!\0\0\0\0",
        b'{"spec": "chara_card_v2", "data": {"name": 5}}',
        b"not json at all",
    ],
)
async def test_a_bad_card_is_a_notification_and_changes_nothing(tmp_path, content):
    app = make_app(tmp_path, mode="chat")
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        before = screen.doc
        await import_card(pilot, bad)
        assert screen.doc is before
        assert any("bad.png" in n.message and "Nothing was changed" in n.message for n in app.notified)
        assert not (tmp_path / "data" / "chats").exists() and not (tmp_path / "data" / "characters").exists()


async def test_create_a_character_and_edit_and_delete_messages(tmp_path):
    backend = TakesBackend([" I am Bo."], n_ctx=2048)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("f6")
        await pilot.pause()
        editor = app.screen
        editor.query_one("#name", Input).value = "Bo"
        editor.query_one("#persona", TextArea).load_text("A sleepy robot.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.doc.character.name == "Bo" and screen.doc.messages == ()
        await pilot.press(*"Who?", "enter")
        await settle(pilot)
        assert [m.text for m in screen.doc.messages] == ["Who?", "I am Bo."]
        await pilot.press("shift+tab")  # to the messages
        await pilot.pause()
        screen.query_one("#messages", ListView).index = 0
        await pilot.press("e")
        await pilot.pause()
        area = app.screen.query_one("#text", TextArea)
        area.load_text("Who are you?")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.doc.messages[0].text == "Who are you?"
        screen.query_one("#messages", ListView).index = 1
        await pilot.press("d")
        await pilot.pause()
        assert [m.text for m in screen.doc.messages] == ["Who are you?"]
        await pilot.press("ctrl+z")
        assert [m.text for m in screen.doc.messages] == ["Who are you?", "I am Bo."]
        await pilot.press("f5")
        await pilot.pause()
        app.screen.query_one("#scenario", TextArea).load_text("A junkyard.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.doc.character.scenario == "A junkyard."
        assert "A junkyard." in str(screen.query_one("#character", Static).render())


async def test_history_beyond_the_context_drops_oldest_turns_and_shows_it(tmp_path):
    backend = TakesBackend([" Sure."], n_ctx=400)
    lib = Library(tmp_path / "data" / "chats", "chat")
    chat = ChatDocument.start(Character(name="Aqua", persona="A goddess.", examples="<START>\n{{char}}: Splash!"))
    for i in range(8):
        chat = chat.sent(f"Message number {i} " + "blah " * 8).replied(f"Reply {i}.")
    lib.save("long", chat)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await measured(pilot)
        assert screen.dropped > 0
        assert "out of ctx" in status(screen)
        assert "(out of context)" in messages(screen)[0]
        await pilot.press(*"And now?", "enter")
        await settle(pilot)
        prompt = backend.prompts[-1]
        assert prompt.startswith("Aqua's Persona: A goddess.\n<START>\nAqua: Splash!\n<START>\n")
        assert "Message number 0" not in prompt and prompt.endswith("You: And now?\nAqua:")
        assert len(prompt) + screen.doc.settings.max_new_tokens <= 400
        assert any("no longer fit the context" in n.message for n in app.notified)
        assert screen.doc.messages[-1].text == "Sure."


async def test_stopping_a_reply_keeps_what_was_written(tmp_path):
    from tui_fakes import SlowBackend

    backend = SlowBackend([" " + "la " * 300], delay=0.05, n_ctx=4096)
    lib = Library(tmp_path / "data" / "chats", "chat")
    lib.save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        screen.query_one("#composer").focus()
        await pilot.press(*"Sing", "enter")
        await wait_until(pilot, lambda: screen.job is not None and len(screen.job.text) > 10)
        await pilot.press("escape")
        assert screen.job is None
        reply = screen.doc.messages[-1]
        assert reply.speaker == "character" and reply.text.startswith("la la")
        await workers_done(pilot)  # the worker has ended: any chunk it still sent was ignored
        assert screen.doc.messages[-1] == reply
        assert saved(tmp_path, "chats")[0]["model"] == "fake"


async def test_a_chat_waits_for_a_story_generation_on_the_same_model(tmp_path):
    from tui_fakes import SlowBackend

    backend = SlowBackend([" " + "la " * 150], delay=0.2, n_ctx=4096)
    Library(tmp_path / "data" / "chats", "chat").save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        story = app.screen
        await pilot.press(*"Go", "ctrl+g")
        await wait_until(pilot, backend.sampled.is_set)
        await pilot.press("f3")
        await pilot.pause()
        chat = app.screen
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        chat.query_one("#composer").focus()
        await pilot.press(*"Hello", "enter")
        await wait_until(pilot, lambda: chat.job is not None)
        assert story.job is not None and chat.job is not None  # the chat waits for the backend
        assert backend.calls == 1 and chat.job.text == ""
        backend.delay = 0.0
        await settle(pilot, chat, timeout=30)
        await settle(pilot, story, timeout=30)
        assert story.doc.text.startswith("Go la la")
        assert [m.speaker for m in chat.doc.messages] == ["character", "user", "character"]
        assert backend.prompts[-1].endswith("You: Hello\nAqua:")


def long_chat(tmp_path, n: int = 12) -> ChatDocument:
    doc = ChatDocument.start(Character(name="Aqua", persona="A goddess.", greeting="Hello!"))
    for i in range(n):
        doc = doc.sent(f"Message {i}, a line long enough to wrap in a narrow window.").replied(f"Reply {i}.")
    Library(tmp_path / "data" / "chats", "chat").save("20260101-000000-chat-with-aqua", doc)
    return doc


async def open_first(pilot) -> None:
    await pilot.press("ctrl+o")
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause(0.2)


def in_view(items: ListView, index: int) -> bool:
    item = items.children[index]
    return items.region.contains_point(item.region.offset) or items.region.overlaps(item.region)


async def test_the_chat_keeps_its_end_in_view_and_the_list_highlights_what_it_acts_on(tmp_path):
    backend = TakesBackend([" Sure."], n_ctx=4096)
    long_chat(tmp_path)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_first(pilot)
        screen = app.screen
        items = screen.query_one("#messages", ListView)
        last = len(screen.doc.messages) - 1
        assert items.index is None and in_view(items, last) and not in_view(items, 0)
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        assert in_view(items, last) and not in_view(items, 0)  # a resize does not leave the end behind
        await pilot.press(*"More?", "enter")
        await settle(pilot)
        await pilot.pause(0.2)
        assert screen.doc.messages[-1].text == "Sure." and in_view(items, len(screen.doc.messages) - 1)
        await pilot.press("shift+tab")
        assert app.focused is items and items.index == len(screen.doc.messages) - 1  # highlighted at once
        await pilot.press("up", "d")  # your message goes; the reply after it is highlighted, in view
        await pilot.pause(0.2)
        assert "More?" not in [m.text for m in screen.doc.messages]
        assert items.index == len(screen.doc.messages) - 1 and in_view(items, items.index)
        items.index = 0
        await pilot.press("d")  # acting at the top: the view stays there, not at the end
        await pilot.pause(0.2)
        assert screen.doc.messages[0].text.startswith("Message 0") and items.index == 0 and in_view(items, 0)


def small_chat(tmp_path) -> ChatDocument:
    doc = ChatDocument.start(Character(name="Aqua", persona="A goddess.", greeting="Hello!"))
    doc = doc.sent("Bake?").replied("Bread first.").sent("And then?").replied("Then I was about")
    Library(tmp_path / "data" / "chats", "chat").save("20260101-000000-chat-with-aqua", doc)
    return doc


async def test_continue_a_reply_cut_off_and_write_your_own_line(tmp_path):
    backend = TakesBackend([" to sing.", " Sing with me!"], n_ctx=4096)
    small_chat(tmp_path)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_first(pilot)
        screen = app.screen
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1].endswith("You: And then?\nAqua: Then I was about")
        assert screen.doc.messages[-1].text == "Then I was about to sing." and len(screen.doc.messages) == 5
        await pilot.press("alt+i")  # the model writes your next line into the box; nothing is sent
        await settle(pilot)
        assert backend.prompts[-1].endswith("Aqua: Then I was about to sing.\nYou:")
        composer = screen.query_one("#composer", TextArea)
        assert composer.text == "Sing with me!" and app.focused is composer and len(screen.doc.messages) == 5


async def test_regenerate_and_swipe_a_reply_in_the_middle(tmp_path):
    backend = TakesBackend([" Cake first."], n_ctx=4096)
    small_chat(tmp_path)
    app = make_app(tmp_path, backend, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await open_first(pilot)
        screen = app.screen
        await pilot.press("shift+tab", "up", "up", "r")  # "Bread first.", two above the last
        await settle(pilot)
        assert backend.prompts[-1].endswith("You: Bake?\nAqua:")
        middle = screen.doc.messages[2]
        assert middle.swipes == ("Bread first.", "Cake first.") and middle.text == "Cake first."
        assert [m.text for m in screen.doc.messages[3:]] == ["And then?", "Then I was about"]
        assert "‹2/2›" in messages(screen)[2]
        await pilot.press("left")
        assert screen.doc.messages[2].text == "Bread first." and backend.calls == 1
        await pilot.press("up", "r")  # your own message: nothing to regenerate
        assert backend.calls == 1 and "your message" in app.notified[-1].message


async def test_a_key_typed_right_after_tab_goes_to_the_next_field_of_a_dialog(tmp_path):
    from test_tui_writing import type_fast

    app = make_app(tmp_path, mode="chat")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f6")
        await pilot.pause()
        type_fast(app, [*"Aqua", "tab", *"Ann", "tab", *"fun"])
        await pilot.pause(0.3)
        values = [app.screen.query_one(f"#{key}", Input).value for key in ("name", "creator", "tags")]
        assert values == ["Aqua", "Ann", "fun"]
