"""The app opens the last story and chat again on start, and shows the screen that was shown last."""

from __future__ import annotations

import pytest
from test_tui import settle
from textual.widgets import TextArea
from tui_fakes import RecordingApp, TakesBackend

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.stories import ChatDocument, Library, StoryDocument
from talesmith.tui import reopen
from talesmith.tui.app import AppConfig


def test_remember_and_load(tmp_path):
    assert reopen.load(tmp_path) == reopen.Last()
    reopen.remember(tmp_path, "story", "s1")
    assert reopen.remember(tmp_path, "chat", "c1") == reopen.Last("chat", {"story": "s1", "chat": "c1"})
    assert reopen.load(tmp_path) == reopen.Last("chat", {"story": "s1", "chat": "c1"})
    (tmp_path / reopen.FILE).write_text("{damaged")
    assert reopen.load(tmp_path) == reopen.Last()
    (tmp_path / reopen.FILE).write_text('{"last": "poem", "story": 3, "chat": "c"}')
    assert reopen.load(tmp_path) == reopen.Last("", {"chat": "c"})


def app(tmp_path, mode=""):
    backend = TakesBackend([" and on."], n_ctx=512)
    return RecordingApp(
        lambda: backend, AppConfig(data_dir=tmp_path / "data", model_name="fake", mode=mode, reopen=True)
    )


@pytest.mark.asyncio
async def test_the_last_story_and_chat_open_again(tmp_path):
    Library(tmp_path / "data" / "stories", "story").save("old", StoryDocument(story=Story(text="Old."), name="Old"))
    Library(tmp_path / "data" / "chats", "chat").save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    first = app(tmp_path)
    async with first.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert first.screen.doc.text == ""  # nothing was open before
        first.screen.query_one("#editor", TextArea).focus()
        await pilot.press(*"The harbor at dawn.")
        first.screen.autosave()
        await pilot.press("f3")
        await pilot.pause()
        first.screen.load("c", first.screen.library.load("c"))  # as ctrl+o opens it
        await pilot.pause()
    again = app(tmp_path)
    async with again.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert again.screen.KIND == "chat" and again.screen.doc_id == "c"  # the screen shown last
        await pilot.press("f2")
        await pilot.pause()
        assert again.screen.doc.text == "The harbor at dawn."
        assert again.screen.query_one("#editor", TextArea).text == "The harbor at dawn."
    on_story = app(tmp_path, mode="story")  # --chat or not, the screen asked for wins
    async with on_story.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert on_story.screen.KIND == "story" and on_story.screen.doc.text == "The harbor at dawn."
