"""Instruct presets: prompt formats for models without a chat template, or chosen instead of it.

A preset is a set of turn sequences as SillyTavern's instruct templates write them (`input_sequence`,
`output_sequence`, `system_sequence`, their suffixes, `wrap`, `stop_sequence`, ...). It becomes a chat template
(Jinja text) so that it renders through the same path as a model's own. The built-in set covers the common
families; SillyTavern instruct presets import as the same thing (`preset_from_sillytavern`).

`guess_family` picks a family from a template's text as KoboldCpp's AutoGuess does: the first entry whose
substrings all occur in the template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from talesmith.runtime.errors import InputError
from talesmith.runtime.templates.sources import ChatTemplate, turn_markers


@dataclass(frozen=True)
class InstructPreset:
    name: str
    input_sequence: str = ""
    input_suffix: str = ""
    output_sequence: str = ""
    output_suffix: str = ""
    last_output_sequence: str = ""
    """The generation prompt's sequence when it differs from `output_sequence`."""
    system_sequence: str = ""
    system_suffix: str = ""
    system_same_as_user: bool = False
    stop_sequence: str = ""
    wrap: bool = True
    """A newline between each sequence and its text."""
    system_prompt: str = ""
    """The system prompt used when a card brings none (a SillyTavern system-prompt preset)."""
    story_string: str = ""
    """A SillyTavern context template's story string, used for a chat's system message when set."""
    has_turns: bool = True
    """Whether it says how turns are written (False: only a context template or a system prompt was imported)."""

    def template_text(self) -> str:
        """The preset as a chat template (Jinja): each message is its role's sequence, the text and the suffix."""
        sep = "\n" if self.wrap else ""

        def lit(text: str) -> str:
            return json.dumps(text, ensure_ascii=False)

        def seq(prefix: str) -> str:
            return lit(prefix + sep if prefix else "")

        def turn(prefix: str, suffix: str) -> str:
            return f"{{{{ {seq(prefix)} + message['content'] + {lit(suffix)} }}}}"

        user = (self.input_sequence, self.input_suffix)
        system = user if self.system_same_as_user else (self.system_sequence, self.system_suffix)
        gen = self.last_output_sequence or self.output_sequence
        return (
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' -%}"
            f"{turn(*system)}"
            "{%- elif message['role'] == 'user' -%}"
            f"{turn(*user)}"
            "{%- else -%}"
            f"{turn(self.output_sequence, self.output_suffix)}"
            "{%- endif -%}"
            "{%- endfor -%}"
            f"{{%- if add_generation_prompt -%}}{{{{ {seq(gen)} }}}}{{%- endif -%}}"
        )

    def chat_template(self, *, eos_token: str = "") -> ChatTemplate:
        if not self.has_turns:
            raise InputError(
                f"prompt format {self.name!r} has no turn sequences (only a story string or a system prompt); "
                f"import its SillyTavern instruct template too"
            )
        template = ChatTemplate(
            self.template_text(),
            f"preset {self.name}",
            eos_token=eos_token,
            story_string=self.story_string,
            system_prompt=self.system_prompt,
        )
        stops = (self.stop_sequence, *turn_markers(template), eos_token)
        return replace(template, stop_strings=tuple(dict.fromkeys(s for s in stops if s.strip())))


def _family(
    name: str,
    header: str,
    end: str,
    *,
    user: str = "user",
    assistant: str = "assistant",
    system: str | None = "system",
    stop: str = "",
    wrap: bool = True,
) -> InstructPreset:
    """A family whose turns all open with one header naming the role (`{role}` in it stands for the `user`,
    `assistant` or `system` name) and close with one `end`, which also stops a reply unless `stop` is given;
    with `system` None the system message is written as a user turn."""

    def opens(role: str) -> str:
        return header.replace("{role}", role)

    return InstructPreset(
        name,
        input_sequence=opens(user),
        input_suffix=end,
        output_sequence=opens(assistant),
        output_suffix=end,
        system_sequence="" if system is None else opens(system),
        system_suffix="" if system is None else end,
        system_same_as_user=system is None,
        stop_sequence=stop or end.strip(),
        wrap=wrap,
    )


BUILTIN: dict[str, InstructPreset] = {
    p.name: p
    for p in (
        _family("alpaca", "### {role}:", "\n\n", user="Instruction", assistant="Response", system="Input"),
        _family("chatml", "<|im_start|>{role}", "<|im_end|>\n"),
        _family("llama3", "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", wrap=False),
        InstructPreset(
            "mistral",
            input_sequence="[INST] ",
            output_sequence="[/INST] ",
            output_suffix="</s>",
            last_output_sequence="[/INST]",
            system_same_as_user=True,
            wrap=False,
        ),
        _family("gemma", "<start_of_turn>{role}", "<end_of_turn>\n", assistant="model", system=None),
        _family("phi3", "<|{role}|>\n", "<|end|>\n", wrap=False),
        _family("metharme", "<|{role}|>", "", assistant="model", stop="</s>", wrap=False),
        InstructPreset(
            "vicuna",
            input_sequence="\nUSER: ",
            output_sequence="\nASSISTANT: ",
            output_suffix="</s>",
            system_same_as_user=True,
            wrap=False,
        ),
    )
}
"""The built-in presets, from SillyTavern's instruct templates of the same families."""


def builtin_template(name: str, *, eos_token: str = "") -> ChatTemplate | None:
    preset = BUILTIN.get(name.strip().lower().replace("-", "").replace(" ", ""))
    return preset.chat_template(eos_token=eos_token) if preset else None


# ---- SillyTavern presets ------------------------------------------------------------------------------------

_ST_FIELDS = {f.name for f in fields(InstructPreset)} - {"name", "system_prompt", "story_string", "has_turns"}
INSTRUCT_KEYS = ("input_sequence", "output_sequence")


def preset_kind(data: Any) -> str | None:
    """Which SillyTavern preset a JSON object is: "instruct", "context", "sysprompt", or None."""
    if not isinstance(data, Mapping):
        return None
    if all(isinstance(data.get(k), str) for k in INSTRUCT_KEYS):
        return "instruct"
    if isinstance(data.get("story_string"), str):
        return "context"
    if set(data) <= {"name", "content", "post_history"} and isinstance(data.get("content"), str) and "name" in data:
        return "sysprompt"
    return None


def preset_from_sillytavern(data: Mapping[str, Any], name: str, where: str) -> InstructPreset:
    """An instruct preset from a SillyTavern instruct template (other keys are kept out: names behaviour,
    activation regex, macros); its older `system_sequence_prefix` serves as the system sequence when it has none."""
    values: dict[str, Any] = {}
    for key in _ST_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        expected = bool if key in ("wrap", "system_same_as_user") else str
        if not isinstance(value, expected):
            raise InputError(f"{where}: {key} is {value!r}, not {'true/false' if expected is bool else 'text'}")
        values[key] = value
    if not values.get("system_sequence") and isinstance(data.get("system_sequence_prefix"), str):
        values["system_sequence"] = data["system_sequence_prefix"]
    return InstructPreset(name=name, **values)


def render_story_string(story_string: str, values: Mapping[str, str]) -> str:
    """A SillyTavern story string (`{{#if x}}...{{/if}}`, `{{x}}`, `{{trim}}`) filled from `values`."""
    import re

    def block(m: re.Match[str]) -> str:
        return m.group(2) if values.get(m.group(1), "").strip() else ""

    text = story_string
    for _ in range(8):  # nested blocks, innermost first
        new = re.sub(r"\{\{#if (\w+)\}\}((?:(?!\{\{#if).)*?)\{\{/if\}\}", block, text, flags=re.S)
        if new == text:
            break
        text = new
    text = re.sub(
        r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)) if m.group(1) != "trim" else "\0", text
    )
    if "\0" in text:
        text = "".join(part.strip() if i < text.count("\0") else part for i, part in enumerate(text.split("\0")))
    return text


# ---- family guessing ------------------------------------------------------------------------------------------

AUTOGUESS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("ChatML (Phi 4)", ("<|im_start|>assistant", "<|im_end|>", "<|im_sep|>"), "chatml"),
    (
        "ChatML (Qwen 2.5 based)",
        ("<|im_start|>assistant", "<|im_end|>", "You are provided with function signatures within <tools>"),
        "chatml",
    ),
    (
        "ChatML (Kimi)",
        ("<|im_user|>{{role_name}}<|im_middle|>", "<|im_assistant|>{{role_name}}<|im_middle|>", "<|im_end|>"),
        None,
    ),
    ("ChatML (Kimi Alternate)", ("<|im_user|>", "<|im_system|>system<|im_middle|>", "<|im_end|>"), None),
    ("Google Gemma 2", ("System role not supported", "<start_of_turn>"), "gemma"),
    ("Google Gemma 3", ("<start_of_image>", "<start_of_turn>", "<end_of_turn>"), "gemma"),
    ("Google Gemma 3n", ("<image_soft_token>", "<start_of_turn>model", "<end_of_turn>"), "gemma"),
    ("Google Gemma 4", ("<|turn>model", "<|think|>"), None),
    ("Llama 3.x", ("<|start_header_id|>assistant<|end_header_id|>",), "llama3"),
    ("Llama 4", ("<|header_start|>assistant<|header_end|>",), None),
    ("Granite 4", ("<|start_of_role|>system<|end_of_role|>",), None),
    ("Mistral Tekken", ("[/INST]", "[SYSTEM_PROMPT]"), "mistral"),
    ("Mistral Non-Tekken", ("[/INST]", '"[INST] " + system_message'), "mistral"),
    ("GLM-4", ("[gMASK]<sop>",), None),
    ("Phi 3.5", ("<|system|>", "<|user|>"), "phi3"),
    ("Phi 4 (mini)", ("'<|' + message['role'] + '|>'",), "phi3"),
    ("Cohere", ("<|START_OF_TURN_TOKEN|>",), None),
    ("DeepSeek V2.5", ("<｜User｜>",), None),
    ("OpenAI Harmony", ("<|start|>user<|message|>", "<|channel|>", "<|end|>"), None),
    ("Seed OSS", ("<seed:bos>", "<seed:eos>"), None),
    ("Mistral (Generic)", ("[/INST]",), "mistral"),
    ("ChatML (Generic)", ("<|im_start|>assistant", "<|im_end|>"), "chatml"),
)
"""(family, substrings that must all occur, the built-in preset for it), first match wins, in the order of
KoboldCpp's kcpp_adapters/AutoGuess.json (its entries for families talesmith has no preset for map to None)."""


def guess_family(template_text: str) -> tuple[str, str | None] | None:
    """The family a template's text belongs to and the built-in preset for it; None when nothing matches
    (KoboldCpp then falls back to Alpaca)."""
    for family, needles, preset in AUTOGUESS:
        if all(n in template_text for n in needles):
            return family, preset
    return None
