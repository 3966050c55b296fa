"""KoboldAI Client story saves (.json: `prompt`, `memory`, `authorsnote`, `actions`, `worldinfo`, ...)
as talesmith stories: the text is the prompt and the actions, the world info a lorebook.

The save as read is kept under `extra["koboldai"]`; exporting writes it back with the edited parts
over it (actions that still begin the text stay as they were; the rest becomes new actions, each adventure
action `> You ...` one of its own, as KoboldAI saves them).
"""

from __future__ import annotations

import copy
from typing import Any

from talesmith.runtime.documents.adventure import kobold_actions
from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.documents.worldinfo import from_kobold, to_kobold
from talesmith.runtime.errors import InputError

KEY = "koboldai"
ANDEPTH = 3
"""KoboldAI's default author's note depth (actions from the end), which talesmith counts in lines."""


def is_kobold_story(data: Any) -> bool:
    return isinstance(data, dict) and "actions" in data and ("prompt" in data or "gamestarted" in data)


def _actions(data: dict[str, Any], where: str) -> list[str]:
    actions = data.get("actions") or []
    if isinstance(actions, dict) and all(str(k).isdigit() for k in actions):  # {"0": "...", "1": "..."}
        actions = [actions[k] for k in sorted(actions, key=int)]
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise InputError(f"{where}: 'actions' must be a list of texts")
    return actions


def story_from_kobold(data: dict[str, Any], name: str, where: str) -> StoryDocument:
    for key in ("prompt", "memory", "authorsnote"):
        if not isinstance(data.get(key) or "", str):
            raise InputError(f"{where}: {key!r} must be text")
    try:
        book = from_kobold(data.get("worldinfo") or [], f"{name} world info")
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"{where}: its world info cannot be read ({e})") from None
    text = (data.get("prompt") or "") + "".join(_actions(data, where))
    story = Story(
        text=text, memory=data.get("memory") or "", author_note=data.get("authorsnote") or "", author_note_depth=ANDEPTH
    )
    return StoryDocument(
        story=story, name=name, lorebooks=(book,) if book.entries else (), extra={KEY: copy.deepcopy(data)}
    )


def story_to_kobold(doc: StoryDocument) -> dict[str, Any]:
    """The story as a KoboldAI Client save, the imported save (if any) written back under the edits."""
    out = copy.deepcopy(doc.extra.get(KEY) or {"gamestarted": True})
    text = doc.story.text
    saved = out.get("prompt")
    prompt = saved if isinstance(saved, str) and text.startswith(saved) else None
    actions: list[str]
    if prompt is None:
        first = kobold_actions(text)
        prompt, actions = (first[0], first[1:]) if first and not first[0].lstrip("\n").startswith("> ") else ("", first)
    else:
        actions, rest = [], text[len(prompt) :]
        for action in _actions(out, "story") if isinstance(out.get("actions"), (list, dict)) else []:
            if not rest.startswith(action):
                break
            actions.append(action)
            rest = rest[len(action) :]
        actions += kobold_actions(rest)
    out.update(prompt=prompt, actions=actions, memory=doc.story.memory, authorsnote=doc.story.author_note)
    if doc.lorebooks or "worldinfo" in out:
        out["worldinfo"] = [item for b in doc.lorebooks for item in to_kobold(b)]
    return out
