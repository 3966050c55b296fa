"""Adventure mode, as KoboldAI's Action mode, NovelAI's Text Adventure and KoboldCpp Lite's adventure
play it: the player's input is an action written into the story as `\\n\\n> You …\\n\\n`, and the model
writes what happens until it starts the next action (`\\n> `).

Do (`> You open the door.`), Say (`> You say, "Hello."`) and Story (the text as a paragraph of the story)
make the three kinds of input. Pure functions over the text; `Adventure` is the prompt-format document,
registered once as the format "adventure" (`--format adventure --action ... --action-kind do`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from talesmith.runtime.documents.formats import LoreSource, PromptFormat, Story, make_document, register_format
from talesmith.runtime.documents.prompts import PromptPlan, plan
from talesmith.runtime.errors import SettingsError

DO: Final = "do"
SAY: Final = "say"
STORY: Final = "story"
KINDS = (DO, SAY, STORY)
MARK = "> "
"""Starts an action's line."""
STOP = "\n> "
"""The model's text ends where it starts the next action..."""
STOPS = (STOP, MARK)
"""...on a line of its own, or right where it begins: after an action the prompt ends a line, so an output
that opens with `> ` starts an action too (prose has no `> ` of its own)."""
STORY_FIELDS = ("title", "author", "genre", "tags", "style", "memory", "author_note", "author_note_depth")
OWN_FIELDS = ("action", "action_kind")

_END = re.compile(r"[.!?…\"'”’)]$")
_ACTION_LINE = re.compile(r"(?m)^> [^\n]*")


def check_kind(kind: object) -> str:
    text = str(kind or DO).strip().lower()
    if text not in KINDS:
        raise SettingsError(f"action kind {kind!r} is unknown; use one of: {', '.join(KINDS)}")
    return text


def _sentence(text: str) -> str:
    return text if _END.search(text) else text + "."


def action_line(kind: str, text: str) -> str:
    """The action as its line reads (`> You open the door.`), or the paragraph itself for STORY."""
    kind = check_kind(kind)
    text = " ".join(text.split())
    if kind == STORY:
        return text
    if kind == SAY:
        said = text.strip('"“”')
        return f'{MARK}You say, "{_sentence(said)}"'
    if re.match(r"(?i)you\b", text):
        text = text[3:].lstrip()
    if not text:
        return f"{MARK}You"
    body = text if text[:2].isupper() else text[0].lower() + text[1:]  # "Open" -> "open", "NPC" stays
    return f"{MARK}You {_sentence(body)}"


def with_action(story: str, kind: str, text: str) -> str:
    """The story with the action written after it: `\\n\\n> You …\\n\\n` (a Story input as a new paragraph),
    so that the model continues from a fresh paragraph. An empty input leaves the story as it is (the model
    just goes on)."""
    line = action_line(kind, text)
    if not text.strip():
        return story
    base = story.rstrip()
    if kind == STORY:
        return (base + "\n\n" if base else "") + line
    return (base + "\n\n" if base else "") + line + "\n\n"


def ends_output(text: str) -> str:
    """The model's output cut where it starts the next action (for text that did not pass the stop strings)."""
    at = text.find(STOP)
    return text if at < 0 else text[:at]


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    action: bool


def segments(text: str) -> list[Segment]:
    """The text in order as narrative and action lines (`> ...` at the start of a line), end to end."""
    out: list[Segment] = []
    at = 0
    for m in _ACTION_LINE.finditer(text):
        if m.start() > at:
            out.append(Segment(at, m.start(), False))
        out.append(Segment(m.start(), m.end(), True))
        at = m.end()
    if at < len(text):
        out.append(Segment(at, len(text), False))
    return out


def kobold_actions(text: str) -> list[str]:
    """The text after the prompt as KoboldAI Client's actions: each player action (`\\n\\n> You …\\n\\n`) is
    an action of its own, and so is each stretch the model wrote between them."""
    out: list[str] = []
    at = 0
    for m in re.finditer(r"\n*^> [^\n]*\n*", text, flags=re.MULTILINE):
        if m.start() > at:
            out.append(text[at : m.start()])
        out.append(m.group(0))
        at = m.end()
    if at < len(text):
        out.append(text[at:])
    return out


@dataclass(frozen=True)
class Adventure:
    """A story played as an adventure: the story's prompt, stopped at the next action."""

    story: Story

    @property
    def lore(self) -> LoreSource:
        return self.story.lore

    @property
    def text(self) -> str:
        return self.story.text


@plan.register
def _(doc: Adventure) -> PromptPlan:
    story_plan = plan(doc.story)
    return dataclasses.replace(story_plan, stops=(*story_plan.stops, *STOPS))


def make_adventure(text: str, fields: Mapping[str, object]) -> Adventure:
    """An adventure from the story so far and, when given, the player's action (`action`, `action_kind`)."""
    kind = check_kind(fields.get("action_kind"))
    action = str(fields.get("action") or "")
    if fields.get("action_kind") and not action.strip():
        raise SettingsError("--action-kind needs an --action: the text of what you do, say or add to the story")
    if action.strip():
        text = with_action(text, kind, action)
    story = make_document("story", text, {k: v for k, v in fields.items() if k in STORY_FIELDS})
    assert isinstance(story, Story)
    return Adventure(story)


ADVENTURE = register_format(PromptFormat("adventure", STORY_FIELDS + OWN_FIELDS, make_adventure))
