"""Writing at a point inside a story: the text before the point is the prompt, the text after it stays below."""

from __future__ import annotations

import pytest
from test_tui import make_app, saved, settle
from textual.widgets import TextArea
from tui_fakes import TakesBackend

from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.documents.stories import Alternatives, StoryDocument, from_dict, to_dict


def test_the_prompt_at_a_point_holds_nothing_after_it():
    doc = StoryDocument(story=Story(text="Line one.\nLine three.", memory="A keep."))
    assert plan(doc.prompt_story_at(len("Line one."))).render() == "A keep.\nLine one."


def test_alternatives_at_a_point_keep_the_text_after_it():
    doc = StoryDocument(story=Story(text="One.\nThree.")).continued("One.", " Two.", "\nThree.")
    assert doc.text == "One. Two.\nThree." and doc.alternatives == Alternatives("One.", (" Two.",), 0, "\nThree.")
    retried = doc.continued("One.", " Deux.", "\nThree.")
    assert retried.text == "One. Deux.\nThree." and retried.cycled(1).text == "One. Two.\nThree."
    assert from_dict(to_dict(retried)).alternatives == retried.alternatives
    assert "after" not in to_dict(StoryDocument().continued("x", "y"))["alternatives"]
    # edits of the text below, of the one shown and before the point each keep the alternatives
    below = retried.with_text("One. Deux.\nThree!")
    assert below.alternatives.after == "\nThree!" and below.cycled(1).text == "One. Two.\nThree!"
    shown = retried.with_text("One. Deux!\nThree.")
    assert shown.alternatives.current == " Deux!" and shown.alternatives.after == "\nThree."
    earlier = retried.with_text("Uno. Deux.\nThree.")
    assert earlier.alternatives.base == "Uno." and earlier.cycled(1).text == "Uno. Two.\nThree."


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_generate_at_the_cursor_inside_the_story(tmp_path, size):
    backend = TakesBackend([" Line two.", " Ligne deux."], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        story = app.screen
        editor = story.query_one("#editor", TextArea)
        editor.focus()
        await pilot.press(*"Line one.", "enter", *"Line three.")
        editor.move_cursor((0, len("Line one.")))
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "Line one."  # nothing after the cursor is sent
        assert editor.text == story.doc.text == "Line one. Line two.\nLine three."
        assert editor.cursor_location == (0, len("Line one. Line two."))
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert backend.prompts[-1] == "Line one."
        assert editor.text == story.doc.text == "Line one. Ligne deux.\nLine three."
        await pilot.press("alt+left")
        assert story.doc.text == "Line one. Line two.\nLine three."
        editor.move_cursor(editor.document.end)
        await pilot.press("ctrl+g")  # at the end: the whole story is the prompt
        await settle(pilot)
        assert backend.prompts[-1] == "Line one. Line two.\nLine three."
    [doc] = saved(tmp_path)
    assert doc["text"] == "Line one. Line two.\nLine three. Line two."


def test_editor_locations_and_text_offsets():
    from talesmith.tui.story import text_index, text_location

    text = "ab\n\nçé\nlast"
    for index in range(len(text) + 1):
        assert text_index(text, text_location(text, index)) == index
    assert text_location(text, 5) == (2, 1) and text_index(text, (3, 0)) == 7
