"""SillyTavern instruct, context and system-prompt presets imported as prompt formats.

Each becomes part of a talesmith prompt format of the same name (`<data dir>/formats/NAME.json`), used with
`--chat-template NAME` or chosen in the app: an instruct template gives the turn sequences, a context template
the story string of a chat's system message, a system-prompt preset the system prompt used when a card brings
none. Importing one part of a format already kept replaces that part and keeps the others.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.documents.stories import slug
from talesmith.runtime.errors import InputError
from talesmith.runtime.templates.choose import formats_dir, load_user_preset
from talesmith.runtime.templates.presets import InstructPreset, preset_from_sillytavern, preset_kind

KIND = "format"
LEFT_OUT = {
    "instruct": ("names_behavior", "activation_regex", "first_output_sequence", "user_alignment_message"),
    "context": ("example_separator", "chat_start", "use_stop_strings", "always_force_name2", "trim_sentences"),
    "sysprompt": ("post_history",),
}
"""Settings of each part that talesmith does not use, named in the import's notes when set."""


@dataclasses.dataclass(frozen=True)
class FormatPart:
    """One imported part of a prompt format: which part, and the preset holding it (other fields empty)."""

    part: str
    preset: InstructPreset


def read_prompt_format(data: Any, name: str, where: str) -> tuple[str, FormatPart, tuple[str, ...]] | None:
    """(name, part, notes) when `data` is a SillyTavern instruct, context or system-prompt preset; else None."""
    kind = preset_kind(data)
    if kind is None:
        return None
    own_name = data.get("name") if isinstance(data.get("name"), str) and data["name"].strip() else name
    if kind == "instruct":
        preset = preset_from_sillytavern(data, own_name, where)
    elif kind == "context":
        preset = InstructPreset(own_name, story_string=str(data["story_string"]), has_turns=False)
    else:
        preset = InstructPreset(own_name, system_prompt=str(data["content"]), has_turns=False)
    unused = [key for key in LEFT_OUT[kind] if data.get(key) not in (None, "", False, [])]
    notes = (f"not used by talesmith: {', '.join(unused)}",) if unused else ()
    return own_name, FormatPart(kind, preset), notes


def _merged(old: InstructPreset | None, part: FormatPart) -> InstructPreset:
    if old is None:
        return part.preset
    if part.part == "context":
        return dataclasses.replace(old, story_string=part.preset.story_string)
    if part.part == "sysprompt":
        return dataclasses.replace(old, system_prompt=part.preset.system_prompt)
    return dataclasses.replace(part.preset, story_string=old.story_string, system_prompt=old.system_prompt)


def format_path(root: Path, name: str) -> Path:
    return formats_dir(root) / f"{slug(name)}.json"


def save_prompt_format(name: str, part: FormatPart, root: Path) -> Path:
    """Write (or update) the prompt format `name` with `part`, atomically; its file."""
    folder = formats_dir(root)
    files.ensure_folder(root, "talesmith's data")
    files.ensure_folder(folder, "imported prompt formats")
    path = format_path(root, name)
    old = load_user_preset(path) if path.is_file() else None
    merged = dataclasses.replace(_merged(old, part), name=name)
    text = json.dumps(dataclasses.asdict(merged), ensure_ascii=False, indent=1) + "\n"
    try:
        files.write_atomic(path, text, mode=files.PRIVATE)
    except OSError as e:
        raise InputError(f"cannot save {path} ({files.reason(e)}); nothing was imported") from None
    return path
