"""End to end: the app streams a story and a chat reply from the real bundled model."""

import pytest
from test_tui import editor, make_app, saved, settle, status
from tui_fakes import workers_done

from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.settings import preset

pytestmark = [pytest.mark.model, pytest.mark.asyncio]


class Borrowed:
    """The session's model, lent to one app: the app's close() on exit must not close it."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def close(self):
        pass


async def test_story_streams_from_the_bundled_model_and_stops(tmp_path, llama):
    app = make_app(tmp_path, factory=lambda: Borrowed(llama))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.load(None, StoryDocument(settings=preset("default", seed=11, max_new_tokens=24)))
        screen.query_one("#title").value = "The Lighthouse Keeper"
        screen.query_one("#editor").focus()
        await pilot.press(*"The storm had raged for three days.")
        await pilot.press("ctrl+g")
        await settle(pilot, timeout=120)
        first = screen.doc.text
        assert first.startswith("The storm had raged for three days.") and len(first) > 50
        assert editor(screen).text == first
        assert "llama.cpp" in status(screen) and "tok/s" in status(screen)
        await pilot.press("ctrl+r")
        await settle(pilot, timeout=120)
        assert len(screen.doc.live_alternatives().options) == 2
        screen.commit(screen.doc.kept())
        screen.update_measure()  # measures in a worker
        await workers_done(pilot)
        # everything up to the last generated token is cached: the next generation re-processes little
        assert screen.last_measure.reprocess <= 2
        final = screen.doc.text
        await pilot.press("ctrl+q")
    [doc] = saved(tmp_path)
    assert doc["text"] == final and doc["alternatives"] is None
    assert doc["header"]["title"] == "The Lighthouse Keeper"


async def test_chat_reply_streams_from_the_bundled_model(tmp_path, llama):
    from talesmith.runtime.documents.cards import Character
    from talesmith.runtime.documents.stories import ChatDocument

    app = make_app(tmp_path, factory=lambda: Borrowed(llama), mode="chat")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        aqua = Character(name="Aqua", persona="A cheerful goddess of water.", greeting="Hello! I am Aqua.")
        screen.load(None, ChatDocument.start(aqua, settings=preset("pygmalion", seed=3, max_new_tokens=40)))
        await pilot.press(*"Who are you?", "enter")
        await settle(pilot, timeout=120)
        speakers = [m.speaker for m in screen.doc.messages]
        assert speakers == ["character", "user", "character"]
        assert screen.doc.messages[-1].text.strip() and "\nYou:" not in screen.doc.messages[-1].text


def test_saved_state_holds_only_the_cells_in_use_and_is_private(tmp_path, llama):
    import os
    import stat

    from talesmith.runtime.engine import kvstate

    sizes = {}
    old = os.umask(0o022)
    try:
        for n in (10, 100):
            llama.reset()
            tokens = llama.tokenize("word " * n)
            llama.prefill(tokens)
            kvstate.save(llama, tmp_path / f"s{n}.json")
            path = tmp_path / f"s{n}.kv"
            sizes[len(tokens)] = path.stat().st_size
            assert (
                stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / f"s{n}.kv.meta").stat().st_mode) == 0o600
            )
    finally:
        os.umask(old)
        llama.reset()
    (short, small), (long, large) = sorted(sizes.items())
    per_token = (large - small) / (long - short)
    assert small < 2 * short * per_token and large < 2 * long * per_token  # not the whole context of 2048 cells
