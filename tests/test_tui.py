"""The terminal app driven through Textual's pilot, on scripted backends."""

from __future__ import annotations

import contextlib
import json

import pytest
from textual.widgets import Input, Static, TextArea
from tui_fakes import (
    FailingBackend,
    RecordingApp,
    SlowBackend,
    SlowStateBackend,
    TakesBackend,
    measured,
    wait_until,
    workers_done,
)

from talesmith.runtime.documents.stories import Library
from talesmith.runtime.errors import ModelError
from talesmith.tui.app import AppConfig

pytestmark = pytest.mark.asyncio


def make_app(tmp_path, backend=None, *, mode="story", factory=None, model_name="fake"):
    backend = backend or TakesBackend([" and the sea rose."], n_ctx=512)
    config = AppConfig(data_dir=tmp_path / "data", model_name=model_name, mode=mode)
    return RecordingApp(factory or (lambda: backend), config)


async def settle(pilot, screen=None, timeout=30.0):
    """Wait until the model is loaded, no generation runs and every worker is done."""
    app = pilot.app
    await wait_until(
        pilot,
        lambda: (app.backend is not None or app.model.error) and getattr(screen or app.screen, "job", None) is None,
        timeout=timeout,
        what="the generation",
    )
    await workers_done(pilot)


def status(screen) -> str:
    return str(screen.query_one("#status", Static).render())


def editor(screen) -> TextArea:
    return screen.query_one("#editor", TextArea)


def saved(tmp_path, folder="stories"):
    files = sorted((tmp_path / "data" / folder).glob("*.json"))
    return [json.loads(f.read_text()) for f in files]


async def test_write_then_generate_streams_into_the_editor_and_saves(tmp_path):
    backend = TakesBackend([" and the sea rose."], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Once")
        await pilot.press("ctrl+g")
        await settle(pilot)
        screen = app.screen
        assert editor(screen).text == "Once and the sea rose."
        assert screen.doc.text == "Once and the sea rose."
        assert backend.prompts == ["Once"]
        assert "fake · scripted · ctx" in status(screen)
        assert "tok/s" in status(screen)
        [doc] = saved(tmp_path)  # autosaved right after the generation
        assert doc["text"] == "Once and the sea rose." and doc["kind"] == "story"


async def test_header_memory_and_note_shape_the_prompt(tmp_path):
    backend = TakesBackend([" Then."], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.query_one("#title", Input).focus()
        await pilot.press(*"Dunwich")
        screen.query_one("#tags", Input).focus()
        await pilot.press(*"scary, 3rdperson")
        screen.query_one("#author_note", Input).focus()
        await pilot.press(*"slow")
        screen.query_one("#editor").focus()
        await pilot.press(*"Line one.", "enter", *"Line two.")
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == (
            "[ Title: Dunwich; Tags: scary, 3rdperson ]\n***\n[ Author's note: slow ]\nLine one.\nLine two."
        )
        assert screen.doc.name == "Dunwich"


async def test_stop_interrupts_at_once_and_keeps_the_text(tmp_path):
    backend = SlowBackend([" " + "word " * 200], delay=0.05, n_ctx=4096)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: len(editor(screen).text) > 12)
        assert screen.job is not None and editor(screen).read_only
        await pilot.press("escape")
        assert screen.job is None  # the screen is free at once
        kept = screen.doc.text
        assert 12 < len(kept) < 1000 and kept == editor(screen).text
        await workers_done(pilot)  # the worker has ended: any chunk it still sent was ignored
        assert editor(screen).text == kept and not editor(screen).read_only
        assert saved(tmp_path)[0]["text"] == kept


async def test_after_a_stop_the_status_says_what_the_next_generation_really_evaluates(tmp_path):
    # Saving the model state after the stop holds the model a while; the measure waits for it.
    backend = SlowStateBackend([" " + "word " * 200, " Then."], delay=0.02, save_seconds=0.6, n_ctx=4096)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press(*"It was a dark night and the wind howled.", "ctrl+g")
        await wait_until(pilot, lambda: len(editor(screen).text) > 80)
        await pilot.press("escape")
        await measured(pilot)
        reprocess = screen.last_measure.reprocess
        assert f"re {reprocess}" in status(screen).split(" · ") and reprocess < 5  # the stopped text is cached
        backend.gate.set()
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prefilled[-1] == reprocess and backend.prefilled[0] == len(backend.prompts[0])


async def test_the_speed_shown_leaves_out_a_long_prefill(tmp_path):
    backend = SlowBackend([" " + "word " * 6], delay=0.02, n_ctx=4096)
    backend.prefill_seconds = 2.0
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Once", "ctrl+g")
        await settle(pilot)
        with_prefill = len(" " + "word " * 6) / (2.0 + 0.02 * len(" " + "word " * 6))  # about 14 tok/s
        assert app.screen.tokens_per_second > 2 * with_prefill
        assert f"{app.screen.tokens_per_second:.1f} tok/s" in status(app.screen)


async def test_ui_stays_responsive_while_generating(tmp_path):
    backend = SlowBackend([" " + "word " * 200], delay=0.05, n_ctx=4096)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+g")
        await wait_until(pilot, backend.sampled.is_set)
        await pilot.press("f1")  # the help screen opens while tokens stream
        await wait_until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("escape")
        backend.gate.set()
        await settle(pilot)


async def test_retry_keeps_alternatives_to_cycle_and_keep(tmp_path):
    backend = TakesBackend([" A.", " B.", " C."], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press(*"Go", "ctrl+g")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert editor(screen).text == "Go C."
        assert backend.prompts == ["Go", "Go", "Go"]
        assert "alt 3/3" in status(screen)
        await pilot.press("alt+left")
        assert editor(screen).text == "Go B." and "alt 2/3" in status(screen)
        await pilot.press("alt+right", "alt+right")
        assert editor(screen).text == "Go A."
        await pilot.press("ctrl+t")
        assert screen.doc.alternatives is None and "alt" not in status(screen)
        await pilot.press("ctrl+r")  # nothing left to retry: a notification, no change
        await pilot.pause()
        assert editor(screen).text == "Go A." and backend.calls == 3


async def test_undo_and_redo_across_generations_and_edits(tmp_path):
    backend = TakesBackend([" A.", " B."], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press(*"Go", "ctrl+g")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        await pilot.pause(1.6)  # a pause ends the burst of typing: the edit below is its own step
        await pilot.press(*" Yes")
        assert editor(screen).text == "Go B. Yes"
        await pilot.press("ctrl+z")
        assert editor(screen).text == "Go B."
        await pilot.press("ctrl+z")
        assert editor(screen).text == "Go A."
        await pilot.press("ctrl+z")
        assert editor(screen).text == "Go"
        await pilot.press("ctrl+y", "ctrl+y", "ctrl+y")
        assert editor(screen).text == "Go B. Yes"
        await pilot.press("ctrl+y")  # nothing to redo
        assert editor(screen).text == "Go B. Yes"


async def test_autosave_and_reopen_from_the_list(tmp_path):
    backend = TakesBackend([" A.", " B."], n_ctx=512)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Go", "ctrl+g")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        await pilot.press(*" More")
        await pilot.press("ctrl+q")  # saves on exit
    [doc] = saved(tmp_path)
    assert doc["text"] == "Go B. More"

    app = make_app(tmp_path, TakesBackend([" C."], n_ctx=512))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert editor(screen).text == ""
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert type(app.screen).__name__ == "LibraryScreen"
        await pilot.press("enter")
        await pilot.pause()
        assert editor(screen).text == "Go B. More"
        await pilot.press("ctrl+z")  # the edit typed before is a new step only in that session
        assert editor(screen).text == "Go B. More"


@contextlib.asynccontextmanager
async def renaming(tmp_path):
    """The app with one saved story, "First", its library open and renaming it: (library, app, pilot)."""
    from talesmith.runtime.documents.stories import StoryDocument

    lib = Library(tmp_path / "data" / "stories", "story")
    lib.save("one", StoryDocument(name="First").with_text("It was dark.\n"))
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        yield lib, app, pilot


async def test_story_list_renames_exports_and_deletes(tmp_path):
    async with renaming(tmp_path) as (lib, app, pilot):
        answer = app.screen.query_one("#answer", Input)
        answer.value = ""
        await pilot.press(*"Night", "enter")
        await pilot.pause()
        assert lib.load("one").name == "Night"
        await pilot.press("m")
        await pilot.pause()
        target = tmp_path / "night.md"
        app.screen.query_one("#answer", Input).value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        assert target.read_text() == "# Night\n\nIt was dark.\n"
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert lib.entries() == []
        await pilot.press("escape")


async def test_a_rename_the_library_refuses_is_shown_and_the_list_stays(tmp_path):
    async with renaming(tmp_path) as (lib, app, pilot):
        app.screen.query_one("#answer", Input).value = "  "
        await pilot.press("enter")
        await pilot.pause()
        messages = [n.message for n in app.notified]
        assert "Could not rename 'First': a name cannot be empty; type a name" in messages
        assert [e.name for e in lib.entries()] == ["First"]
        assert [e.name for e in app.screen.entries] == ["First"]


async def test_sampling_panel_validates_and_saves_with_the_story(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("f4")
        await pilot.pause()
        panel = app.screen
        panel.query_one("#s-temperature", Input).value = "hot"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is panel  # refused with a notification, the panel stays open
        assert any("temperature" in n.message for n in app.notified)
        panel.query_one("#s-temperature", Input).value = "0.5"
        panel.query_one("#s-stop", Input).value = '["\\n\\n"]'
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert screen.doc.settings.temperature == 0.5 and screen.doc.settings.stop == ("\n\n",)
        assert screen.doc.preset == "custom"
        await pilot.press("f4")
        await pilot.pause()
        from textual.widgets import Select

        app.screen.query_one("#preset", Select).value = "lit-6b"
        await pilot.pause()
        assert app.screen.query_one("#s-top_p", Input).value == "0.9"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert screen.doc.preset == "lit-6b" and screen.doc.settings.repetition_penalty == 1.2


async def test_a_model_that_fails_to_load_is_a_notification(tmp_path):
    def factory():
        raise ModelError("model file x.gguf does not exist; pass the path of a .gguf file")

    app = make_app(tmp_path, factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Go", "ctrl+g")
        await pilot.pause()
        assert app.is_running and app.screen.job is None
        messages = [n.message for n in app.notified]
        assert any("x.gguf does not exist" in m for m in messages)
        assert "model failed" in status(app.screen)
        assert editor(app.screen).text == "Go"


async def test_a_generation_error_is_a_notification_and_keeps_the_text(tmp_path):
    app = make_app(tmp_path, FailingBackend(["x"], n_ctx=512))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Go", "ctrl+g")
        await settle(pilot)
        assert any("raise --ctx" in n.message for n in app.notified)
        assert editor(app.screen).text == "Go" and app.screen.doc.text == "Go"


async def test_help_lists_every_key(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause()
        text = "\n".join(str(s.render()) for s in app.screen.query(Static))
        for key in ("ctrl+g", "ctrl+r", "alt+left", "ctrl+t", "ctrl+z", "ctrl+y", "ctrl+o", "f4", "f5", "f7", "escape"):
            assert key in text
        await pilot.press("escape")
        assert type(app.screen).__name__ == "StoryScreen"


async def test_deleting_the_open_story_opens_a_new_one_and_writes_nothing(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press(*"Doomed", "ctrl+s")
        await pilot.pause()
        assert len(saved(tmp_path)) == 1
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert editor(screen).text == "" and screen.doc_id is None
        await pilot.press("ctrl+q")
    assert saved(tmp_path) == []


async def test_japanese_synopsis_format(tmp_path):
    backend = TakesBackend(["た。"], n_ctx=1024)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        from textual.widgets import Checkbox

        screen.query_one("#japanese", Checkbox).value = True
        screen.query_one("#synopsis", TextArea).load_text("異世界に転生した。")
        screen.query_one("#title", Input).value = "ignored in this format"
        screen.query_one("#editor").focus()
        await pilot.press(*"それは")
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert backend.prompts[-1] == "あらすじ：異世界に転生した。\n***\nそれは"
        assert editor(screen).text == "それはた。"


async def test_quitting_during_a_generation_saves_what_was_written(tmp_path):
    backend = SlowBackend([" " + "word " * 200], delay=0.05, n_ctx=4096)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press(*"Go", "ctrl+g")
        await wait_until(pilot, lambda: len(editor(app.screen).text) > 12)
        await pilot.press("ctrl+q")
    [doc] = saved(tmp_path)
    assert doc["text"].startswith("Go word word") and doc["model"] == "fake"


async def test_new_documents_take_the_models_preset(tmp_path):
    backend = TakesBackend([" x"], n_ctx=512)
    app = RecordingApp(lambda: backend, AppConfig(data_dir=tmp_path / "data", model_name="lit", preset="lit-6b"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.doc.preset == "lit-6b" and app.screen.doc.settings.repetition_penalty == 1.2
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("f6")
        await pilot.pause()
        app.screen.query_one("#name", Input).value = "Bo"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.doc.character.name == "Bo" and app.screen.doc.preset == "lit-6b"


async def test_an_empty_library_says_so_in_plain_words(tmp_path):
    from textual.widgets import OptionList

    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        options = app.screen.query_one(OptionList)
        assert [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)] == ["No stories yet"]
