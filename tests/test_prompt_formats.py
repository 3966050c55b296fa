"""Instruct presets: the built-in set, SillyTavern instruct/context/system-prompt presets imported as prompt
formats, and family guessing as KoboldCpp's AutoGuess does it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talesmith.runtime.documents.formats import make_document
from talesmith.runtime.documents.importers import read_import, save_import
from talesmith.runtime.documents.instruct import story_string
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.errors import InputError
from talesmith.runtime.templates.choose import choose_template, fallback_preset
from talesmith.runtime.templates.presets import guess_family, render_story_string

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
ST = REAL / "st-presets" / "presets"
ADAPTERS = REAL / "chat-templates" / "koboldcpp-adapters"
FIXTURES = Path(__file__).parent / "golden" / "templates"

ST_CHATML = {
    "input_sequence": "<|im_start|>user",
    "output_sequence": "<|im_start|>assistant",
    "system_sequence": "<|im_start|>system",
    "stop_sequence": "<|im_end|>",
    "wrap": True,
    "names_behavior": "always",
    "output_suffix": "<|im_end|>\n",
    "input_suffix": "<|im_end|>\n",
    "system_suffix": "<|im_end|>\n",
    "system_same_as_user": False,
    "name": "ChatML",
}
ST_CONTEXT = {
    "story_string": "<|im_start|>system\n{{#if system}}{{system}}\n{{/if}}{{#if wiBefore}}{{wiBefore}}\n{{/if}}"
    "{{#if description}}{{description}}\n{{/if}}{{#if scenario}}Scenario: {{scenario}}\n{{/if}}"
    "{{#if wiAfter}}{{wiAfter}}\n{{/if}}{{#if persona}}{{persona}}\n{{/if}}{{trim}}<|im_end|>",
    "example_separator": "",
    "chat_start": "",
    "name": "ChatML",
}


def _import(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    imported = read_import(path)
    return save_import(imported, tmp_path / "data")


def test_instruct_context_and_system_prompt_import_into_one_format(tmp_path):
    _import(tmp_path, "instruct", ST_CHATML)
    saved = _import(tmp_path, "context", ST_CONTEXT)
    _import(tmp_path, "sysprompt", {"name": "ChatML", "content": "You are {{char}}, in a story with {{user}}."})
    assert saved == tmp_path / "data" / "formats" / "chatml.json"
    template = choose_template("ChatML", model=None, data_dir=tmp_path / "data")
    assert template.source == "preset ChatML" and template.stop_strings == ("<|im_end|>", "<|im_start|>user")
    doc = make_document(
        "instruct", "Hi", {"character": "Aqua", "persona": "A goddess.", "scenario": "Axel.", "chat_template": template}
    )
    assert plan(doc).render() == (
        "<|im_start|>system\nYou are Aqua, in a story with You.\nA goddess.\nScenario: Axel.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # importing the instruct part again keeps the story string and the system prompt
    _import(tmp_path, "instruct", {**ST_CHATML, "stop_sequence": "</s>"})
    again = choose_template("chatml", model=None, data_dir=tmp_path / "data")
    assert again.story_string == ST_CONTEXT["story_string"] and "</s>" in again.stop_strings


def test_a_format_without_sequences_says_what_is_missing(tmp_path):
    _import(tmp_path, "context", {**ST_CONTEXT, "name": "Bare"})
    with pytest.raises(InputError, match=r"'Bare' has no turn sequences .* import its SillyTavern instruct template"):
        choose_template("Bare", model=None, data_dir=tmp_path / "data")


def test_story_string_lore_slots():
    template = choose_template("chatml", model=None)
    chat = make_document("chat", "Hi", {"character": "Aqua", "persona": "A goddess.", "scenario": "Axel."})
    text, (before, after) = story_string(chat, template)
    assert text == "A goddess.\nScenario: Axel.\n"
    assert (text[:before], text[before:after]) == ("", "A goddess.\nScenario: Axel.\n")


def test_render_story_string():
    values = {"system": "S", "description": "D", "char": "Aqua", "personality": "", "scenario": "Sc", "persona": "P"}
    default = (
        "{{#if system}}{{system}}\n{{/if}}{{#if description}}{{description}}\n{{/if}}{{#if personality}}"
        "{{char}}'s personality: {{personality}}\n{{/if}}{{#if scenario}}Scenario: {{scenario}}\n{{/if}}"
        "{{#if persona}}{{persona}}\n{{/if}}"
    )
    assert render_story_string(default, values) == "S\nD\nScenario: Sc\nP\n"
    assert render_story_string("<s>{{#if system}}{{system}}\n\n{{/if}}{{trim}}</s>", values) == "<s>S</s>"


@pytest.mark.skipif(not ST.is_dir(), reason="no real SillyTavern presets here")
def test_every_real_instruct_context_and_system_prompt_preset_imports(tmp_path):
    found = sorted(ST.glob("instruct/*.json")) + sorted(ST.glob("context/*.json")) + sorted(ST.glob("sysprompt/*.json"))
    assert len(found) > 60
    for path in found:
        imported = read_import(path)
        assert imported.kind == "format", path.name
        save_import(imported, tmp_path / "data")
    conv = [{"role": "user", "content": "Hi"}]
    for path in sorted(ST.glob("instruct/*.json")):
        name = json.loads(path.read_text(encoding="utf-8"))["name"]
        template = choose_template(name, model=None, data_dir=tmp_path / "data")
        assert "Hi" in template.render(conv).text, name


@pytest.mark.skipif(not ADAPTERS.is_dir(), reason="no KoboldCpp adapters here")
def test_family_guess_agrees_with_koboldcpp():
    """KoboldCpp's own pick for each llama.cpp template (its AutoGuess.json, checked in that repository),
    against ours for the templates kept here."""
    picks = {}
    for line in (ADAPTERS / "autoguess-vs-llamacpp-templates.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, family = line.split(None, 1)
            picks[name] = family.strip()
    checked = 0
    for path in FIXTURES.glob("*.jinja"):
        if path.name in picks:
            guess = guess_family(path.read_text(encoding="utf-8"))
            assert (guess[0] if guess else "NONE -> Alpaca") == picks[path.name], path.name
            checked += 1
    assert checked >= 4
    table = json.loads((ADAPTERS / "AutoGuess.json").read_text(encoding="utf-8"))
    ours = {
        family: needles
        for family, needles, _ in __import__("talesmith.runtime.templates.presets", fromlist=["AUTOGUESS"]).AUTOGUESS
    }
    for entry in table:
        if entry["name"] in ours:
            assert tuple(entry["search"]) == ours[entry["name"]], entry["name"]


@pytest.mark.parametrize(
    ("template", "family", "preset"),
    [
        ("google-gemma-2-2b-it.jinja", "Google Gemma 2", "gemma"),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", "Llama 3.x", "llama3"),
        ("Qwen-Qwen3-0.6B.jinja", "ChatML (Qwen 2.5 based)", "chatml"),
        ("microsoft-Phi-3.5-mini-instruct.jinja", "Phi 3.5", "phi3"),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "Mistral (Generic)", "mistral"),
    ],
)
def test_family_guess(template, family, preset):
    assert guess_family((FIXTURES / template).read_text(encoding="utf-8")) == (family, preset)


def test_a_broken_template_falls_back_to_its_familys_preset():
    template = choose_template(str(FIXTURES / "google-gemma-2-2b-it.jinja"), model=None)
    fallback = fallback_preset(template)
    assert fallback is not None and fallback.source == "preset gemma"
    assert fallback.render([{"role": "user", "content": "Hi"}]).text == (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
