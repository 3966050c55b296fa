"""Snapshots of the main screens at 80x24 and 120x40, built from fixture documents.

Update them after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest
from test_tui import make_app, settle
from tui_fakes import TakesBackend

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import Story, StoryHeader
from talesmith.runtime.documents.stories import ChatDocument, StoryDocument
from talesmith.runtime.settings import preset

SIZES = [(80, 24), (120, 40)]

STORY = StoryDocument(
    story=Story(
        text=(
            "The storm had raged for three days when the knock came at the lighthouse door.\n"
            "Ada set down the lamp. Nobody climbed the cliff path in weather like this, "
            "and nobody who did would knock.\n"
            "The knock came again, slower this time."
        ),
        header=StoryHeader(
            title="The Lighthouse Keeper",
            author="Ada Brand",
            genre="Mystery",
            tags=("3rdperson", "atmospheric"),
            style="Vivid",
        ),
        memory="Ada has kept the light for twenty years.",
        author_note="Slow, creeping dread.",
        author_note_depth=2,
    ),
    name="The Lighthouse Keeper",
    settings=preset("lit-6b", seed=7),
    preset="lit-6b",
)
STORY = STORY.continued(STORY.text, " Ada reached for the latch.").continued(STORY.text, " She did not move.")

AQUA = Character(
    name="Aqua",
    persona="A cheerful, vain goddess of water who follows her adventurer everywhere.",
    scenario="The guild hall of Axel, late in the evening.",
    greeting="Hey! Buy me a drink?",
)
CHAT = (
    ChatDocument.start(AQUA)
    .sent("Why would I buy you a drink?")
    .replied("Because I am a goddess, obviously! Worship me a little.")
    .swiped_reply("Because I healed you three times today. Pay up!")
    .sent("Fine. One drink.")
)
CHAT = CHAT.replied("Yay! You're the best, you shut-in.")


async def still(pilot):
    """No blinking cursors: a snapshot must not depend on when it is taken."""
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause()


def app_with(document, mode):
    async def run_before(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        screen.load(None, document)
        await pilot.pause()
        screen.update_measure()
        await still(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_story_screen(snap_compare, tmp_path, size):
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048))
    assert snap_compare(app, terminal_size=size, run_before=app_with(STORY, "story"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_chat_screen(snap_compare, tmp_path, size):
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048), mode="chat")
    assert snap_compare(app, terminal_size=size, run_before=app_with(CHAT, "chat"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sampling_panel(snap_compare, tmp_path, size):
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048))
    before = app_with(STORY, "story")

    async def run_before(pilot):
        await before(pilot)
        await pilot.press("f4")
        await still(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_help_screen(snap_compare, tmp_path):
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048))

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f1")
        await still(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_library_dialog_keeps_its_footer_at_80x24(snap_compare, tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("TZ", "UTC")  # the dialog shows modification times
    time.tzset()

    import shutil
    import tempfile
    from pathlib import Path

    from talesmith.runtime.documents.stories import Library

    tmp_path = Path(tempfile.gettempdir()) / "talesmith-snapshot"  # the dialog shows the folder's path
    shutil.rmtree(tmp_path, ignore_errors=True)
    library = Library(tmp_path / "data" / "stories", "story")
    library.save("a", STORY)
    library.save("b", StoryDocument(story=STORY.story, name="[b]Bracketed[/] [Narrator] draft"))
    for i, doc_id in enumerate("ab"):
        os.utime(library.path(doc_id), (1_700_000_000 + i * 60, 1_700_000_000 + i * 60))
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048))

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("ctrl+o")
        await still(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_prompt_view_at_80x24(snap_compare, tmp_path):
    app = make_app(tmp_path, TakesBackend(["x"], n_ctx=2048), mode="chat")
    before = app_with(CHAT, "chat")

    async def run_before(pilot):
        await before(pilot)
        await pilot.press("f9")
        await pilot.app.workers.wait_for_complete()  # the prompt view is built in a worker
        await still(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
