"""`kill -9` while a generation streams: reopening finds the text streamed up to the last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_tui import editor, make_app, settle

from talesmith.runtime.documents.stories import Library

pytestmark = pytest.mark.asyncio

SCRIPT = " " + " ".join(f"w{i:03d}" for i in range(400))
TOKENS_PER_SECOND = 50
CHILD = textwrap.dedent("""
    import asyncio, sys, time
    sys.path.insert(0, {tests!r})
    from talesmith.tui.app import AppConfig, TalesmithApp
    from tui_fakes import SlowBackend

    async def main():
        backend = SlowBackend([{script!r}], delay={delay}, n_ctx=8192)
        app = TalesmithApp(lambda: backend, AppConfig(data_dir={data!r}, model_name="fake", mode={mode!r}))
        async with app.run_test(size=(80, 24)) as pilot:
            while app.backend is None:
                await pilot.pause(0.05)
            screen = app.screen
            if {mode!r} == "chat":
                await pilot.press("ctrl+o"); await pilot.pause(); await pilot.press("enter"); await pilot.pause()
                screen.query_one("#composer").focus()
                await pilot.press(*"Tell me", "enter")
            else:
                await pilot.press(*"Begin", "ctrl+g")
            deadline = time.monotonic() + 60
            while screen.job is None or len(screen.job.text) < {shown}:
                assert time.monotonic() < deadline, "the generation did not stream {shown} characters"
                await pilot.pause(0.02)
            print(screen.job.text, flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


def run_and_kill(tmp_path: Path, mode: str, shown: int = 150) -> str:
    """Start the app in a process, wait until `shown` characters streamed, kill -9 it; the text it had shown."""
    code = CHILD.format(
        tests=str(Path(__file__).parent),
        script=SCRIPT,
        delay=1 / TOKENS_PER_SECOND,
        data=str(tmp_path / "data"),
        mode=mode,
        shown=shown,
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL and line, child.stderr.read()[-2000:]
    return line.rstrip("\n")


def at_most_two_seconds_lost(streamed: str, saved: str) -> None:
    assert SCRIPT.strip().startswith(saved.strip()) and saved.strip()
    assert len(saved.strip()) >= len(streamed.strip()) - 2 * TOKENS_PER_SECOND


async def test_a_story_killed_mid_stream_keeps_the_streamed_text(tmp_path):
    streamed = run_and_kill(tmp_path, "story")
    [entry] = Library(tmp_path / "data" / "stories", "story").entries()
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        text = editor(app.screen).text
    assert text.startswith("Begin w000 w001")
    at_most_two_seconds_lost(streamed, text[len("Begin") :])


async def test_a_chat_killed_mid_reply_keeps_the_message_and_the_streamed_reply(tmp_path):
    from talesmith.runtime.documents.cards import Character
    from talesmith.runtime.documents.stories import ChatDocument

    chats = Library(tmp_path / "data" / "chats", "chat")
    chats.save("c", ChatDocument.start(Character(name="Aqua", greeting="Hi!")))
    streamed = run_and_kill(tmp_path, "chat")
    doc = chats.load("c")
    assert [m.text for m in doc.messages][:2] == ["Hi!", "Tell me"]
    at_most_two_seconds_lost(streamed, doc.messages[2].text)
