"""Adventure mode in the story screen: the toggle, the action bar (Do / Say / Story), styled actions."""

from __future__ import annotations

import pytest
from test_tui import make_app, saved, settle
from textual.widgets import Checkbox, Input
from tui_fakes import TakesBackend

from talesmith.tui.adventure import ACTION_STYLE, ActionBar, StoryEditor, action_rows, next_kind


def test_action_rows_and_kinds():
    assert action_rows('Dark.\n\n> You light a torch.\n\nIt flares.\n> You say, "Hé."') == [(2, 20), (5, 17)]
    assert [next_kind(k) for k in ("do", "say", "story")] == ["say", "story", "do"]


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_play_an_adventure(tmp_path, size):
    backend = TakesBackend([" The torch flares.\n> You run.", ' "Who is there?" a voice asks.'], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        story = app.screen
        story.query_one("#editor").focus()
        await pilot.press(*"The cave is dark.")
        bar = story.query_one("#actionbar", ActionBar)
        assert not bar.display
        story.query_one("#adventure", Checkbox).value = True
        await pilot.pause()
        assert story.doc.adventure and bar.display
        story.query_one("#action", Input).focus()
        await pilot.press(*"light a torch", "enter")
        await settle(pilot)
        assert backend.prompts[-1] == "The cave is dark.\n\n> You light a torch.\n\n"
        assert story.doc.text == "The cave is dark.\n\n> You light a torch.\n\n The torch flares."  # stopped at "\n> "
        await pilot.press("alt+a")
        assert bar.kind == "say"
        await pilot.press(*"Hello", "enter")
        await settle(pilot)
        text = story.doc.text
        assert text.endswith('flares.\n\n> You say, "Hello."\n\n "Who is there?" a voice asks.')
        editor = story.query_one("#editor", StoryEditor)
        assert [row for row, marks in editor._highlights.items() if (0, 20, ACTION_STYLE) in marks] == [2]
        assert editor._theme.syntax_styles[ACTION_STYLE].bold  # kept through the app's theme
        assert story.query_one("#action", Input).value == ""
    [doc] = saved(tmp_path)
    assert doc["adventure"] is True and doc["text"] == text
