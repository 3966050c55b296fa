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
from talesmith.runtime.settings import INT_FIELDS, WHOLE_CONTEXT, SamplingSettings

PRESETS_FOLDER = "presets"


def _window(value: Any) -> int:
    """A repetition range: 0 (or less) means the whole context in both tools."""
    return WHOLE_CONTEXT if int(value) <= 0 else int(value)


def _off_at_zero(value: Any) -> float:
    """KoboldAI turns top_p and typical off with 0 as well as with 1."""
    return 1.0 if float(value) <= 0 else float(value)


def _breakers(value: Any) -> tuple[str, ...]:
    """SillyTavern keeps the sequence breakers as a JSON list in a text (`'["\\n", ":"]'`), or as a list."""
    if isinstance(value, str):
        try:
            value = files.parse_json(value, "dry_sequence_breakers")
        except InputError as e:
            raise ValueError(str(e)) from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("dry_sequence_breakers must be a list of texts")
    return tuple(value)


def _seed(value: Any) -> int | None:
    return None if int(value) < 0 else int(value)


CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "top_p": _off_at_zero,
    "typical_p": _off_at_zero,
    "repetition_window": _window,
    "dry_window": _window,
    "dry_sequence_breakers": _breakers,
    "seed": _seed,
}
"""How a preset's value becomes a talesmith setting where it is not simply a number (`int` for the settings that
take whole numbers, `float` for the rest)."""


def _conversion(setting: str) -> Callable[[Any], Any]:
    return CONVERSIONS.get(setting) or (int if setting in INT_FIELDS else float)


def _alike(*names: str) -> dict[str, str]:
    """Preset fields named as talesmith names the setting."""
    return {name: name for name in names}


_SHARED = {
    **_alike("temperature", "top_k", "top_p", "min_p", "typical_p", "mirostat_tau"),
    "min_length": "min_new_tokens",
}
"""The fields that SillyTavern and NovelAI presets both name so."""

MAPPED: dict[str, str] = {
    **_SHARED,
    **_alike(
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "dry_sequence_breakers",
        "xtc_threshold",
        "xtc_probability",
        "mirostat",
        "mirostat_eta",
        "seed",
    ),
    "temp": "temperature",
    "typical": "typical_p",
    "rep_pen": "repetition_penalty",
    "rep_pen_range": "repetition_window",
    "presence_pen": "presence_penalty",
    "freq_pen": "frequency_penalty",
    "dry_penalty_last_n": "dry_window",
    "mirostat_mode": "mirostat",
    "genamt": "max_new_tokens",
}
"""SillyTavern preset field -> talesmith setting."""

NOVELAI: dict[str, str] = {
    **_SHARED,
    "repetition_penalty": "repetition_penalty",
    "repetition_penalty_range": "repetition_window",
    "repetition_penalty_presence": "presence_penalty",
    "repetition_penalty_frequency": "frequency_penalty",
    "max_length": "max_new_tokens",
    "mirostat_lr": "mirostat_eta",
}
"""NovelAI preset field (a `novel/*.json` preset, a `.settings` file, a scenario's `settings.parameters`)
-> talesmith setting. NovelAI's repetition penalty is its own scale; it is taken as it is."""


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

NEUTRAL.update(
    {
        "tail_free_sampling": 1,
        "top_a": 0,
        "repetition_penalty_slope": 0,
        "math1_temp": 1,
        "math1_quad": 0,
        "math1_quad_entropy_scale": 0,
        "cfg_scale": 1,
        "phrase_rep_pen": "off",
        "mirostat_tau": 0,
    }
)

NO_PENALTY_NEUTRAL = ("rep_pen_slope", "rep_pen_decay", "repetition_penalty_slope")
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


NOVELAI_SIGNS = ("tail_free_sampling", "repetition_penalty_range", "repetition_penalty_slope", "max_length")


def is_novelai_preset(data: Any) -> bool:
    """A NovelAI preset (SillyTavern's `novel/*.json`, NovelAI's `.settings`): `temperature` with NovelAI's
    own names for the rest, and none of a chat-completion preset's."""
    return (
        isinstance(data, dict)
        and "temperature" in data
        and any(k in data for k in NOVELAI_SIGNS)
        and "rep_pen" not in data
        and "chat_completion_source" not in data
    )


def preset_kind(data: dict[str, Any]) -> str:
    return "textgen" if "typical_p" in data or "temperature_last" in data else "kobold"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _convert(data: dict[str, Any], mapping: dict[str, str], where: str) -> tuple[SamplingSettings, dict[str, Any]]:
    values: dict[str, Any] = {}
    unmapped: dict[str, Any] = {}
    for key, value in data.items():
        if key not in mapping:
            unmapped[key] = value
            continue
        target = mapping[key]
        try:
            values[target] = _conversion(target)(value)
        except (TypeError, ValueError, OverflowError, json.JSONDecodeError):
            raise InputError(f"{where}: {key} = {_short(value)} is not a value talesmith can use") from None
    try:
        return SamplingSettings(**values), unmapped
    except SettingsError as e:
        raise InputError(f"{where}: {e}") from None


def from_sillytavern(data: dict[str, Any], name: str, where: str) -> UserPreset:
    """A named preset from a SillyTavern textgen or kobold preset; values out of range are one error."""
    settings, unmapped = _convert(data, MAPPED, where)
    return UserPreset(name=name, settings=settings, source=f"SillyTavern {preset_kind(data)} preset", unmapped=unmapped)


def from_novelai(data: dict[str, Any], name: str, where: str) -> UserPreset:
    """A named preset from NovelAI sampler settings; values out of range are one error."""
    tau = data.get("mirostat_tau")
    on = isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0  # NovelAI: tau 0 is off
    mapping = NOVELAI if on else {k: v for k, v in NOVELAI.items() if not k.startswith("mirostat")}
    settings, unmapped = _convert(data, mapping, where)
    if on:
        settings = settings.replace(mirostat=2)
    return UserPreset(name=name, settings=settings, source="NovelAI preset", unmapped=unmapped)


def preset_path(data_dir: Path, name: str) -> Path:
    from talesmith.runtime.documents.stories import slug

    return Path(data_dir) / PRESETS_FOLDER / f"{slug(name)}.json"


def preset_text(preset: UserPreset) -> str:
    """A user preset's file: `{"name", "source", "settings", "unmapped"}`."""
    data = {
        "name": preset.name,
        "source": preset.source,
        "settings": preset.settings.to_dict(),
        "unmapped": preset.unmapped,
    }
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


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


def user_presets(data_dir: Path) -> list[UserPreset]:
    """The presets imported into `data_dir`, by name; a file that cannot be read is left out."""
    folder = Path(data_dir) / PRESETS_FOLDER
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            preset = load_preset(data_dir, path.stem)
        except InputError:
            continue
        if preset_path(data_dir, preset.name) == path:  # reachable by its name
            found.append(preset)
    return sorted(found, key=lambda p: p.name.lower())
