"""The story screen as a writer uses it: the name follows the title, focus is visible and tab goes where
expected, a pasted Japanese synopsis prefix, the prompt view, saved state, failing saves and quitting."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from test_tui import editor, make_app, saved, settle
from textual.widgets import Checkbox, Input, OptionList, Static, TextArea
from tui_fakes import StateBackend, TakesBackend, wait_until, workers_done

import talesmith.tui.base as base
from talesmith.runtime.documents.formats import Story, StoryHeader
from talesmith.runtime.documents.stories import Library, StoryDocument

pytestmark = pytest.mark.asyncio


async def type_title(pilot, words: list[str]) -> None:
    """Type the title word by word, with autosaves in between, as a person types."""
    pilot.app.screen.query_one("#title", Input).focus()
    for word in words:
        await pilot.press(*word)
        await pilot.pause(0.15)


async def test_the_story_name_follows_the_whole_title_and_collisions_get_a_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "SAVE_DELAY", 0.05)
    Library(tmp_path / "data" / "stories", "story").save(
        "old", StoryDocument(story=Story(text="x", header=StoryHeader(title="H. P.")), name="The Colour Out of Space")
    )
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press(*"It came from the sky.")
        await type_title(pilot, ["The", " Colour", " Out", " of", " Space"])
        await pilot.press("ctrl+s")
        assert app.screen.doc.name == "The Colour Out of Space (2)"
        await pilot.press("ctrl+o")
        await pilot.pause()
        names = [
            str(app.screen.query_one("#entries", OptionList).get_option_at_index(i).prompt).split("  ")[0]
            for i in range(2)
        ]
        assert sorted(names) == ["The Colour Out of Space", "The Colour Out of Space (2)"]
        await pilot.press("escape")
        await type_title(pilot, [" Again"])
        await pilot.press("ctrl+s")
        assert app.screen.doc.name == "The Colour Out of Space Again"
    assert sorted(d["name"] for d in saved(tmp_path)) == ["The Colour Out of Space", "The Colour Out of Space Again"]


async def test_an_untitled_story_emptied_again_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "SAVE_DELAY", 0.05)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Once", "ctrl+s")
        assert len(saved(tmp_path)) == 1
        await pilot.press(*["backspace"] * 4, "ctrl+s")
        assert saved(tmp_path) == [] and app.screen.doc_id is None
        assert app.notified[-1].message == "Nothing to save: this story is empty"
        await pilot.press("ctrl+q")
    assert saved(tmp_path) == []


async def test_tab_goes_from_the_editor_through_the_fields_in_order_with_visible_focus(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        order = []
        for _ in range(13):
            order.append(app.focused.id)
            await pilot.press("tab")
        assert order == [
            "editor",
            "title",
            "author",
            "genre",
            "tags",
            "style",
            "memory",
            "author_note",
            "author_note_depth",
            "adventure",
            "japanese",
            "synopsis",
            "editor",
        ]
        assert app.focused.id == "title"
        await pilot.press(*"Dunwich")
        assert screen.doc.story.header.title == "Dunwich"
        focused, other = screen.query_one("#title", Input), screen.query_one("#author", Input)
        assert focused.styles.background_tint.a > 0 and other.styles.background_tint.a == 0
        assert str(screen.query_one("#editor").styles.border_left[0]) == "blank"
        await pilot.press("shift+tab")
        assert str(screen.query_one("#editor").styles.border_left[0]) == "thick"


async def test_a_pasted_synopsis_prefix_is_taken_off(tmp_path):
    backend = TakesBackend(["。"], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#japanese").value = True
        synopsis = screen.query_one("#synopsis", TextArea)
        assert synopsis.size.height >= 3  # room for a synopsis of a few lines, also at 80x24
        synopsis.load_text("あらすじ：ある日、森で。")
        await pilot.pause()
        assert synopsis.text == "ある日、森で。"
        assert screen.doc.story.synopsis == "ある日、森で。"
        screen.query_one("#editor").focus()
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[0] == "あらすじ：ある日、森で。\n***\n"
        assert str(screen.query("#fields Label").last().render()) == "Synopsis (app adds あらすじ)"


async def test_the_prompt_view_shows_parts_tokens_what_was_dropped_and_what_is_evaluated_again(tmp_path):
    backend = TakesBackend([" more."], n_ctx=300)
    text = "".join(f"Line {i} of the old story.\n" for i in range(20))
    story = StoryDocument(
        story=Story(
            text=text,
            header=StoryHeader(title="[Dunwich]"),
            memory="Wilbur is tall.",
            author_note="dread",
            author_note_depth=2,
        )
    )
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.screen.load(None, story)
        await pilot.press("f9")
        await workers_done(pilot)  # the prompt view is built in a worker
        shown = str(app.screen.query_one("#prompt-text", Static).render())
        settings = story.settings
        budget = 300 - settings.max_new_tokens
        assert shown.startswith(f"{len(backend.tokenize(shown.split('The exact prompt:')[1][1:]))} tokens of 300")
        assert "     16  memory\n" in shown and "     25  header / synopsis\n" in shown
        assert "     25  author's note\n" in shown
        assert "dropped to fit: the" in shown and "of 20 history units" in shown
        prompt = shown.split("The exact prompt:\n", 1)[1]
        assert prompt.startswith("Wilbur is tall.\n[ Title: [Dunwich] ]\n***\n") and len(prompt) <= budget
        assert "Line 0 of" not in prompt and prompt.endswith("Line 19 of the old story.\n")
        dropped = shown.split("Dropped to fit (the model does not see it):\n", 1)[1].split("\nThe part evaluated")[0]
        assert dropped.startswith("Line 0 of the old story.\n") and dropped.endswith("Line 18 of the old story.\n")
        assert "evaluated again by the next generation" in shown
        await pilot.press("escape")
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == prompt


async def test_saved_state_is_private_capped_and_its_size_shown(tmp_path, monkeypatch):
    old_umask = os.umask(0o022)
    try:
        backend = StateBackend([" and on."], bytes_per_token=4096, n_ctx=2048)
        app = make_app(tmp_path, backend)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            app.set_preferences(type(app.preferences)(app.preferences.user, 1))  # 1 MB
            screen = app.screen
            for i in range(3):
                screen.load(None, StoryDocument(story=Story(text=f"Story {i}: " + "word " * 40)))
                await pilot.press("ctrl+g")
                await settle(pilot)
                await app.workers.wait_for_complete()  # the state is saved in a worker
            states = sorted((tmp_path / "data" / "stories").glob("*.kv"))
            assert len(states) == 1  # each is 0.9 MB: only the newest fits under 1 MB
            assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "data" / "stories").iterdir())
            await pilot.press("ctrl+o")
            await pilot.pause()
            size = (
                states[0].stat().st_size + (tmp_path / "data" / "stories" / (states[0].name + ".meta")).stat().st_size
            )
            assert f"Saved model state (all stories and chats): {size / 1048576:.1f} MB of at most 1 MB" in str(
                app.screen.query_one("#state-size", Static).render()
            )
    finally:
        os.umask(old_umask)


async def test_quitting_when_saving_fails_stays_open_and_offers_an_export(tmp_path, monkeypatch):
    app = make_app(tmp_path)

    def full(self, doc_id, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        monkeypatch.setattr(Library, "save", full)
        await pilot.press(*"Precious words")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.is_running and "could not be saved" in str(app.screen.query_one("Label").render())
        assert any("No space left on device" in n.message for n in app.notified)
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#answer", Input).value = str(tmp_path / "rescue.json")
        await pilot.press("enter")
        await pilot.pause()
    assert not app.is_running
    assert '"text": "Precious words"' in (tmp_path / "rescue.json").read_text()
    assert editor is not None


async def test_a_card_with_a_lone_surrogate_is_saved_with_a_note(tmp_path):
    from test_tui_chat import import_card

    card = tmp_path / "broken.json"
    card.write_text('{"name": "\\ud800 x", "description": "d", "first_mes": "Hi \\ud800"}')
    app = make_app(tmp_path, mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await import_card(pilot, card)
        assert any(
            "2 characters of the card cannot be stored as UTF-8 (broken surrogates); they were read as \ufffd"
            in n.message
            for n in app.notified
        )
        await pilot.press("ctrl+q")
    [chat] = saved(tmp_path, "chats")
    assert chat["messages"][0]["swipes"] == ["Hi \ufffd"] and chat["character"]["data"]["name"] == "\ufffd x"


def type_fast(app, keys: list[str]) -> None:
    """Send keys as a quick typist does: each arrives before the one before it has been handled."""
    from textual import events

    for key in keys:
        event = events.Key(key, "\t" if key == "tab" else key)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_a_key_typed_right_after_tab_goes_to_the_next_field(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        type_fast(app, [*"abc", "tab", *"Title", "tab", *"Auth", "tab", *"Gen"])
        await pilot.pause(0.3)
        h = app.screen.doc.story.header
        assert (app.screen.doc.text, h.title, h.author, h.genre) == ("abc", "Title", "Auth", "Gen")


async def test_a_story_typed_before_its_title_is_renamed_after_it(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "SAVE_DELAY", 0.05)
    library = Library(tmp_path / "data" / "stories", "story")
    library.save("20260101-000000-night", StoryDocument(story=Story(text="x"), name="Night"))
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"It was dark.", "ctrl+s")
        untitled = app.screen.doc_id
        assert untitled.endswith("-untitled-story") and library.path(untitled).exists()
        await type_title(pilot, ["Night"])
        await pilot.press("ctrl+s")
        screen = app.screen
        assert screen.doc.name == "Night (2)" and screen.doc_id.endswith("-night-2")
        assert not library.path(untitled).exists()
        assert library.load(screen.doc_id).text == "It was dark."
        await pilot.press("ctrl+q")
    assert sorted(e.name for e in library.entries()) == ["Night", "Night (2)"]
    assert sorted(d["text"] for d in saved(tmp_path)) == ["It was dark.", "x"]


async def test_a_new_story_starts_in_its_text_not_in_the_field_focused_before(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.query_one("#author_note", Input).focus()
        await pilot.press(*"slow", "ctrl+n")
        assert app.focused.id == "editor"
        await pilot.press(*"New")
        assert app.screen.doc.text == "New" and app.screen.doc.story.author_note == ""


async def test_a_checkbox_mark_says_whether_it_is_on(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        box = app.screen.query_one("#japanese", Checkbox)
        assert str(box.render()).startswith("▐ ▌")
        box.value = True
        assert str(box.render()).startswith("▐X▌")


async def test_at_80x24_the_cursor_stays_in_view_and_the_synopsis_has_lines(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        area = editor(app.screen)
        area.load_text("\n".join(f"Line {i} of a story long enough to wrap in a narrow window." for i in range(60)))
        area.move_cursor(area.document.end)
        await pilot.pause()
        await pilot.resize_terminal(80, 24)

        def in_view() -> bool:
            return area.region.contains_point(area.cursor_screen_offset)

        await wait_until(pilot, in_view, timeout=5, what="the cursor in view")  # the text wraps again first
        assert app.screen.query_one("#synopsis", TextArea).size.height >= 3
        for _ in range(2):  # the fields hidden and shown again: the text wraps again, the cursor stays seen
            await pilot.press("ctrl+b")
            await wait_until(pilot, in_view, timeout=5, what="the cursor in view")


async def test_an_edit_keeps_the_alternatives_where_it_can_and_says_when_it_cannot(tmp_path):
    backend = TakesBackend([" A.", " B."], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press(*"Go", "ctrl+g")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        area = editor(screen)
        area.move_cursor((0, 0))
        await pilot.press(*"So, ")  # before the alternatives' point
        assert screen.doc.text == "So, Go B." and screen.doc.live_alternatives().base == "So, Go"
        await pilot.press("alt+left")
        assert area.text == "So, Go A."
        area.load_text("Gone")  # both sides changed: nothing to follow, and the user is told
        await pilot.pause()
        assert screen.doc.live_alternatives() is None
        assert "2 alternatives" in app.notified[-1].message
        await pilot.press("ctrl+z")
        assert screen.doc.live_alternatives().options == (" A.", " B.")
