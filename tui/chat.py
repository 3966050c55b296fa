"""The chat screen: a character, the conversation, a line to write in; replies stream in, regenerated
replies are kept as swipes, any message can be edited or deleted. What to do is chatlogic's to decide;
the characters' dialogs are chatcards'."""

from __future__ import annotations

import dataclasses

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, ListItem, Static

from talesmith.runtime.documents.formats import Chat
from talesmith.runtime.documents.stories import ChatDocument, User

from .base import DocumentScreen
from .chatcards import CARD_BINDINGS
from .chatlogic import (
    NO_CHAT,
    Target,
    act_on_reply,
    placed,
    status_extra,
)
from .chatreplies import ReplyScreen
from .chatwidgets import NO_CHAT_HELP, Composer, MessageList, character_text
from .dialogs import TextEditor
from .generation import Job, Measure
from .promptformat import reply_parts
from .status import StatusLine

__all__ = ["ChatScreen", "Composer", "MessageList", "Target", "placed"]


class ChatScreen(ReplyScreen):
    KIND = "chat"
    FOLDER = "chats"
    BINDINGS = [
        Binding("ctrl+r", "regenerate", "Regen", priority=True, tooltip="Regenerate the last reply as a new swipe"),
        Binding(
            "ctrl+g",
            "continue",
            "Continue",
            priority=True,
            show=False,
            tooltip="Continue the last reply where it stops",
        ),
        Binding(
            "alt+i",
            "impersonate",
            "Write my line",
            priority=True,
            show=False,
            tooltip="Impersonate: the model writes your next line into the box, for you to change and send",
        ),
        Binding(
            "alt+left", "swipe(-1)", "Swipe ◀", priority=True, show=False, tooltip="Previous swipe of the last reply"
        ),
        Binding(
            "alt+right",
            "swipe(1)",
            "Swipe ▶",
            priority=True,
            show=False,
            tooltip="Next swipe of the last reply (past the last: a new one; greetings stop at the last)",
        ),
        *CARD_BINDINGS,
        *DocumentScreen.COMMON_BINDINGS,
    ]

    def blank(self) -> ChatDocument:
        return NO_CHAT

    def empty(self, doc: ChatDocument) -> bool:
        return not doc.character.name

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Static(id="character")
            with Vertical(id="conversation"):
                yield MessageList(id="messages")
                yield Composer(
                    id="composer",
                    soft_wrap=True,
                    compact=True,
                    placeholder="enter sends · shift+enter or ctrl+j: new line",
                )
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.query_one("#composer").focus()

    # --- document -> widgets -----------------------------------------------------------------

    def show(self) -> None:
        doc = self.doc
        self.query_one("#character", Static).update(character_text(doc, self.default_user))
        items = self.query_one("#messages", MessageList)
        index, focused = items.index, items.has_focus
        items.clear()
        self.streaming_item = None
        if not self.has_chat:
            items.append(ListItem(Static(NO_CHAT_HELP, classes="message"), disabled=True))
        for i, _m in enumerate(doc.messages):
            items.append(ListItem(Static(self._message_text(i), classes="message")))
        if focused and doc.messages:  # the message acted on (or the one after it) stays highlighted, in view
            items.index = min(len(doc.messages) - 1 if index is None else index, len(doc.messages) - 1)
        else:  # the conversation's end in view, whatever the window's size
            items.call_after_refresh(items.scroll_end, animate=False)
        self.refresh_status()

    def prompt_document(self) -> Chat | None:
        return self.doc.to_chat(user=self.default_user, global_books=self.global_lorebooks()) if self.has_chat else None

    def own_user(self) -> User | None:
        return User(self.doc.user_name, self.doc.user_persona) if self.has_chat else None

    def set_own_user(self, user: User) -> None:
        self.commit(dataclasses.replace(self.doc, user_name=user.name, user_persona=user.persona))

    def streaming_doc(self, job: Job) -> ChatDocument:
        text = reply_parts(job.text)[1]  # a thinking model's thinking is never kept
        return placed(self.doc, job.base, text) if text.strip() else self.doc

    def on_resize(self, event: events.Resize) -> None:
        items = self.query_one("#messages", MessageList)
        if not items.has_focus:
            items.call_after_refresh(items.scroll_end, animate=False)

    def measured(self, measure: Measure) -> None:
        self._set_dropped(measure.dropped)

    def prepared(self, job: Job, dropped: int) -> None:
        self._set_dropped(dropped)

    def _set_dropped(self, dropped: int) -> None:
        if dropped != self.dropped:
            grew = dropped > self.dropped
            self.dropped = dropped
            if grew:
                self.notify(
                    f"The {dropped} oldest messages no longer fit the context; the character no longer "
                    f"sees them (persona and examples are kept)",
                    severity="warning",
                    timeout=6,
                )
            if self.job is None:
                self.show()

    def status_extra(self) -> str:
        return status_extra(self.doc, self.dropped)

    # --- editing messages --------------------------------------------------------------------

    def on_message_list_act(self, event: MessageList.Act) -> None:
        if self.busy(quiet=False) or not self.has_chat or event.index >= len(self.doc.messages):
            return
        index = event.index
        if event.action == "delete":
            self.commit(self.doc.deleted(index))
            self.notify("Message deleted (ctrl+z brings it back)", timeout=3)
            self.show()
            return
        if event.action in ("regenerate", "swipe", "continue"):
            self._do(act_on_reply(self.doc, event.action, index, event.step))
            return

        def done(text: str | None) -> None:
            if text is not None and text.strip():
                self.commit(self.doc.edited(index, text.strip()))
                self.show()

        self.app.push_screen(
            TextEditor("Edit message · ctrl+s saves · escape cancels", self.doc.messages[index].text), done
        )
