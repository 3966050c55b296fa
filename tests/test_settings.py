import dataclasses

import pytest

from talesmith.runtime.errors import SettingsError
from talesmith.runtime.settings import PRESETS, WHOLE_CONTEXT, SamplingSettings, parse_value, preset, settings_from


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("top_p", 1.5, "top_p 1.5 is outside (0, 1]"),
        ("top_p", 0.0, "top_p 0.0 is outside (0, 1]"),
        ("temperature", -0.1, "temperature -0.1 is negative"),
        ("top_k", -1, "top_k -1 is negative"),
        ("min_p", 1.0, "min_p 1.0 is outside [0, 1)"),
        ("typical_p", 0.0, "typical_p 0.0 is outside (0, 1]"),
        ("repetition_penalty", 0.0, "repetition_penalty 0.0 must be above 0"),
        ("repetition_window", 0, "repetition_window 0 must be -1 (whole context) or a positive number"),
        ("dry_base", 0.5, "dry_base 0.5 is below 1"),
        ("xtc_threshold", 0.7, "xtc_threshold 0.7 is outside [0, 0.5]"),
        ("mirostat", 3, "mirostat 3 is not a mode"),
        ("seed", -5, "seed -5 is outside"),
        ("max_new_tokens", 0, "max_new_tokens 0 must be at least 1"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("top_k", 2.5, "top_k must be a whole number"),
        ("stop", "END", "stop must be a list of strings"),
        ("banned", ("",), "banned has an empty entry"),
    ],
)
def test_invalid_values_name_the_value(field, value, message):
    with pytest.raises(SettingsError) as e:
        SamplingSettings(**{field: value})
    assert message in str(e.value)


def test_min_new_tokens_cannot_exceed_max():
    with pytest.raises(SettingsError, match="min_new_tokens 50 must be between 0 and max_new_tokens \\(10\\)"):
        SamplingSettings(min_new_tokens=50, max_new_tokens=10)


def test_settings_are_frozen_and_lists_become_tuples():
    s = SamplingSettings(stop=["\n\n"], banned=["Damn"])
    assert s.stop == ("\n\n",) and s.banned == ("Damn",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.temperature = 2.0  # type: ignore[misc]


def test_replace_refuses_unknown_fields():
    with pytest.raises(SettingsError, match="unknown sampling setting 'top_q'"):
        SamplingSettings().replace(top_q=0.5)


def test_presets_carry_the_seed_cards_numbers():
    lit = preset("lit-6b")
    assert (lit.temperature, lit.top_p, lit.repetition_penalty, lit.max_new_tokens) == (1.0, 0.9, 1.2, 100)
    genji = preset("genji-jp")
    assert (genji.temperature, genji.top_p, genji.repetition_penalty, genji.max_new_tokens) == (1.0, 0.9, 1.125, 400)
    tiny = preset("tinystories")
    assert (tiny.temperature, tiny.top_k, tiny.top_p, tiny.max_new_tokens) == (1.25, 250, 1.0, 1096)
    assert tiny.banned == ("Damn", "Shit", "Fuck")
    assert preset("genre-story").max_new_tokens == 200 and not preset("genre-story").greedy
    for name in ("lit-6b", "genji-jp"):  # transformers' generate(): top_k 50 unless set, penalty over all tokens
        assert (preset(name).top_k, preset(name).repetition_window) == (50, WHOLE_CONTEXT)
    genre = preset("genre-story")  # no penalty set: the default window stays
    assert (genre.temperature, genre.top_k, genre.top_p, genre.repetition_penalty, genre.repetition_window) == (
        1.0,
        50,
        1.0,
        1.0,
        64,
    )
    assert set(PRESETS) == {"default", "lit-6b", "genji-jp", "tinystories", "pygmalion", "genre-story"}


def test_preset_overridden_field_by_field():
    s = preset("lit-6b", temperature=0.7)
    assert s.temperature == 0.7 and s.top_p == 0.9 and s.repetition_penalty == 1.2


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SettingsError, match="unknown preset 'nope'; choose one of: default, lit-6b"):
        preset("nope")


def test_parse_value_from_strings():
    assert parse_value("top_k", "40") == 40
    assert parse_value("top_p", " 0.9 ") == 0.9
    assert parse_value("stop", '["\\n", "END"]') == ("\n", "END")
    assert parse_value("banned", "Damn") == ("Damn",)
    assert parse_value("seed", "") is None
    with pytest.raises(SettingsError, match="top_k value 'many' is not a whole number"):
        parse_value("top_k", "many")


def test_settings_from_raw_overrides():
    s = settings_from("tinystories", {"temperature": "0.5", "max_new_tokens": 20})
    assert s.temperature == 0.5 and s.max_new_tokens == 20 and s.top_k == 250


def test_to_dict_round_trips():
    s = preset("tinystories", seed=3)
    assert SamplingSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.to_dict().items()}) == s
