"""The chat screen's replies: sending a line, a reply streaming in, regenerating, continuing, swiping and
impersonating (what each key does is chatlogic's to decide; this shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import ListItem, Static

from talesmith.runtime.documents.stories import ChatDocument

from .chatcards import CardScreen
from .chatlogic import CONTINUE, IMPERSONATE, REPLY, SWIPE, Target, last_reply_target, placed, prompt_for
from .chatwidgets import Composer, MessageList, message_text
from .generation import Job
from .promptformat import folded, reply_parts


class ReplyScreen(CardScreen):
    """A chat screen's generations: where each goes and how its text is shown while it streams."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.dropped = 0
        """How many of the oldest messages no longer fit the context."""
        self.streaming_item: Static | None = None

    def _message_text(self, i: int, streaming: str | None = None) -> Text:
        return message_text(self.doc, i, self.default_user, dropped=self.dropped, streaming=streaming)

    # --- sending and replies -----------------------------------------------------------------

    def on_composer_submitted(self, event: Composer.Submitted) -> None:
        text = event.value.strip()
        if not self.ready():
            return
        if not text:
            if self.doc.messages and not self.doc.last_is_reply:
                self._reply(Target(REPLY))  # ask again for the reply that is missing
            else:
                self.notify("Type a message first", timeout=2)
            return
        event.composer.load_text("")
        self.commit(self.doc.sent(text))
        self.autosave()  # the message is on disk before the reply starts
        self.show()
        self._reply(Target(REPLY))

    def _reply(self, target: Target) -> None:
        prompt = prompt_for(self.doc, target, self.default_user, self.global_lorebooks())
        if not self.start_generation(target, prompt):
            return
        items = self.query_one("#messages", MessageList)
        self.streaming_item = None
        if target.kind == REPLY:
            self.streaming_item = Static(self._message_text(len(self.doc.messages), streaming="…"), classes="message")
            items.append(ListItem(self.streaming_item))
            items.scroll_end(animate=False)
        elif target.kind in (SWIPE, CONTINUE) and target.index < len(items.children):
            self.streaming_item = items.children[target.index].query_one(Static)
            self.streaming_item.update(self._streaming_text(target, ""))

    def _streaming_text(self, target: Target, text: str) -> Text:
        if target.kind == CONTINUE:
            m = self.doc.messages[target.index]
            return self._message_text(target.index, streaming=self.doc.fill(m.text.rstrip(), self.default_user) + text)
        return self._message_text(
            target.index if target.kind == SWIPE else len(self.doc.messages), streaming=text or "…"
        )

    def action_regenerate(self) -> None:
        if not self.ready():
            return
        if self.doc.last_is_reply:
            self._reply(Target(SWIPE, len(self.doc.messages) - 1))
        elif self.doc.messages:
            self._reply(Target(REPLY))
        else:
            self.notify("Nothing to regenerate yet: write a message", timeout=3)

    def action_continue(self) -> None:
        if not self.ready():
            return
        if not self.doc.last_is_reply:
            self.notify("Nothing to continue: the last message is yours; enter asks for a reply", timeout=3)
            return
        self._reply(Target(CONTINUE, len(self.doc.messages) - 1))

    def action_impersonate(self) -> None:
        if self.ready():
            self._reply(Target(IMPERSONATE))

    def action_swipe(self, step: int) -> None:
        if self.ready():
            self._do(last_reply_target(self.doc, step))

    def _do(self, outcome: Target | str | ChatDocument | None) -> None:
        """Carry out what chatlogic decided: write a reply, show the chat changed, or say why not."""
        if isinstance(outcome, Target):
            self._reply(outcome)
        elif isinstance(outcome, str):
            self.notify(outcome, timeout=3)
        elif outcome is not None:
            self.commit(outcome)
            self.show()

    def streamed(self, job: Job, text: str) -> None:
        target: Target = job.base
        thinking, reply = reply_parts(job.text)
        if target.kind == IMPERSONATE:
            self.query_one("#composer", Composer).load_text(reply.strip())
            return
        if self.streaming_item is not None:
            reply = reply if target.kind == CONTINUE else reply.lstrip()
            self.streaming_item.update(
                self._streaming_text(target, f"{folded(thinking)}\n{reply}" if thinking else reply)
            )
            if target.kind == REPLY or target.index == len(self.doc.messages) - 1:
                self.query_one("#messages", MessageList).scroll_end(animate=False)

    def finished(self, job: Job, reason: str | None) -> None:
        target: Target = job.base
        text = reply_parts(job.text)[1]
        if target.kind == IMPERSONATE:
            composer = self.query_one("#composer", Composer)
            composer.load_text(text.strip())  # yours to change, then enter sends it
            composer.move_cursor(composer.document.end)
            composer.focus()
        elif text.strip():
            self.commit(placed(self.doc, target, text))
        if not text.strip() and reason is not None:
            self.notify("The model ended without writing anything; try again (ctrl+r)", timeout=4)
        self.show()
