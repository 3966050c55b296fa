"""The app with instruct models: F10 chooses the prompt format, the chat goes through it, a thinking model's
thinking is shown folded and never kept, F9 shows the rendered prompt."""

from __future__ import annotations

import json

import pytest
from test_tui import make_app, settle
from test_tui_chat import import_card, messages
from textual.widgets import Select, Static
from tui_fakes import TakesBackend

from talesmith.tui.promptformat import CLASSIC, MODEL, FormatChoice, PromptFormatScreen, folded

CARD = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Aqua", "description": "A goddess."}}


async def choose_format(pilot, value: str) -> None:
    await pilot.press("f10")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, PromptFormatScreen)
    screen.query_one("#format", Select).value = value
    await pilot.pause()


@pytest.mark.asyncio
async def test_chat_through_a_preset_keeps_no_thinking(tmp_path):
    backend = TakesBackend(["<think>They greet me.</think>\n\nHello there!"], n_ctx=4096)
    app = make_app(tmp_path, backend, mode="chat")
    card = tmp_path / "aqua.json"
    card.write_text(json.dumps(CARD))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await import_card(pilot, card)
        await choose_format(pilot, "chatml")
        assert screen.formats.chosen == "chatml"
        await pilot.press(*"Hi", "enter")
        await settle(pilot)
        assert backend.prompts[0] == (
            "<|im_start|>system\nA goddess.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        )
        assert screen.doc.messages[-1].text == "Hello there!"  # the thinking is not kept
        assert "They greet me" not in json.dumps([m.swipes for m in screen.doc.messages])
        assert messages(screen)[-1].endswith("Hello there!")
        await pilot.press("f9")
        await settle(pilot)
        shown = str(app.screen.query_one("#prompt-text", Static).render())
        assert "<|im_start|>user\nHi<|im_end|>" in shown  # the rendered prompt, exactly
        assert "character (persona, scenario, user persona)" in shown  # its parts, with their tokens


def test_format_choice_defaults_and_options(tmp_path):
    choice = FormatChoice(tmp_path)
    assert choice.current("no-such-model.gguf") == CLASSIC
    labels = [value for _, value in choice.options("no-such-model.gguf")]
    assert labels[0] == "alpaca" and labels[-1] == CLASSIC and MODEL not in labels
    assert folded("a b c") == "▸ thinking (3 words, not kept)"


@pytest.mark.asyncio
async def test_story_continues_through_a_preset_and_retries(tmp_path):
    from test_tui import editor

    backend = TakesBackend([" the sea rose.", " the wind fell."], n_ctx=4096)
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        await choose_format(pilot, "llama3")
        await pilot.press(*"Then", "ctrl+g")
        await settle(pilot)
        assert backend.prompts[0].endswith("<|start_header_id|>assistant<|end_header_id|>\n\nThen")
        assert "Continue the story." in backend.prompts[0]
        assert editor(screen).text == "Then the sea rose."
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert editor(screen).text == "Then the wind fell."
        assert backend.prompts[1] == backend.prompts[0]  # a retry at the same point, through the same format
