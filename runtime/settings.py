"""One frozen sampling-settings object, validated on creation, shared by every part of talesmith.

The CLI, batch generation, the terminal app and both backends all read this one object;
each backend translates it into its own samplers in exactly one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from talesmith.runtime.errors import SettingsError

WHOLE_CONTEXT = -1
"""A window of -1 means: look back over the whole context."""

DEFAULT_DRY_BREAKERS = ("\n", ":", '"', "*")


def _knob(help: str, default: Any) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SamplingSettings:
    """Every knob of generation. Invalid values raise SettingsError naming the value."""

    temperature: float = _knob("Softmax temperature; 0 picks the most likely token (greedy).", 1.0)
    top_k: int = _knob("Keep only the K most likely tokens; 0 turns it off.", 0)
    top_p: float = _knob("Nucleus sampling: keep the smallest set with this total probability; 1 turns it off.", 1.0)
    min_p: float = _knob("Drop tokens less likely than this fraction of the top token; 0 turns it off.", 0.0)
    typical_p: float = _knob("Locally typical sampling mass; 1 turns it off.", 1.0)
    repetition_penalty: float = _knob("Divide the logits of recently seen tokens by this; 1 turns it off.", 1.0)
    repetition_window: int = _knob("How many recent tokens the penalties look at; -1 is the whole context.", 64)
    presence_penalty: float = _knob("Subtract this from the logit of every token already seen.", 0.0)
    frequency_penalty: float = _knob("Subtract this times the count of each token already seen.", 0.0)
    dry_multiplier: float = _knob("DRY repetition penalty strength; 0 turns DRY off.", 0.0)
    dry_base: float = _knob("DRY penalty growth base (at least 1).", 1.75)
    dry_allowed_length: int = _knob("Repeated sequences up to this many tokens are not penalized by DRY.", 2)
    dry_window: int = _knob("How many recent tokens DRY looks at; -1 is the whole context.", WHOLE_CONTEXT)
    dry_sequence_breakers: tuple[str, ...] = _knob("Strings that end a DRY repeated sequence.", DEFAULT_DRY_BREAKERS)
    xtc_threshold: float = _knob("XTC: tokens above this probability may be excluded (at most 0.5).", 0.1)
    xtc_probability: float = _knob("XTC: chance per step of excluding the top choices; 0 turns XTC off.", 0.0)
    mirostat: int = _knob("Mirostat mode: 0 off, 1 or 2.", 0)
    mirostat_tau: float = _knob("Mirostat target surprise.", 5.0)
    mirostat_eta: float = _knob("Mirostat learning rate.", 0.1)
    seed: int | None = _knob("Random seed; unset picks one and reports it.", None)
    max_new_tokens: int = _knob("Most tokens to generate.", 200)
    min_new_tokens: int = _knob("End-of-text is suppressed until this many tokens are generated.", 0)
    stop: tuple[str, ...] = _knob("Stop when the output contains this string (not included in the output).", ())
    banned: tuple[str, ...] = _knob("A word or phrase that must never appear in the output.", ())

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in LIST_FIELDS:
                if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                    raise SettingsError(f"{f.name} must be a list of strings, got {value!r}")
                object.__setattr__(self, f.name, tuple(value))
            elif f.name in INT_FIELDS:
                if value is None and f.name == "seed":
                    continue
                if isinstance(value, bool) or not isinstance(value, int):
                    raise SettingsError(f"{f.name} must be a whole number, got {value!r}")
            elif f.name in _FLOAT_FIELDS:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise SettingsError(f"{f.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise SettingsError(f"{f.name} must be a finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
        for check in _CHECKS:
            check(self)

    def replace(self, **overrides: Any) -> SamplingSettings:
        """A copy with some fields changed; unknown names are refused."""
        unknown = sorted(set(overrides) - FIELD_NAMES)
        if unknown:
            raise SettingsError(_unknown_message(unknown[0]))
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 and self.mirostat == 0


FIELD_NAMES = frozenset(f.name for f in fields(SamplingSettings))
LIST_FIELDS = frozenset({"dry_sequence_breakers", "stop", "banned"})
"""The settings that hold a list of strings (every other one is a number)."""
INT_FIELDS = {
    "top_k",
    "repetition_window",
    "dry_allowed_length",
    "dry_window",
    "mirostat",
    "seed",
    "max_new_tokens",
    "min_new_tokens",
}
"""The settings that take a whole number."""
_FLOAT_FIELDS = FIELD_NAMES - LIST_FIELDS - INT_FIELDS


def _unknown_message(name: str) -> str:
    return f"unknown sampling setting {name!r}; known settings: {', '.join(sorted(FIELD_NAMES))}"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


def _check_ranges(s: SamplingSettings) -> None:
    _require(s.temperature >= 0, f"temperature {s.temperature} is negative; use 0 (greedy) or more")
    _require(s.top_k >= 0, f"top_k {s.top_k} is negative; use 0 to turn it off")
    _require(0 < s.top_p <= 1, f"top_p {s.top_p} is outside (0, 1]; use a value like 0.9, or 1 to turn it off")
    _require(0 <= s.min_p < 1, f"min_p {s.min_p} is outside [0, 1); use a value like 0.05, or 0 to turn it off")
    _require(0 < s.typical_p <= 1, f"typical_p {s.typical_p} is outside (0, 1]; use 1 to turn it off")
    _require(
        s.repetition_penalty > 0, f"repetition_penalty {s.repetition_penalty} must be above 0; use 1 to turn it off"
    )
    for name in ("repetition_window", "dry_window"):
        value = getattr(s, name)
        _require(
            value == WHOLE_CONTEXT or value >= 1,
            f"{name} {value} must be -1 (whole context) or a positive number of tokens",
        )
    _require(s.dry_multiplier >= 0, f"dry_multiplier {s.dry_multiplier} is negative; use 0 to turn DRY off")
    _require(s.dry_base >= 1, f"dry_base {s.dry_base} is below 1; use a value like 1.75")
    _require(s.dry_allowed_length >= 1, f"dry_allowed_length {s.dry_allowed_length} must be at least 1")
    _require(
        0 <= s.xtc_threshold <= 0.5,
        f"xtc_threshold {s.xtc_threshold} is outside [0, 0.5]; above 0.5 XTC can never apply",
    )
    _require(0 <= s.xtc_probability <= 1, f"xtc_probability {s.xtc_probability} is outside [0, 1]")
    _require(s.mirostat in (0, 1, 2), f"mirostat {s.mirostat} is not a mode; use 0 (off), 1 or 2")
    _require(s.mirostat_tau > 0, f"mirostat_tau {s.mirostat_tau} must be above 0")
    _require(s.mirostat_eta > 0, f"mirostat_eta {s.mirostat_eta} must be above 0")
    _require(s.seed is None or 0 <= s.seed < 2**32, f"seed {s.seed} is outside 0..4294967295")
    _require(s.max_new_tokens >= 1, f"max_new_tokens {s.max_new_tokens} must be at least 1")
    _require(
        0 <= s.min_new_tokens <= s.max_new_tokens,
        f"min_new_tokens {s.min_new_tokens} must be between 0 and max_new_tokens ({s.max_new_tokens})",
    )


def _check_strings(s: SamplingSettings) -> None:
    for name in sorted(LIST_FIELDS):
        for item in getattr(s, name):
            _require(isinstance(item, str), f"{name} entries must be strings, got {item!r}")
            _require(item != "", f"{name} has an empty entry; remove it")


_CHECKS = (_check_ranges, _check_strings)


def _generate(**card: Any) -> dict[str, Any]:
    """A model card that samples through transformers' generate(): generate()'s defaults (temperature 1, top_k 50,
    top_p 1) under what the card sets; a repetition penalty the card sets looks at the whole context, as
    generate() applies it."""
    window = {"repetition_window": WHOLE_CONTEXT} if "repetition_penalty" in card else {}
    return {"temperature": 1.0, "top_k": 50, "top_p": 1.0, **window, **card}


# Presets: one per seed model, with the numbers their model cards use.
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(
        temperature=0.8,
        top_k=40,
        top_p=0.95,
        min_p=0.05,
        repetition_penalty=1.1,
        repetition_window=256,
        max_new_tokens=200,
    ),
    # hakurei/lit-6B: do_sample, temperature 1.0, top_p 0.9, repetition_penalty 1.2, 100 new tokens.
    "lit-6b": _generate(top_p=0.9, repetition_penalty=1.2, max_new_tokens=100),
    # NovelAI/genji-jp: temperature 1, top_p 0.9, repetition_penalty 1.125, min_length 1, 400 new tokens.
    "genji-jp": _generate(top_p=0.9, repetition_penalty=1.125, min_new_tokens=1, max_new_tokens=400),
    # The TinyStories distilgpt2 + LoRA project's inference config.
    "tinystories": dict(
        temperature=1.25,
        top_k=250,
        top_p=1.0,
        repetition_penalty=1.0,
        max_new_tokens=1096,
        banned=("Damn", "Shit", "Fuck"),
    ),
    # Pygmalion-6B's own chat UI defaults.
    "pygmalion": dict(
        temperature=0.5,
        top_k=0,
        top_p=0.9,
        repetition_penalty=1.05,
        repetition_window=WHOLE_CONTEXT,
        max_new_tokens=196,
    ),
    # The Falcon-7B / Llama-2-7B horror and fairy-tale models: sampling (not greedy), 200 new tokens.
    "genre-story": _generate(max_new_tokens=200),
}


def preset(name: str, **overrides: Any) -> SamplingSettings:
    """The settings of a named preset, with some fields overridden."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise SettingsError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
    return SamplingSettings().replace(**{**base, **overrides})


def parse_value(name: str, raw: Any) -> Any:
    """Turn a value from a CSV cell, a TOML table or a command line into the field's type.

    Lists may be given as JSON arrays (`["a", "b"]`) or as a single string.
    """
    if name not in FIELD_NAMES:
        raise SettingsError(_unknown_message(name))
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if name in LIST_FIELDS:
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise SettingsError(f"{name} value {raw!r} is not a JSON list of strings") from None
            return tuple(items)
        return (raw,) if raw else ()
    if name == "seed" and text.lower() in ("", "none", "random"):
        return None
    try:
        return int(text) if name in INT_FIELDS else float(text)
    except ValueError:
        kind = "a whole number" if name in INT_FIELDS else "a number"
        raise SettingsError(f"{name} value {raw!r} is not {kind}") from None


def settings_from(preset_name: str = "default", overrides: Mapping[str, Any] | None = None) -> SamplingSettings:
    """A preset with overrides given as raw values (strings from files or a command line)."""
    parsed = {k: parse_value(k, v) for k, v in (overrides or {}).items()}
    return preset(preset_name, **parsed)
