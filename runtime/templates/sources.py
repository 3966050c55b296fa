"""Where a model's chat template comes from, first found wins.

* a GGUF file: `tokenizer.chat_template`, or its named variant `tokenizer.chat_template.NAME`;
* a Hugging Face or ONNX model folder: `chat_template.jinja`, then `chat_template.json`, then
  `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}`);
* one of those files given directly, or a `.jinja` file.

BOS and EOS come from the same place (the GGUF's token list, `tokenizer_config.json`, or
`special_tokens_map.json`). The template's own turn markers become stop strings (`turn_markers`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError, TemplateError
from talesmith.runtime.files import read_bounded
from talesmith.runtime.templates.gguf import read_templates
from talesmith.runtime.templates.render import HostileTemplateError, RenderedChat, render_chat

JINJA_FILE = "chat_template.jinja"
JSON_FILE = "chat_template.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
MAX_FILE = 4 * 1024 * 1024
DEFAULT = "default"


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template and what it needs to render: the model's BOS and EOS texts."""

    text: str
    source: str
    """Where it was found, for messages: `model.gguf (tokenizer.chat_template)`."""
    bos_token: str = ""
    eos_token: str = ""
    stop_strings: tuple[str, ...] = ()
    """Where a reply ends: the end-of-turn token texts and the template's turn markers."""
    name: str = DEFAULT
    variants: tuple[str, ...] = ()
    """The names of the other templates beside it (`tool_use`, `rag`, ...)."""
    add_bos: bool = False
    """Whether the tokenizer adds BOS itself (a rendered BOS is then not added again)."""
    story_string: str = ""
    """An imported SillyTavern context template's story string for a chat's system message ("": the default)."""
    system_prompt: str = ""
    """The system prompt used when a card brings none (an imported SillyTavern system-prompt preset)."""

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        date: _dt.date | None = None,
        extra: Mapping[str, Any] | None = None,
        continue_final_message: bool = False,
    ) -> RenderedChat:
        """render_chat with this template's tokens; a TemplateError names where the template came from."""
        try:
            return render_chat(
                self.text,
                messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
                date=date,
                extra=extra,
                continue_final_message=continue_final_message,
            )
        except HostileTemplateError as e:
            raise HostileTemplateError(f"{self.source}: {e}") from None
        except TemplateError as e:
            raise TemplateError(f"{self.source}: {e}") from None


def _read_text(path: Path) -> str:
    try:
        return read_bounded(path, limit=MAX_FILE, what="a chat template file").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None


def _token_text(value: Any) -> str:
    """A token as tokenizer_config.json writes it: a string, or `{"content": ...}` (AddedToken)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return ""


def _named(value: Any, where: str) -> dict[str, str]:
    """`chat_template` as a string or a list of `{name, template}`, by name."""
    if isinstance(value, str):
        return {DEFAULT: value}
    if isinstance(value, list):
        out = {}
        for item in value:
            if (
                isinstance(item, Mapping)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("template"), str)
            ):
                out[str(item["name"])] = str(item["template"])
        if out:
            return out
    if value is None:
        return {}
    raise InputError(f"{where}: chat_template is neither a string nor a list of {{name, template}}")


def _pick(templates: dict[str, str], name: str | None, source: str) -> tuple[str, str] | None:
    if not templates:
        return None
    if name is None:
        if DEFAULT in templates:
            return DEFAULT, templates[DEFAULT]
        first = next(iter(templates))
        return first, templates[first]
    if name not in templates:
        raise InputError(f"{source} has no chat template named {name!r}; it has: {', '.join(templates)}")
    return name, templates[name]


def _folder_tokens(folder: Path) -> tuple[str, str, bool]:
    bos = eos = ""
    add_bos = False
    for file in (SPECIAL_TOKENS_FILE, CONFIG_FILE):  # the tokenizer config wins
        path = folder / file
        if path.is_file():
            data = _read_json(path)
            if isinstance(data, Mapping):
                bos = _token_text(data.get("bos_token")) or bos
                eos = _token_text(data.get("eos_token")) or eos
                if isinstance(data.get("add_bos_token"), bool):
                    add_bos = bool(data["add_bos_token"])
    return bos, eos, add_bos


def _folder_templates(folder: Path) -> tuple[dict[str, str], str]:
    """The folder's templates and the file they came from, in the order transformers reads them."""
    if (folder / JINJA_FILE).is_file():
        return {DEFAULT: _read_text(folder / JINJA_FILE)}, JINJA_FILE
    if (folder / JSON_FILE).is_file():
        data = _read_json(folder / JSON_FILE)
        value = data.get("chat_template") if isinstance(data, Mapping) else data
        return _named(value, str(folder / JSON_FILE)), JSON_FILE
    if (folder / CONFIG_FILE).is_file():
        data = _read_json(folder / CONFIG_FILE)
        if isinstance(data, Mapping):
            return _named(data.get("chat_template"), str(folder / CONFIG_FILE)), f"{CONFIG_FILE} chat_template"
    return {}, ""


def _from_folder(folder: Path, name: str | None) -> ChatTemplate | None:
    templates, where = _folder_templates(folder)
    picked = _pick(templates, name, str(folder))
    if picked is None:
        return None
    bos, eos, add_bos = _folder_tokens(folder)
    variants = tuple(n for n in templates if n != picked[0])
    return ChatTemplate(picked[1], f"{folder} ({where})", bos, eos, (), picked[0], variants, add_bos)


def _from_gguf(path: Path, name: str | None) -> ChatTemplate | None:
    info = read_templates(path)
    picked = _pick(info.templates, name, str(path))
    if picked is None:
        return None
    key = "tokenizer.chat_template" + ("" if picked[0] == DEFAULT else f".{picked[0]}")
    stops = tuple(dict.fromkeys(t for k in ("eos", "eot", "eom") if (t := info.tokens.get(k))))
    variants = tuple(n for n in info.templates if n != picked[0])
    return ChatTemplate(
        picked[1],
        f"{path.name} ({key})",
        info.tokens.get("bos", ""),
        info.tokens.get("eos", ""),
        stops,
        picked[0],
        variants,
        info.add_bos,
    )


def _from_metadata(metadata: Mapping[str, Any], name: str | None) -> ChatTemplate | None:
    templates = {}
    for key, value in metadata.items():
        if isinstance(value, str) and key.startswith("tokenizer.chat_template"):
            templates[DEFAULT if key == "tokenizer.chat_template" else key.rsplit(".", 1)[-1]] = value
    picked = _pick(templates, name, "the model")
    if picked is None:
        return None
    tokens = metadata.get("tokenizer.ggml.tokens")

    def token(kind: str) -> str:
        index = metadata.get(f"tokenizer.ggml.{kind}_token_id")
        if isinstance(tokens, list) and isinstance(index, int) and 0 <= index < len(tokens):
            return str(tokens[index])
        return ""

    stops = tuple(dict.fromkeys(t for k in ("eos", "eot", "eom") if (t := token(k))))
    return ChatTemplate(picked[1], "the model (tokenizer.chat_template)", token("bos"), token("eos"), stops, picked[0])


def model_template(
    metadata_or_path: Mapping[str, Any] | str | os.PathLike[str], *, name: str | None = None
) -> ChatTemplate | None:
    """The chat template a model carries (None: it has none), with its turn markers as stop strings.

    Takes a GGUF file, a Hugging Face or ONNX model folder, a `tokenizer_config.json`, `chat_template.json` or
    `.jinja` file, or a GGUF metadata mapping. `name` picks a named variant (`tool_use`, ...).
    """
    if isinstance(metadata_or_path, Mapping):
        found = _from_metadata(metadata_or_path, name)
    else:
        path = Path(metadata_or_path).expanduser()
        if path.suffix == ".onnx" and path.is_file():  # an ONNX model's files are beside its graph
            path = path.parent
        if path.is_dir():
            found = _from_folder(path, name)
        elif not path.is_file():
            raise InputError(f"{path} does not exist; give a model file, a model folder or a template file")
        elif path.suffix == ".gguf":
            found = _from_gguf(path, name)
        elif path.name in (CONFIG_FILE, JSON_FILE):
            data = _read_json(path)
            value = data.get("chat_template") if isinstance(data, Mapping) else data
            picked = _pick(_named(value, str(path)), name, str(path))
            bos, eos, add_bos = _folder_tokens(path.parent) if path.name == CONFIG_FILE else ("", "", False)
            found = ChatTemplate(picked[1], f"{path} (chat_template)", bos, eos, (), picked[0]) if picked else None
        else:
            found = ChatTemplate(_read_text(path), str(path))
    if found is None:
        return None
    return replace(found, stop_strings=tuple(dict.fromkeys(found.stop_strings + turn_markers(found))))


# ---- turn markers -------------------------------------------------------------------------------------------

_U1, _A1, _U2 = "\u2063USER-ONE\u2063", "\u2063ASSISTANT-ONE\u2063", "\u2063USER-TWO\u2063"


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n :]


def turn_markers(template: ChatTemplate) -> tuple[str, ...]:
    """The text a template writes after an assistant turn and before a user turn (`<|im_end|>`,
    `<|im_start|>user`), stripped: where a reply that runs on has ended. Empty when the template refuses
    the probe conversation."""
    plain = template
    user_one = {"role": "user", "content": _U1}
    assistant_one = {"role": "assistant", "content": _A1}
    try:
        first = plain.render([user_one], add_generation_prompt=True).text
        two = plain.render([user_one, assistant_one], add_generation_prompt=False).text
        three = plain.render([user_one, assistant_one, {"role": "user", "content": _U2}], add_generation_prompt=False)
    except HostileTemplateError:
        raise
    except TemplateError:
        return ()
    text = three.text
    if _U1 not in first or _A1 not in two or _A1 not in text or _U2 not in text:
        return ()
    between = text[text.index(_A1) + len(_A1) : text.index(_U2)]
    after = two[two.index(_A1) + len(_A1) :]
    if after and between.startswith(after):
        after_assistant, user_prefix = after, between[len(after) :]
    else:
        user_prefix = _common_suffix(first[: first.index(_U1)], between)
        cut = len(between) - len(user_prefix)
        if between.rfind("<", 0, cut) > between.rfind(">", 0, cut):  # the cut splits a <...> marker
            cut = between.find(">", cut) + 1 or len(between)
        after_assistant, user_prefix = between[:cut], between[cut:]
    markers = (after_assistant.strip(), user_prefix.strip())
    # a marker of plain words ("user") would also end replies that merely say them
    return tuple(m for m in markers if len(m) >= 2 and not m.replace(" ", "").isalnum())
