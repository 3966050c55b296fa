"""Request bodies of the Kobold and OpenAI-compatible APIs, read into talesmith's settings (pure, no I/O).

Clients name one setting several ways (SillyTavern sends `rep_pen` and `repetition_penalty`, `stop` and
`stopping_strings`, `max_tokens` and `max_new_tokens` together); each name maps to one field of
SamplingSettings. Fields talesmith has no sampler for are returned as ignored, for the log; fields that
say nothing about sampling (the prompt, the model, `api_server`, ...) are accepted silently. A value of
the wrong type is a RequestError of one line naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from talesmith.runtime.errors import SettingsError, TalesmithError
from talesmith.runtime.settings import WHOLE_CONTEXT, SamplingSettings


class RequestError(TalesmithError):
    """A request the server refuses: its HTTP status and one line for the client."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} must be a number, got {json.dumps(value)}", param=name)
    return float(value)


def _whole(name: str, value: Any) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise RequestError(f"{name} must be a whole number, got {json.dumps(value)}", param=name)
    return int(number)


def _window(name: str, value: Any) -> int:
    """A look-back window: 0 or less is the whole context (as KoboldCpp and SillyTavern mean it)."""
    n = _whole(name, value)
    return WHOLE_CONTEXT if n <= 0 else n


def _seed(name: str, value: Any) -> int | None:
    n = _whole(name, value)
    return None if n < 0 else n


def _strings(name: str, value: Any) -> tuple[str, ...]:
    """A list of strings, or one string; empty entries are dropped."""
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"{name} must be a string or a list of strings, got {json.dumps(value)}", param=name)
    return tuple(v for v in value if v)


def _phrases(name: str, value: Any) -> tuple[str, ...]:
    """Banned phrases: a list, or one phrase per line."""
    if isinstance(value, str):
        return tuple(line for line in value.splitlines() if line.strip())
    return _strings(name, value)


def _breakers(name: str, value: Any) -> tuple[str, ...]:
    """DRY sequence breakers: a list, a JSON list in a string (SillyTavern's own setting), or comma-separated."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise RequestError(f"{name} is not a JSON list of strings: {value!r}", param=name) from None
        else:
            return tuple(v for v in text.split(",") if v)
    return _strings(name, value)


def _float(name: str, value: Any) -> float:
    return _number(name, value)


_Convert = Callable[[str, Any], Any]
# client field -> (talesmith setting, conversion)
SAMPLER_FIELDS: dict[str, tuple[str, _Convert]] = {
    "max_length": ("max_new_tokens", _whole),
    "max_tokens": ("max_new_tokens", _whole),
    "max_new_tokens": ("max_new_tokens", _whole),
    "n_predict": ("max_new_tokens", _whole),
    "num_predict": ("max_new_tokens", _whole),
    "min_tokens": ("min_new_tokens", _whole),
    "min_length": ("min_new_tokens", _whole),
    "temperature": ("temperature", _float),
    "top_k": ("top_k", _whole),
    "top_p": ("top_p", _float),
    "min_p": ("min_p", _float),
    "typical": ("typical_p", _float),
    "typical_p": ("typical_p", _float),
    "rep_pen": ("repetition_penalty", _float),
    "repetition_penalty": ("repetition_penalty", _float),
    "repeat_penalty": ("repetition_penalty", _float),
    "rep_pen_range": ("repetition_window", _window),
    "repetition_penalty_range": ("repetition_window", _window),
    "repeat_last_n": ("repetition_window", _window),
    "presence_penalty": ("presence_penalty", _float),
    "frequency_penalty": ("frequency_penalty", _float),
    "sampler_seed": ("seed", _seed),
    "seed": ("seed", _seed),
    "stop_sequence": ("stop", _strings),
    "stop": ("stop", _strings),
    "stopping_strings": ("stop", _strings),
    "banned_tokens": ("banned", _phrases),
    "banned_strings": ("banned", _phrases),
    "dry_multiplier": ("dry_multiplier", _float),
    "dry_base": ("dry_base", _float),
    "dry_allowed_length": ("dry_allowed_length", _whole),
    "dry_penalty_last_n": ("dry_window", _window),
    "dry_sequence_breakers": ("dry_sequence_breakers", _breakers),
    "xtc_threshold": ("xtc_threshold", _float),
    "xtc_probability": ("xtc_probability", _float),
    "mirostat": ("mirostat", _whole),
    "mirostat_mode": ("mirostat", _whole),
    "mirostat_tau": ("mirostat_tau", _float),
    "mirostat_eta": ("mirostat_eta", _float),
}
NO_EOS_FIELDS = ("ban_eos_token", "ignore_eos")
"""True: end-of-text is suppressed for the whole reply."""
QUIET_FIELDS = frozenset(
    {
        # what the request is, not how to sample
        "prompt",
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "genkey",
        "user",
        "echo",
        "logprobs",
        "api_type",
        "api_server",
        "max_context_length",
        "truncation_length",
        "num_ctx",
        "quiet",
        "use_story",
        "use_memory",
        "use_authors_note",
        "use_world_info",
        "can_abort",
        "streaming",
        "add_bos_token",
        "skip_special_tokens",
        "include_reasoning",
        "trim_stop",
        "cache_prompt",
        "chat_template_kwargs",
        "continue_final_message",
        "add_generation_prompt",
    }
)
"""Fields that say nothing about sampling, or ask for what talesmith does anyway (trim_stop, cache_prompt)."""


@dataclass(frozen=True)
class Sampling:
    """What a request asks of the sampler."""

    overrides: dict[str, Any]
    """Settings fields to replace in the server's defaults."""
    no_eos: bool = False
    ignored: tuple[str, ...] = ()
    """Fields talesmith has no sampler for (named once in the log)."""
    unlimited: bool = False
    """The client asked for no limit (max_tokens -1): up to the end of the context."""


def read_sampling(body: Mapping[str, Any]) -> Sampling:
    """The sampler fields of a Kobold or OpenAI request body."""
    overrides: dict[str, Any] = {}
    ignored: list[str] = []
    no_eos = False
    unlimited = False
    for name, value in body.items():
        if value is None:
            continue
        if name in SAMPLER_FIELDS:
            setting, convert = SAMPLER_FIELDS[name]
            converted = convert(name, value)
            if setting == "max_new_tokens" and converted <= 0:
                unlimited = True
                overrides.pop("max_new_tokens", None)
                continue
            if setting == "min_new_tokens" and converted <= 0:
                continue
            if setting in ("stop", "banned"):  # several names for one list: their union
                converted = tuple(dict.fromkeys((*overrides.get(setting, ()), *converted)))
            overrides[setting] = converted
        elif name in NO_EOS_FIELDS:
            if not isinstance(value, bool):
                raise RequestError(f"{name} must be true or false, got {json.dumps(value)}", param=name)
            no_eos = no_eos or value
        elif name not in QUIET_FIELDS:
            ignored.append(name)
    return Sampling(
        overrides,
        no_eos=no_eos,
        ignored=tuple(ignored),
        unlimited=unlimited and "max_new_tokens" not in overrides,
    )


def settings_for(base: SamplingSettings, sampling: Sampling, *, room: int) -> SamplingSettings:
    """The request's settings over the server's defaults, its reply capped at `room` tokens (what the context
    leaves after the prompt)."""
    overrides = dict(sampling.overrides)
    wanted = room if sampling.unlimited else overrides.get("max_new_tokens", base.max_new_tokens)
    overrides["max_new_tokens"] = max(1, min(wanted, room))
    low = overrides.get("min_new_tokens", base.min_new_tokens)
    overrides["min_new_tokens"] = (
        overrides["max_new_tokens"] if sampling.no_eos else min(low, overrides["max_new_tokens"])
    )
    try:
        return base.replace(**overrides)
    except SettingsError as e:
        raise RequestError(str(e)) from None


def read_body(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a RequestError saying what is wrong with it."""
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise RequestError(
            f"the request body is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def text_field(body: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else f"{json.dumps(value)[:40]}, not a string"
        raise RequestError(f"{name} must be a string ({what})", param=name)
    return value


def count_field(body: Mapping[str, Any], name: str, *, default: int, most: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    n = _whole(name, value)
    if not 1 <= n <= most:
        raise RequestError(f"{name} {n} must be between 1 and {most}", param=name)
    return n
