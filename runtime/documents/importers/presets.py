"""SillyTavern sampler presets (text-generation-webui "textgen" and KoboldAI "kobold" JSON) as named
talesmith presets, with the settings that have no equivalent listed.

User presets are JSON files in `<data dir>/presets/NAME.json`: `{"name", "source", "settings",
"unmapped"}`, the settings complete (every field of SamplingSettings).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.errors import InputError, SettingsError
from talesmith.runtime.settings import WHOLE_CONTEXT, SamplingSettings

PRESETS_FOLDER = "presets"


def _window(value: Any) -> int:
    """A repetition range: 0 (or less) means the whole context in both tools."""
    return WHOLE_CONTEXT if int(value) <= 0 else int(value)


def _off_at_zero(value: Any) -> float:
    """KoboldAI turns top_p and typical off with 0 as well as with 1."""
    return 1.0 if float(value) <= 0 else float(value)


def _breakers(value: Any) -> tuple[str, ...]:
    return tuple(json.loads(value) if isinstance(value, str) else value)


def _seed(value: Any) -> int | None:
    return None if int(value) < 0 else int(value)


MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "temp": ("temperature", float),
    "temperature": ("temperature", float),
    "top_k": ("top_k", int),
    "top_p": ("top_p", _off_at_zero),
    "min_p": ("min_p", float),
    "typical_p": ("typical_p", _off_at_zero),
    "typical": ("typical_p", _off_at_zero),
    "rep_pen": ("repetition_penalty", float),
    "rep_pen_range": ("repetition_window", _window),
    "presence_pen": ("presence_penalty", float),
    "freq_pen": ("frequency_penalty", float),
    "dry_multiplier": ("dry_multiplier", float),
    "dry_base": ("dry_base", float),
    "dry_allowed_length": ("dry_allowed_length", int),
    "dry_sequence_breakers": ("dry_sequence_breakers", _breakers),
    "dry_penalty_last_n": ("dry_window", _window),
    "xtc_threshold": ("xtc_threshold", float),
    "xtc_probability": ("xtc_probability", float),
    "mirostat_mode": ("mirostat", int),
    "mirostat": ("mirostat", int),
    "mirostat_tau": ("mirostat_tau", float),
    "mirostat_eta": ("mirostat_eta", float),
    "seed": ("seed", _seed),
    "genamt": ("max_new_tokens", int),
    "min_length": ("min_new_tokens", int),
}
"""SillyTavern preset field -> (talesmith setting, conversion)."""

NEUTRAL: dict[str, Any] = {
    "tfs": 1,
    "top_a": 0,
    "epsilon_cutoff": 0,
    "eta_cutoff": 0,
    "rep_pen_slope": 1,
    "rep_pen_decay": 0,
    "no_repeat_ngram_size": 0,
    "penalty_alpha": 0,
    "num_beams": 1,
    "length_penalty": 1,
    "encoder_rep_pen": 1,
    "skew": 0,
    "dynatemp": False,
    "smoothing_factor": 0,
    "guidance_scale": 1,
    "negative_prompt": "",
    "grammar_string": "",
    "grammar": "",
    "banned_tokens": "",
    "logit_bias": [],
    "temperature_last": True,
    "ban_eos_token": False,
    "ignore_eos_token": False,
    "do_sample": True,
    "json_schema": {},
}
"""Settings without an equivalent, at the value where they change nothing (talesmith, as llama.cpp, always
applies temperature after the other samplers: `temperature_last` true)."""

NO_PENALTY_NEUTRAL = ("rep_pen_slope", "rep_pen_decay")
"""Settings that shape the repetition penalty: they change nothing when there is no penalty (rep_pen 1)."""


@dataclass(frozen=True)
class UserPreset:
    name: str
    settings: SamplingSettings
    source: str = ""
    unmapped: dict[str, Any] = field(default_factory=dict)
    """Settings of the source without an equivalent in talesmith, with their values."""

    @property
    def effective_unmapped(self) -> dict[str, Any]:
        """The unmapped settings whose value would change sampling in the tool they came from."""
        no_penalty = self.settings.repetition_penalty == 1.0
        return {
            k: v
            for k, v in self.unmapped.items()
            if k in NEUTRAL and v != NEUTRAL[k] and not (no_penalty and k in NO_PENALTY_NEUTRAL)
        }


def is_sampler_preset(data: Any) -> bool:
    return isinstance(data, dict) and ("temp" in data or "temperature" in data) and "rep_pen" in data


def preset_kind(data: dict[str, Any]) -> str:
    return "textgen" if "typical_p" in data or "temperature_last" in data else "kobold"


def from_sillytavern(data: dict[str, Any], name: str, where: str) -> UserPreset:
    """A named preset from a SillyTavern textgen or kobold preset; values out of range are one error."""
    values: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    for key, value in data.items():
        if key not in MAPPED:
            unmapped[key] = value
            continue
        target, convert = MAPPED[key]
        try:
            values[target] = convert(value)
        except (TypeError, ValueError, json.JSONDecodeError):
            raise InputError(f"{where}: {key} = {value!r} is not a value talesmith can use") from None
    try:
        settings = SamplingSettings(**values)
    except SettingsError as e:
        raise InputError(f"{where}: {e}") from None
    return UserPreset(name=name, settings=settings, source=f"SillyTavern {preset_kind(data)} preset", unmapped=unmapped)


def preset_path(data_dir: Path, name: str) -> Path:
    from talesmith.runtime.documents.stories import slug

    return Path(data_dir) / PRESETS_FOLDER / f"{slug(name)}.json"


def save_preset(data_dir: Path, preset: UserPreset) -> Path:
    path = preset_path(data_dir, preset.name)
    text = (
        json.dumps(
            {
                "name": preset.name,
                "source": preset.source,
                "settings": preset.settings.to_dict(),
                "unmapped": preset.unmapped,
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )
    files.write_atomic(path, text, mode=files.PRIVATE)
    return path


def load_preset(data_dir: Path, name: str) -> UserPreset:
    path = preset_path(data_dir, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        settings = SamplingSettings(**values)
        return UserPreset(str(data["name"]), settings, str(data.get("source", "")), dict(data.get("unmapped", {})))
    except FileNotFoundError:
        raise InputError(f"no user preset {name!r} ({path} does not exist)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SettingsError) as e:
        raise InputError(f"{path} is not a readable talesmith preset ({e})") from None


def find_user_preset(data_dir: Path, name: str) -> UserPreset | None:
    """The user preset of that name, or None when there is none."""
    return load_preset(data_dir, name) if preset_path(data_dir, name).is_file() else None
