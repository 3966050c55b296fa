"""Files from other tools, recognised by their content and brought into talesmith's library.

`read_import` reads and checks the whole file first (one InputError naming the file and what is wrong);
only then does `save_import` write the result, in one atomic write, so nothing is ever half-imported:

* a SillyTavern chat (.jsonl, or TavernAI's chat as one JSON list) -> a chat (with the character's card
  if it is in the library);
* a SillyTavern textgen or kobold preset, a NovelAI preset (`novel/*.json`, `.settings`) -> a user preset
  (`<data dir>/presets/NAME.json`);
* a KoboldAI Client story save, a NovelAI `.scenario` -> a story (text, memory, author's note, lorebook);
* a Tavern / SillyTavern card (.png, .json) -> a character (`<data dir>/characters/NAME.json`);
* a lorebook (SillyTavern World Info, a bare character_book, a NovelAI `.lorebook`) ->
  `<data dir>/lorebooks/NAME.json`.

A file already kept under the same name is never written over unless asked (`replace=True`): the import
is kept beside it (`NAME-2.json`). Files of those tools that are not stories, chats, characters, lorebooks
or sampler presets (instruct and context templates, system prompts, quick replies, settings.json) are
refused in one line saying what the file looked like.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.documents.cards import PNG_SIGNATURE, Character, character_from_card, load_card, to_card
from talesmith.runtime.documents.importers import kobold, novelai, presets, prompt_formats, stchat
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import ChatDocument, Library, StoryDocument, slug
from talesmith.runtime.documents.stories import dumps as document_dumps
from talesmith.runtime.documents.worldinfo import carries_lorebook, is_novelai_lorebook, lorebook_from_json
from talesmith.runtime.documents.worldinfo import dumps as lorebook_dumps
from talesmith.runtime.errors import CardError, InputError
from talesmith.runtime.files import MAX_IMPORT, MAX_OWN_FILE, jsonl_objects

KINDS = ("chat", "story", "preset", "character", "lorebook", prompt_formats.KIND)
FOLDERS = {"chat": "chats", "story": "stories", "preset": presets.PRESETS_FOLDER, "character": "characters"}
FOLDERS["lorebook"] = "lorebooks"
FOLDERS[prompt_formats.KIND] = "formats"
CARD_FIELDS = ("description", "first_mes", "personality", "scenario", "mes_example", "char_persona", "char_greeting")
"""Fields of a flat (v1) card, one of which a JSON object with a `name` must have to be read as a card."""


@dataclass(frozen=True)
class Imported:
    kind: str
    """One of KINDS."""
    name: str
    value: Any
    """A ChatDocument, StoryDocument, UserPreset, Character or Lorebook."""
    notes: tuple[str, ...] = ()
    """What the user should know (settings without an equivalent, a card not found, ...)."""


def _read(path: Path) -> bytes:
    return files.read_bounded(path, limit=MAX_IMPORT, what="a file to import")


def _known_character(characters: Path | None, name: str) -> Character | None:
    path = characters / f"{slug(name)}.json" if characters else None
    if path is None or not path.is_file():
        return None
    try:
        return load_card(path)
    except CardError:
        return None


def _keys(data: dict[str, Any], count: int = 6) -> str:
    keys = [str(k) for k in data]
    return ", ".join(keys[:count]) + (f", ... ({len(keys)} keys)" if len(keys) > count else "")


def looks_like(data: Any) -> str:
    """What a JSON value looks like, for a refusal: "a JSON object with keys a, b, c"."""
    if isinstance(data, dict):
        return f"a JSON object with keys {_keys(data)}" if data else "an empty JSON object"
    if isinstance(data, list):
        return f"a JSON list of {len(data)} items"
    return f"a JSON {type(data).__name__} ({str(data)[:40]!r})"


NOT_IMPORTED = "talesmith imports stories, chats, characters, lorebooks and sampler presets"


def refusal(data: Any) -> str | None:
    """Why a file of another tool that is none of what talesmith imports is refused, saying what it looked
    like; None when it is not one of those."""
    if not isinstance(data, dict):
        return None
    if "story_string" in data:
        return (
            "looks like a SillyTavern context template (story_string), not a sampler preset; talesmith "
            "builds each model's own prompt format"
        )
    if "input_sequence" in data and "output_sequence" in data:
        return (
            "looks like a SillyTavern instruct template (input_sequence, output_sequence); talesmith "
            "builds each model's own prompt format and does not import instruct templates"
        )
    if "quickReplySlots" in data or "qrList" in data:
        return f"looks like a SillyTavern quick-reply set ({data.get('name', '')!r}); {NOT_IMPORTED}"
    if "main_api" in data or "textgenerationwebui_settings" in data or "power_user" in data:
        return (
            "looks like SillyTavern's settings.json (all of its settings); import a preset from its "
            "presets/ folders instead"
        )
    if "chat_completion_source" in data or ("prompts" in data and "prompt_order" in data):
        return (
            "looks like a SillyTavern chat-completion (OpenAI) preset: prompts for remote chat APIs; import a "
            "textgen, kobold or NovelAI preset instead"
        )
    if "movingUIState" in data or "main_text_color" in data:
        return f"looks like a SillyTavern UI layout or theme; {NOT_IMPORTED}"
    if set(data) <= {"name", "content", "post_history"} and "content" in data and "name" in data:
        return (
            f"looks like a SillyTavern system prompt preset ({data.get('name')!r}: name and content); talesmith "
            f"takes a system prompt from the character card (F5 in the app)"
        )
    return None


def _is_card(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    if data.get("spec") in ("chara_card_v2", "chara_card_v3") or isinstance(data.get("data"), dict):
        return True
    return "name" in data and any(k in data for k in CARD_FIELDS)


def _preset(preset: presets.UserPreset) -> Imported:
    notes: tuple[str, ...] = ()
    if preset.unmapped:
        effective = preset.effective_unmapped
        notes = tuple(
            line
            for line in (
                "no equivalent, left out: " + ", ".join(f"{k}={v!r}" for k, v in effective.items())
                if effective
                else "",
                "also left out (off, or settings of the tool itself): "
                + ", ".join(k for k in preset.unmapped if k not in effective),
            )
            if line and not line.endswith(": ")
        )
    return Imported("preset", preset.name, preset, notes)


def _is_chat_list(data: Any) -> bool:
    """TavernAI's and SillyTavern's chat objects as one JSON list (metadata first, then messages)."""
    return isinstance(data, list) and bool(data) and all(isinstance(x, dict) for x in data) and stchat.is_st_chat(data)


def _from_json(data: Any, path: Path, characters: Path | None) -> Imported:
    where, name = str(path), path.stem
    prompt_format = prompt_formats.read_prompt_format(data, name, where)
    if prompt_format is not None:  # a SillyTavern instruct, context or system-prompt preset
        return Imported(prompt_formats.KIND, prompt_format[0], prompt_format[1], prompt_format[2])
    why = refusal(data)
    if why is not None:
        raise InputError(f"{where} {why}")
    if presets.is_sampler_preset(data):
        return _preset(presets.from_sillytavern(data, name, where))
    if presets.is_novelai_preset(data):
        return _preset(presets.from_novelai(data, name, where))
    if novelai.is_scenario(data):
        doc, notes = novelai.story_from_scenario(data, name, where)
        return Imported("story", doc.name, doc, notes)
    if kobold.is_kobold_story(data):
        doc = kobold.story_from_kobold(data, name, where)
        return Imported("story", name, doc)
    if _is_chat_list(data):
        return read_import_lines(data, path, characters)
    if is_novelai_lorebook(data) or (
        isinstance(data, dict) and "entries" in data and data.get("spec") not in ("chara_card_v2", "chara_card_v3")
    ):
        book = lorebook_from_json(data, name, where)
        return Imported("lorebook", book.name, book)
    if _is_card(data):
        character = character_from_card(data, where)
        return Imported("character", character.name, character)
    raise InputError(
        f"{where} is not a file talesmith can import: it is {looks_like(data)}; expected a SillyTavern chat "
        f"(.jsonl), preset or World Info, a NovelAI scenario, lorebook or preset, a KoboldAI story, or a "
        f"character card"
    )


def read_import(path: str | os.PathLike[str], *, characters: Path | None = None) -> Imported:
    """Read and check a file to import, recognised by its content; `characters` is the folder of cards
    in which a chat's character is looked up."""
    p = Path(path).expanduser()
    raw = _read(p)
    if raw.startswith(PNG_SIGNATURE):
        character = load_card(p)
        return Imported("character", character.name, character)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p} is not UTF-8 text nor a PNG card; it cannot be imported") from None
    try:
        data = files.parse_json(text, str(p))
    except files.NotJSONError:
        lines = jsonl_objects(text, str(p))
        if not stchat.is_st_chat(lines):
            shape = f"its first line is {looks_like(lines[0])}" if lines else "it holds no JSON"
            raise InputError(
                f"{p} is neither JSON nor a SillyTavern chat (.jsonl whose first line names the character): {shape}"
            ) from None
        return read_import_lines(lines, p, characters)
    if isinstance(data, dict) and "character_name" in data:  # a one-line chat: just the metadata
        return read_import_lines([data], p, characters)
    return _from_json(data, p, characters)


def read_import_lines(lines: list[dict[str, Any]], path: Path, characters: Path | None) -> Imported:
    name = str(lines[0].get("character_name") or "")
    known = _known_character(characters, name)
    doc = stchat.chat_from_st(lines, str(path), character=known)
    notes = (
        ()
        if known
        else (
            f"no card for {name!r} in the library: the chat has a bare character; "
            f"import the card too, then this chat again",
        )
    )
    return Imported("chat", doc.name, doc, notes)


# --- saving -------------------------------------------------------------------------------------------


def target(imported: Imported, data_dir: str | os.PathLike[str]) -> Path | None:
    """The file an import of this name is saved as (characters, lorebooks and presets are named after
    what they hold); None for stories and chats, which always get a new file."""
    root = Path(data_dir)
    if imported.kind == "character":
        return root / "characters" / f"{slug(imported.name)}.json"
    if imported.kind == "lorebook":
        return root / "lorebooks" / f"{slug(imported.name)}.json"
    if imported.kind == "preset":
        return presets.preset_path(root, imported.name)
    return None


def clash(imported: Imported, data_dir: str | os.PathLike[str]) -> Path | None:
    """The file already kept that this import would replace, or None."""
    path = target(imported, data_dir)
    return path if path is not None and (path.exists() or path.is_symlink()) else None


def _text(imported: Imported) -> str:
    value = imported.value
    if isinstance(value, (ChatDocument, StoryDocument)):
        return document_dumps(value)
    if isinstance(value, Character):
        return json.dumps(to_card(value), ensure_ascii=False, indent=1) + "\n"
    if isinstance(value, Lorebook):
        return lorebook_dumps(value, compact=True)
    raise InputError(f"cannot save an import of kind {imported.kind!r}")


def _kept_both(imported: Imported, root: Path) -> tuple[Imported, Path]:
    """The import under a free file name; a preset is also renamed ("Godlike (2)"), as presets are chosen by name."""
    path = target(imported, root)
    assert path is not None
    if not isinstance(imported.value, presets.UserPreset):
        return imported, files.free_path(path)
    n = 2
    while True:
        name = f"{imported.name} ({n})"
        candidate = presets.preset_path(root, name)
        if not (candidate.exists() or candidate.is_symlink()):
            value = dataclasses.replace(imported.value, name=name)
            return dataclasses.replace(imported, name=name, value=value), candidate
        n += 1


def save_import(imported: Imported, data_dir: str | os.PathLike[str], *, replace: bool = False) -> Path:
    """Write an imported thing into the library (see `saved_import`); returns its file."""
    return saved_import(imported, data_dir, replace=replace)[1]


def saved_import(
    imported: Imported, data_dir: str | os.PathLike[str], *, replace: bool = False
) -> tuple[Imported, Path]:
    """Write an imported thing into the library under `data_dir` (one atomic write). A character, lorebook
    or preset of the same name already kept is replaced only with `replace`; else both are kept, the new one
    under a free name. Returns what was saved (renamed when kept beside another preset) and its file.

    The folder, the disk and the saved size are all checked here: each failure is one InputError naming the
    path, and nothing is left half-written."""
    root = Path(data_dir)
    if isinstance(imported.value, prompt_formats.FormatPart):  # a part of a prompt format: merged into it
        return imported, prompt_formats.save_prompt_format(imported.name, imported.value, root)
    folder = root / FOLDERS[imported.kind]
    files.ensure_folder(root, "talesmith's data")
    files.ensure_folder(folder, f"imported {imported.kind}s")
    if isinstance(imported.value, (ChatDocument, StoryDocument)):
        library = Library(folder, imported.kind)
        path = library.path(library.new_id(imported.value.name))
    elif clash(imported, root) is None or replace:
        path = target(imported, root) or folder
    else:
        imported, path = _kept_both(imported, root)
    if path.is_dir():
        raise InputError(f"{path} is a folder; move it away so that the {imported.kind} can be saved there")
    if isinstance(imported.value, presets.UserPreset):
        text = presets.preset_text(imported.value)
    else:
        text = _text(imported)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_OWN_FILE:
        raise InputError(
            f"the {imported.kind} {imported.name!r} would be saved as {size} bytes, more than talesmith reads "
            f"back ({MAX_OWN_FILE}); split the file and import the parts"
        )
    try:
        if isinstance(imported.value, (ChatDocument, StoryDocument)):
            Library(folder, imported.kind).save(path.stem, imported.value)
        else:
            files.write_atomic(path, text, mode=files.PRIVATE)
    except OSError as e:
        raise InputError(f"cannot save {path} ({files.reason(e)}); nothing was imported") from None
    return imported, path


def export_text(source: str | os.PathLike[str], output: str | os.PathLike[str], *, user_name: str | None = None) -> str:
    """A saved talesmith chat as a SillyTavern chat (.jsonl), a saved story as a KoboldAI Client save
    (.json), or a lorebook as SillyTavern World Info (.json): the text to write to `output`. `user_name`
    is the name a chat without its own gives the user's messages (the app's, F8)."""
    from talesmith.runtime.documents.stories import from_dict
    from talesmith.runtime.documents.worldinfo import read_json

    src, out = Path(source).expanduser(), Path(output)
    data = read_json(src, "talesmith chat, story or lorebook")
    suffix = out.suffix.lower()
    if isinstance(data, dict) and data.get("kind") in ("chat", "story"):
        doc = from_dict(data, str(src))
        if isinstance(doc, ChatDocument) and suffix == ".jsonl":
            return stchat.dumps(stchat.chat_to_st(doc, user_name=user_name))
        if isinstance(doc, StoryDocument) and suffix == ".json":
            return json.dumps(kobold.story_to_kobold(doc), ensure_ascii=False) + "\n"
        want = ".jsonl (a SillyTavern chat)" if isinstance(doc, ChatDocument) else ".json (a KoboldAI story)"
        raise InputError(f"{src} is a {data['kind']}; export it to a file ending in {want}")
    if not carries_lorebook(data):
        raise InputError(
            f"{src} is not a saved talesmith chat or story nor a lorebook; `export` writes those back "
            f"(a chat as .jsonl, a story or lorebook as .json)"
        )
    book = lorebook_from_json(data, src.stem, str(src))
    if suffix != ".json":
        raise InputError(f"{src} is a lorebook; export it to a file ending in .json (SillyTavern World Info)")
    return lorebook_dumps(book)
