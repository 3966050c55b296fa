"""What trying talesmith on real files turned up: presets' notes, export of the wrong kind of file, help text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from talesmith.runtime.documents.importers import export_text, read_import, save_import
from talesmith.runtime.documents.importers.presets import from_sillytavern
from talesmith.runtime.documents.worldinfo import carries_lorebook
from talesmith.runtime.errors import InputError

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"


def test_temperature_last_is_what_talesmith_does_and_first_is_listed():
    last = from_sillytavern({"temp": 1.2, "rep_pen": 1.1, "temperature_last": True}, "a", "a.json")
    first = from_sillytavern({"temp": 1.2, "rep_pen": 1.1, "temperature_last": False}, "b", "b.json")
    assert last.effective_unmapped == {}
    assert first.effective_unmapped == {"temperature_last": False}


def test_penalty_shape_is_not_listed_when_there_is_no_penalty():
    flat = from_sillytavern({"temp": 1, "rep_pen": 1, "rep_pen_slope": 0.7, "rep_pen_decay": 0.5}, "a", "a.json")
    shaped = from_sillytavern({"temp": 1, "rep_pen": 1.1, "rep_pen_slope": 0.7, "rep_pen_decay": 0.5}, "b", "b.json")
    assert flat.effective_unmapped == {}
    assert shaped.effective_unmapped == {"rep_pen_slope": 0.7, "rep_pen_decay": 0.5}


@pytest.mark.skipif(not (REAL / "st-presets").is_dir(), reason="no real SillyTavern presets here")
def test_real_textgen_presets_list_temperature_last_only_when_false():
    for path in sorted((REAL / "st-presets" / "presets" / "textgen").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        notes = " ".join(read_import(path).notes)
        assert ("temperature_last=False" in notes) == (data.get("temperature_last") is False), path.name
        assert "temperature_last=True" not in notes, path.name


def test_exporting_a_preset_says_what_export_takes(tmp_path):
    source = tmp_path / "Godlike.json"
    source.write_text(json.dumps({"temp": 0.7, "rep_pen": 1.1}))
    saved = save_import(read_import(source), tmp_path / "data")
    for out in ("x.out", "x.json"):
        with pytest.raises(InputError) as e:
            export_text(saved, tmp_path / out)
        assert str(e.value) == (
            f"{saved} is not a saved talesmith chat or story nor a lorebook; `export` writes "
            f"those back (a chat as .jsonl, a story or lorebook as .json)"
        )


def test_a_lorebook_to_the_wrong_suffix_is_still_named_a_lorebook(tmp_path):
    book = tmp_path / "w.json"
    book.write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["a"], "content": "A."}}}))
    with pytest.raises(InputError, match=r"is a lorebook; export it to a file ending in \.json"):
        export_text(book, tmp_path / "w.txt")


def test_carries_lorebook_shapes():
    assert carries_lorebook({"entries": {}}) and carries_lorebook({"entries": []})
    assert carries_lorebook({"spec": "chara_card_v2", "data": {}}) and carries_lorebook({"character_book": None})
    assert carries_lorebook({"worldinfo": [], "actions": []})
    assert not carries_lorebook({"name": "x", "settings": {}, "unmapped": {}})
    assert not carries_lorebook([1, 2]) and not carries_lorebook({"worldinfo": []})


def _commands(group: typer.Typer):
    for info in group.registered_commands:
        yield info.name or info.callback.__name__, info.callback
    for sub in group.registered_groups:
        yield from _commands(sub.typer_instance)


def test_every_command_summary_is_one_paragraph_without_a_line_break():
    """`talesmith --help` shows each command's first paragraph as written: a line break in it shows as one."""
    from talesmith.cli.main import app

    found = list(_commands(app))
    assert any(name == "analyze" for name, _ in found)
    for name, callback in found:
        summary = (callback.__doc__ or "").strip().split("\n\n")[0]
        assert "\n" not in summary, f"{name}: {summary!r}"


def test_imported_characters_lorebooks_and_presets_are_readable_by_the_user_only(tmp_path):
    sources = {
        "card.json": {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Zed", "first_mes": "hi"}},
        "world.json": {"entries": {"0": {"uid": 0, "key": ["a"], "content": "A."}}},
        "preset.json": {"temp": 0.7, "rep_pen": 1.1},
    }
    for name, data in sources.items():
        (tmp_path / name).write_text(json.dumps(data))
        path = save_import(read_import(tmp_path / name), tmp_path / "data")
        assert path.stat().st_mode & 0o777 == 0o600, name


def test_verify_of_every_model_reports_a_local_model_whose_file_is_gone(isolated_lock, tmp_path, monkeypatch):
    from talesmith.runtime.models.manage import verify, verify_error
    from talesmith.runtime.models.pinning import add

    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "gone"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(bytes(10))
    add("gone", str(folder))
    (folder / "config.json").unlink()
    (folder / "model.safetensors").unlink()
    checks = [(c.model, c.name, c.state) for c in verify() if c.model == "gone"]
    assert checks == [("gone", "config.json", "missing"), ("gone", "model.safetensors", "missing")]
    assert str(verify_error(verify())).startswith("2 of ")
