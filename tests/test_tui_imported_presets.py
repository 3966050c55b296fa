"""The app's sampling panel (F4) lists the presets imported with `talesmith import` after the built-in ones."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Select
from tui_fakes import RecordingApp, TakesBackend, wait_until, workers_done

from talesmith.runtime.documents.importers import read_import, save_import
from talesmith.tui.app import AppConfig

pytestmark = pytest.mark.asyncio


async def test_an_imported_preset_is_offered_and_applied_by_f4(tmp_path):
    source = tmp_path / "Godlike.json"
    source.write_text(json.dumps({"temp": 0.7, "top_p": 0.5, "rep_pen": 1.1}))
    save_import(read_import(source), tmp_path / "data")
    backend = TakesBackend([" and the sea rose."], n_ctx=512)
    app = RecordingApp(lambda: backend, AppConfig(data_dir=tmp_path / "data", model_name="fake", mode="story"))
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.backend is not None, timeout=30, what="the model")
        await workers_done(pilot)
        screen = app.screen
        await pilot.press("f4")
        await pilot.pause()
        select = app.screen.query_one("#preset", Select)
        select.value = "Godlike"  # Select refuses a value that is not one of its options
        await pilot.pause()
        assert app.screen.query_one("#s-top_p", Input).value == "0.5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and screen.doc.preset == "Godlike" and screen.doc.settings.temperature == 0.7
