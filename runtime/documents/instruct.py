"""The `instruct` prompt format: chats and stories for instruct and chat models, through the model's own chat
template (or an instruct preset), registered as one format.

* A chat: the card, the user's persona, the scenario, the example dialogue and the lorebook entries become the
  system message, in the order and wording of SillyTavern's default story string; the history becomes user and
  assistant turns; the reply is the assistant turn the template opens.
* A story: the header, memory and author's note become the instruction (a user message); the story so far is
  the start of the assistant's answer (a prefill, transformers' `continue_final_message`), so the model goes on
  with the text instead of answering about it.

The plan keeps the history as units, so trimming, lorebooks and the prompt view work as for the other formats;
only the rendering goes through the template.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from talesmith.runtime.documents.cards import fill_macros
from talesmith.runtime.documents.formats import (
    CHARACTER,
    Chat,
    LoreSource,
    PromptFormat,
    Story,
    make_document,
    register_format,
)
from talesmith.runtime.documents.prompts import PromptPlan, author_note, header_line, plan, split_units
from talesmith.runtime.errors import SettingsError, TemplateError
from talesmith.runtime.templates import ChatTemplate, HostileTemplateError, RenderedChat, split_reasoning
from talesmith.runtime.templates.presets import render_story_string
from talesmith.runtime.templates.reasoning import opens_thinking

REASONING = ("show", "hide", "off")
"""What happens to a thinking model's reasoning: shown apart, hidden, or switched off where the template can."""
NEW_CHAT = "[Start a new chat]"
"""The user turn put before a conversation that opens with the character, for templates that need a user first."""
STORY_INSTRUCTION = "Continue the story. Write only what comes next, in the same voice and style."
EXAMPLE_SEPARATOR = "***"
"""SillyTavern's default example separator."""

STORY_FIELDS = ("title", "author", "genre", "tags", "style", "memory", "author_note", "author_note_depth")
CHAT_FIELDS = ("character", "persona", "scenario", "examples", "greeting")
OWN_FIELDS = ("chat_template", "date", "reasoning")


_Wrapped = TypeVar("_Wrapped", Chat, Story)


@dataclass(frozen=True)
class _Instruct(Generic[_Wrapped]):
    """A chat or a story written through a chat template."""

    document: _Wrapped
    template: ChatTemplate
    date: dt.date | None = None
    """The day a template's `strftime_now` gives (None: today)."""
    reasoning: str = "show"

    @property
    def lore(self) -> LoreSource:
        return self.document.lore

    def _plan_fields(self) -> dict[str, Any]:
        """What its plan renders the template with."""
        return {"template": self.template, "date": self.date, "thinking": False if self.reasoning == "off" else None}


class InstructChat(_Instruct[Chat]):
    @property
    def chat(self) -> Chat:
        return self.document


class InstructStory(_Instruct[Story]):
    @property
    def story(self) -> Story:
        return self.document


InstructDocument = InstructChat | InstructStory


_SLOT = "\u2063{}\u2063"


def _unwrapped(template: ChatTemplate, text: str) -> str:
    """A story string without the system turn's own markers around it (SillyTavern's context templates write
    them; the template adds them again)."""
    mark = _SLOT.format("S")
    try:
        probe = template.render([{"role": "system", "content": mark}], add_generation_prompt=False).text
    except TemplateError:
        return text
    if mark not in probe:
        return text
    prefix, suffix = (part.strip() for part in probe.split(mark, 1))
    body = text.strip()
    if prefix and suffix and body.startswith(prefix) and body.endswith(suffix):
        return body[len(prefix) : len(body) - len(suffix)]
    return text


def story_string(chat: Chat, template: ChatTemplate | None = None) -> tuple[str, tuple[int, int]]:
    """The system message of a chat, as SillyTavern's default story string writes it: the system prompt, the
    lorebook's `before` entries, the description, the scenario (`Scenario: ...`), the `after` entries, the user's
    persona; each on its own line; then the example dialogue, each block after `***`. An imported context
    template's story string takes the default's place. Also where the two lorebook slots are (offsets)."""

    def fill(text: str) -> str:
        return fill_macros(text, char=chat.character, user=chat.user_name).strip()

    system = chat.system_prompt if chat.system_prompt.strip() else (template.system_prompt if template else "")
    if template is not None and template.story_string:
        values = {
            "system": fill(system),
            "description": fill(chat.persona),
            "scenario": fill(chat.scenario),
            "persona": fill(chat.user_persona),
            "char": chat.character,
            "user": chat.user_name,
            "wiBefore": _SLOT.format("B"),
            "wiAfter": _SLOT.format("A"),
        }
        text = _unwrapped(template, render_story_string(template.story_string, values))
        text = text.strip("\n") + "\n" if text.strip() else ""
        slots = []
        for mark in ("B", "A"):
            at = text.find(_SLOT.format(mark))
            if at < 0:
                slots.append(len(text))
                continue
            end = at + len(_SLOT.format(mark))
            text = text[:at] + text[end + (1 if text[end : end + 1] == "\n" else 0) :]
            slots.append(at)
        before, after = slots[0], max(slots)
    else:
        text = fill(system) + "\n" if system.strip() else ""
        before = len(text)
        text += fill(chat.persona) + "\n" if chat.persona.strip() else ""
        text += f"Scenario: {fill(chat.scenario)}\n" if chat.scenario.strip() else ""
        after = len(text)
        text += fill(chat.user_persona) + "\n" if chat.user_persona.strip() else ""
    for example in chat.examples:
        text += f"{EXAMPLE_SEPARATOR}\n{fill(example)}\n"
    return text, (before, after)


@dataclass(frozen=True)
class TemplatePlan(PromptPlan):
    """A prompt plan rendered through a chat template: `head` is the system message (a chat) or the
    instruction (a story), the units are the history (chat turns, or the story's lines)."""

    template: ChatTemplate | None = None
    roles: tuple[str, ...] = ()
    """The role of each unit of a chat ("user" or "assistant"); empty for a story."""
    contents: tuple[str, ...] = ()
    """The message text of each unit of a chat."""
    date: dt.date | None = None
    thinking: bool | None = None
    """False: the template is asked to switch thinking off (`enable_thinking`)."""

    @property
    def is_story(self) -> bool:
        return not self.roles

    def messages(self, drop: int = 0) -> list[dict[str, Any]]:
        """The conversation the template renders, with the `drop` oldest units left out."""
        if self.is_story:
            return self._story_messages(drop)
        system = self.head.strip("\n")
        turns = [{"role": r, "content": c} for r, c in zip(self.roles[drop:], self.contents[drop:], strict=True)]
        for depth, text in self.inserts:  # lorebook entries at a depth: before that turn's text
            index = len(turns) - depth
            if index < 0 or not turns:
                system = f"{system}\n{text.strip()}".strip("\n")
            elif index >= len(turns):
                turns[-1]["content"] = f"{turns[-1]['content']}\n{text.strip()}"
            else:
                turns[index]["content"] = f"{text.strip()}\n{turns[index]['content']}"
        if self.tail.strip():
            users = [t for t in turns if t["role"] == "user"]
            if users:
                users[-1]["content"] = f"{users[-1]['content']}\n\n{self.tail.strip()}"
            else:
                turns.append({"role": "user", "content": self.tail.strip()})
        return ([{"role": "system", "content": system}] if system else []) + turns

    def _story_messages(self, drop: int) -> list[dict[str, Any]]:
        text = PromptPlan.render(dataclasses.replace(self, head="", tail="", note=""), drop)
        instruction = self.head.rstrip("\n")
        if self.note.strip():
            instruction += "\n" + self.note.strip()
        return [{"role": "user", "content": instruction}, {"role": "assistant", "content": text}]

    def rendered(self, drop: int = 0) -> RenderedChat:
        """The prompt text and what had to be changed to fit the template (said once, in `notes`)."""
        if self.template is None:
            raise TemplateError("the instruct format needs a chat template")
        extra = {"enable_thinking": False} if self.thinking is False else None
        messages = self.messages(drop)
        kwargs: dict[str, Any] = {"date": self.date, "extra": extra}
        if self.is_story:
            return self.template.render(messages, add_generation_prompt=False, continue_final_message=True, **kwargs)
        try:
            return self.template.render(messages, **kwargs)
        except HostileTemplateError:
            raise
        except TemplateError:
            first = 1 if messages and messages[0]["role"] == "system" else 0
            if len(messages) > first and messages[first]["role"] == "user":
                raise
            aligned = [*messages[:first], {"role": "user", "content": NEW_CHAT}, *messages[first:]]
            result = self.template.render(aligned, **kwargs)
            note = f"the template needs a user message first: {NEW_CHAT} put before the character's"
            return RenderedChat(result.text, (*result.notes, note))

    def render(self, drop: int = 0) -> str:
        return self.rendered(drop).text

    def user_texts(self) -> tuple[str, ...]:
        """Every text of the plan a person wrote (never parsed for special tokens), in prompt order."""
        history = self.units if self.is_story else self.contents
        return (self.head, self.note, *history, self.tail, *(text for _, text in self.inserts))


class TemplateField(dict[str, str]):
    """A chat template as a format field that is written to JSON (a batch's run file): it shows as where the
    template came from and the sha256 of its text, and carries the template itself."""

    def __init__(self, template: ChatTemplate) -> None:
        digest = hashlib.sha256(template.text.encode("utf-8")).hexdigest()
        super().__init__(source=template.source, sha256=digest)
        self.template = template


def reply_content(prompt_plan: object, prompt: str, text: str) -> str:
    """A chat reply without its thinking (`<think>...</think>`), which is never kept in the text."""
    if isinstance(prompt_plan, TemplatePlan) and not prompt_plan.is_story:
        return split_reasoning(text, started=opens_thinking(prompt))[1]
    return text


def _chat_plan(doc: InstructChat) -> TemplatePlan:
    chat = doc.chat
    if not chat.character.strip():
        raise SettingsError("a chat needs a character name; pass --character NAME")
    if chat.writer != CHARACTER or chat.started.strip():
        raise SettingsError(
            "continuing a reply and writing your next line are done in the classic chat format; choose it with f10"
        )
    system, slots = story_string(chat, doc.template)

    def fill(text: str) -> str:
        return fill_macros(text, char=chat.character, user=chat.user_name).strip()

    roles = tuple("assistant" if m.speaker == CHARACTER else "user" for m in chat.messages)
    contents = tuple(fill(m.text) for m in chat.messages)
    names = (chat.character if m.speaker == CHARACTER else chat.user_name for m in chat.messages)
    units = tuple(f"{name}: {text}\n" for name, text in zip(names, contents, strict=True))
    stops = (*doc.template.stop_strings, f"\n{chat.user_name}:")
    return TemplatePlan(
        head=system,
        units=units,
        tail=fill(chat.post_history) if chat.post_history.strip() else "",
        stops=tuple(dict.fromkeys(s for s in stops if s)),
        head_slots=slots,
        roles=roles,
        contents=contents,
        **doc._plan_fields(),
    )


def _story_plan(doc: InstructStory) -> TemplatePlan:
    story = doc.story
    note = author_note(story)
    head = STORY_INSTRUCTION + "\n"
    before = len(head)
    if story.header:
        head += header_line(story)
    after = len(head)
    if story.memory.strip():
        head += story.memory.strip("\n") + "\n"
    return TemplatePlan(
        head=head,
        units=split_units(story.text),
        note=note,
        note_depth=story.author_note_depth,
        stops=doc.template.stop_strings,
        head_slots=(before, after),
        **doc._plan_fields(),
    )


@plan.register
def _(doc: InstructChat) -> PromptPlan:
    return _chat_plan(doc)


@plan.register
def _(doc: InstructStory) -> PromptPlan:
    return _story_plan(doc)


def parse_date(value: object) -> dt.date | None:
    """`--date YYYY-MM-DD` (or a date already); None when not given."""
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise SettingsError(f"date {value!r} is not a date; write it as YYYY-MM-DD") from None


def check_reasoning(value: object) -> str:
    text = str(value or "show").strip().lower()
    if text not in REASONING:
        raise SettingsError(f"reasoning {value!r} is unknown; use one of: {', '.join(REASONING)}")
    return text


def make_instruct(text: str, fields: Mapping[str, object]) -> InstructDocument:
    """An instruct chat (when a character is given) or story, from a prompt's text and fields."""
    template = fields.get("chat_template")
    if isinstance(template, TemplateField):
        template = template.template
    if not isinstance(template, ChatTemplate):
        raise SettingsError(
            "the instruct format needs a chat template and this model has none; "
            "pass --chat-template FILE or a preset name (chatml, llama3, mistral, alpaca, ...)"
        )
    date, reasoning = parse_date(fields.get("date")), check_reasoning(fields.get("reasoning"))
    if fields.get("character"):
        chat = make_document("chat", text, {k: v for k, v in fields.items() if k in CHAT_FIELDS})
        assert isinstance(chat, Chat)
        return InstructChat(chat, template, date, reasoning)
    chat_only = sorted(k for k in fields if k in CHAT_FIELDS)
    if chat_only:
        raise SettingsError(f"{chat_only[0]!r} is a chat field; give --character NAME for an instruct chat")
    story = make_document("story", text, {k: v for k, v in fields.items() if k in STORY_FIELDS})
    assert isinstance(story, Story)
    return InstructStory(story, template, date, reasoning)


INSTRUCT = register_format(PromptFormat("instruct", STORY_FIELDS + CHAT_FIELDS + OWN_FIELDS, make_instruct))
