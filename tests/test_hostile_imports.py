"""Hostile and unlucky inputs to import, export and analyze: device files and FIFOs, duplicate uids, deep
nesting, infinite numbers, file-system errors, existing targets; and the formats of other tools that must
land where they belong (NovelAI, TavernAI, SillyTavern's non-preset files). Each ends in one line and exit
status 2, or works."""

from __future__ import annotations

import errno
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest

from talesmith.runtime import files
from talesmith.runtime.documents import importers
from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import CHARACTER, USER
from talesmith.runtime.documents.importers import read_import, save_import, saved_import
from talesmith.runtime.documents.importers.presets import from_sillytavern, user_presets
from talesmith.runtime.documents.importers.stchat import chat_from_st, chat_to_st, create_date, send_date
from talesmith.runtime.documents.stories import ChatDocument, ChatMessage, Library, StoryDocument, User, export
from talesmith.runtime.documents.worldinfo import load_lorebook
from talesmith.runtime.errors import InputError

pytest_plugins = ["cli_fakes"]  # the run_cli fixture

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"


def one_line(result) -> str:
    """The single error line of a command that failed as a user's mistake."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.rstrip("\n")


def world(*entries: dict) -> dict:
    return {"entries": {str(i): e for i, e in enumerate(entries)}}


def entry(uid: int, key: str, content: str) -> dict:
    return {"uid": uid, "key": [key], "keysecondary": [], "content": content, "comment": key, "order": 100}


# --- case 2: device files and FIFOs are never read ------------------------------------------------------


def test_import_of_a_device_file_is_one_line(run_cli, tmp_path):
    result = run_cli("import", "/dev/zero", "--data-dir", tmp_path / "d")
    assert one_line(result) == (
        "error: /dev/zero is not a regular file (a device, pipe or socket); give the path of a file to import"
    )
    assert not (tmp_path / "d").exists()


def test_import_of_a_fifo_does_not_wait_for_a_writer(run_cli, tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    result = run_cli("import", fifo, "--data-dir", tmp_path / "d")
    assert one_line(result) == (
        f"error: {fifo} is not a regular file (a device, pipe or socket); give the path of a file to import"
    )


def test_a_lorebook_or_export_source_that_is_a_device_is_refused(tmp_path):
    with pytest.raises(InputError) as caught:
        load_lorebook("/dev/zero")
    assert (
        str(caught.value) == "/dev/zero is not a regular file (a device, pipe or socket); give the path of a lorebook"
    )


def test_reading_is_bounded_even_when_the_file_grows(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"x" * 11)
    with pytest.raises(InputError) as caught:
        files.read_bounded(path, limit=10, what="a file to import")
    assert str(caught.value) == f"{path}: 11 bytes is more than talesmith reads as a file to import (10)"
    assert files.read_bounded(path, limit=11, what="a file") == b"x" * 11


# --- case 9: duplicate uids and ids keep every entry ---------------------------------------------------


def test_world_info_entries_sharing_a_uid_are_all_kept_on_import_and_export(run_cli, tmp_path):
    source = tmp_path / "Dup.json"
    source.write_text(json.dumps(world(entry(5, "a", "A."), entry(5, "b", "B."), entry(5, "c", "C."))))
    book = read_import(source).value
    assert [(e.uid, e.keys, e.content) for e in book.entries] == [
        (5, ("a",), "A."),
        (6, ("b",), "B."),
        (7, ("c",), "C."),
    ]
    saved = save_import(read_import(source), tmp_path / "d")
    assert run_cli("export", saved, "-o", tmp_path / "out.json").returncode == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert [(k, e["uid"], e["content"]) for k, e in out["entries"].items()] == [
        ("5", 5, "A."),
        ("6", 6, "B."),
        ("7", 7, "C."),
    ]


def test_a_character_book_with_duplicate_ids_keeps_every_entry(run_cli, tmp_path):
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Aqua",
            "description": "A goddess.",
            "character_book": {
                "entries": [
                    {"id": 1, "keys": ["axel"], "content": "A town."},
                    {"id": 1, "keys": ["water"], "content": "Her element."},
                    {"id": 1, "keys": ["arch"], "content": "A priest."},
                ]
            },
        },
    }
    source = tmp_path / "Aqua.json"
    source.write_text(json.dumps(card))
    assert [e.content for e in load_lorebook(source).entries] == ["A town.", "Her element.", "A priest."]
    assert run_cli("export", source, "-o", tmp_path / "book.json").returncode == 0
    out = json.loads((tmp_path / "book.json").read_text())
    assert sorted(e["content"] for e in out["entries"].values()) == ["A priest.", "A town.", "Her element."]


# --- case 10 and "never lose what the user has": existing targets ---------------------------------------


def saved_story(tmp_path: Path) -> Path:
    source = tmp_path / "niko.json"
    source.write_text(json.dumps({"gamestarted": True, "prompt": "Once.", "actions": [" Then."], "memory": "M"}))
    return save_import(read_import(source), tmp_path / "d")


def test_export_refuses_an_existing_target_its_source_included_unless_forced(run_cli, tmp_path):
    story = saved_story(tmp_path)
    before = story.read_bytes()
    assert one_line(run_cli("export", story, "-o", story)) == (
        f"error: {story} already exists and was left as it is; give --force to replace it, or another -o path"
    )
    assert story.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    assert one_line(run_cli("export", story, "-o", notes)).startswith(f"error: {notes} already exists")
    assert notes.read_text() == "mine"
    assert run_cli("export", story, "-o", notes, "--force").returncode == 0
    assert json.loads(notes.read_text())["prompt"] == "Once."


def test_export_to_a_folder_or_to_proc_is_one_line(run_cli, tmp_path):
    story = saved_story(tmp_path)
    (tmp_path / "out.json").mkdir()
    assert one_line(run_cli("export", story, "-o", tmp_path / "out.json")) == (
        f"error: {tmp_path / 'out.json'} is a folder; give the name of a file to write"
    )
    line = one_line(run_cli("export", story, "-o", "/proc/x.json"))
    assert line.startswith("error: cannot write /proc/x.json (") and line.endswith("); choose another -o path")


def test_analyze_html_refuses_an_existing_report(run_cli, tmp_path):
    data = tmp_path / "set.jsonl"
    data.write_text('{"text": "A happy end."}\n')
    report = tmp_path / "report.html"
    report.write_text("last week's report")
    assert one_line(run_cli("analyze", data, "--html", report)) == (
        f"error: {report} already exists and was left as it is; give --force to replace it, or another --html path"
    )
    assert report.read_text() == "last week's report"


def test_the_apps_export_never_writes_over_a_file_and_names_the_user(tmp_path):
    chat = ChatDocument(
        character=Character("Seraphina"),
        messages=(ChatMessage(CHARACTER, ("Welcome.",)), ChatMessage(USER, ("Thanks.",))),
        name="Chat with Seraphina",
    )
    first = export(chat, tmp_path / "chat.md", user=User("Kaito"))
    assert "**Kaito:** Thanks." in first.read_text() and "You" not in first.read_text()
    with pytest.raises(InputError) as caught:
        export(chat, tmp_path / "chat.md", user=User("Kaito"))
    assert str(caught.value) == f"{tmp_path / 'chat.md'} already exists and was left as it is; choose another name"
    assert files.free_path(tmp_path / "chat.md") == tmp_path / "chat-2.md"


# --- case 12: what import accepts, talesmith reads back --------------------------------------------------


def test_an_imported_lorebook_is_saved_no_larger_than_it_came(tmp_path):
    source = tmp_path / "Big.json"
    source.write_text(json.dumps(world(*(entry(i, f"k{i}", "lore " * 50) for i in range(200))), indent=4))
    saved = save_import(read_import(source), tmp_path / "d")
    assert saved.stat().st_size < source.stat().st_size
    assert files.MAX_OWN_FILE >= 4 * files.MAX_IMPORT
    assert len(load_lorebook(saved).entries) == 200


def test_an_import_whose_saved_form_talesmith_could_not_read_back_is_refused(tmp_path, monkeypatch):
    source = tmp_path / "Big.json"
    source.write_text(json.dumps(world(*(entry(i, f"k{i}", "x" * 100) for i in range(20)))))
    monkeypatch.setattr(importers, "MAX_OWN_FILE", 1000)
    with pytest.raises(InputError) as caught:
        save_import(read_import(source), tmp_path / "d")
    assert str(caught.value).startswith("the lorebook 'Big' would be saved as ")
    assert str(caught.value).endswith(
        "bytes, more than talesmith reads back (1000); split the file and import the parts"
    )
    assert not (tmp_path / "d" / "lorebooks" / "big.json").exists()


def test_a_large_chat_exports_after_import(run_cli, tmp_path):
    lines = [{"user_name": "K", "character_name": "Aqua"}] + [
        {"name": "Aqua", "is_user": False, "mes": "word " * 200} for _ in range(300)
    ]
    source = tmp_path / "Aqua.jsonl"
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    saved = save_import(read_import(source), tmp_path / "d")
    assert saved.stat().st_size > source.stat().st_size  # the document keeps the file and its messages
    assert run_cli("export", saved, "-o", tmp_path / "back.jsonl").returncode == 0
    assert (tmp_path / "back.jsonl").read_text() == source.read_text().replace(": ", ":").replace(", ", ",")


# --- case 15 and 16: deep nesting and infinite numbers -------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "name, text",
    [
        ("world.json", '{"entries": {"0": {"key": ["a"], "content": "A", "extensions": ' + nested(600) + "}}}"),
        ("chat.jsonl", '{"character_name": "A"}\n{"mes": "x", "extra": ' + nested(600) + "}\n"),
        ("save.json", '{"prompt": "p", "actions": [], "worldinfo": [{"key": "a", "x": ' + nested(900) + "}]}"),
    ],
)
def test_deep_nesting_is_one_line(run_cli, tmp_path, name, text):
    source = tmp_path / name
    source.write_text(text)
    line = one_line(run_cli("import", source, "--data-dir", tmp_path / "d"))
    if name.endswith(".jsonl"):
        assert line == f"error: {source} line 2 is not JSON (nested too deeply); each line must be one JSON object"
    else:
        assert line == f"error: {source} is nested too deeply (more than 100 levels of lists and objects)"
    assert not (tmp_path / "d").exists()


def test_nesting_ten_thousand_deep_is_the_same_line(tmp_path):
    source = tmp_path / "deep.json"
    source.write_text(nested(10_000))
    with pytest.raises(InputError) as caught:
        read_import(source)
    assert str(caught.value) == f"{source} is nested too deeply (more than 100 levels of lists and objects)"


def test_sequence_breakers_nested_five_thousand_deep_are_one_line(tmp_path):
    source = tmp_path / "Deep.json"
    source.write_text(json.dumps({"temp": 1, "rep_pen": 1, "dry_sequence_breakers": nested(5000)}))
    with pytest.raises(InputError) as caught:
        read_import(source)
    shown = "'" + "[" * 56 + "..."
    assert str(caught.value) == f"{source}: dry_sequence_breakers = {shown} is not a value talesmith can use"


@pytest.mark.parametrize(
    "body, number",
    [
        ('{"temp": 1, "rep_pen": 1, "top_k": 1e999}', "1e999"),
        ('{"temp": 1, "rep_pen": 1, "seed": -1e999}', "-1e999"),
        ('{"prompt": "p", "actions": [], "worldinfo": [{"key": "a", "content": "A", "uid": 1e999}]}', "1e999"),
        ('{"entries": {"0": {"key": ["a"], "content": "A", "order": NaN}}}', "NaN"),
    ],
)
def test_infinite_numbers_are_one_line(run_cli, tmp_path, body, number):
    source = tmp_path / "inf.json"
    source.write_text(body)
    assert one_line(run_cli("import", source, "--data-dir", tmp_path / "d")) == (
        f"error: {source}: the number {number} is out of range; write a finite number"
    )


def test_an_overflowing_setting_given_directly_is_one_error():
    with pytest.raises(InputError) as caught:
        from_sillytavern({"temp": 1, "rep_pen": 1, "top_k": float("inf")}, "P", "p.json")
    assert str(caught.value) == "p.json: top_k = inf is not a value talesmith can use"


# --- case 18: file-system errors --------------------------------------------------------------------------


def world_file(tmp_path: Path) -> Path:
    source = tmp_path / "Sky.json"
    source.write_text(json.dumps(world(entry(1, "sky", "Blue."))))
    return source


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_disk_is_one_line_and_leaves_nothing(run_cli, tmp_path, monkeypatch, code):
    def fail(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files, "write_all", fail)
    data = tmp_path / "d"
    assert one_line(run_cli("import", world_file(tmp_path), "--data-dir", data)) == (
        f"error: cannot save {data / 'lorebooks' / 'sky.json'} ({os.strerror(code)}); nothing was imported"
    )
    assert list((data / "lorebooks").iterdir()) == []  # no temporary file left


def test_a_full_disk_on_export_is_one_line(run_cli, tmp_path, monkeypatch):
    story = saved_story(tmp_path)
    monkeypatch.setattr(files, "write_all", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    assert one_line(run_cli("export", story, "-o", tmp_path / "s.json")) == (
        f"error: cannot write {tmp_path / 's.json'} (No space); choose another -o path"
    )
    assert not (tmp_path / "s.json").exists()


def test_a_data_dir_that_is_a_file_is_one_line(run_cli, tmp_path):
    data = tmp_path / "data"
    data.write_text("not a folder")
    assert one_line(run_cli("import", world_file(tmp_path), "--data-dir", data)) == (
        f"error: {data} is a file, not a folder; move it away or choose another folder for talesmith's data"
    )


def test_chats_as_a_broken_link_is_one_line(run_cli, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "chats").symlink_to(tmp_path / "gone")
    source = tmp_path / "Aqua.jsonl"
    source.write_text('{"character_name": "Aqua"}\n{"name": "Aqua", "mes": "Hi"}\n')
    assert one_line(run_cli("import", source, "--data-dir", data)) == (
        f"error: {data / 'chats'} is a broken link (to {tmp_path / 'gone'}); remove it or point it at a folder "
        f"for imported chats"
    )


def test_presets_as_a_file_is_one_line(run_cli, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "presets").write_text("x")
    source = tmp_path / "Godlike.json"
    source.write_text(json.dumps({"temp": 0.7, "rep_pen": 1.1}))
    assert one_line(run_cli("import", source, "--data-dir", data)) == (
        f"error: {data / 'presets'} is a file, not a folder; move it away or choose another folder for imported presets"
    )


# --- case 21: analyze's records ------------------------------------------------------------------------


def test_analyze_names_and_leaves_out_records_whose_story_is_not_text(tmp_path):
    from talesmith.runtime.analysis.records import read_story_set

    path = tmp_path / "set.jsonl"
    path.write_text(
        '{"text": "One.", "genre": ["horror", "gothic"]}\n'
        '{"text": null, "genre": "horror"}\n'
        '{"text": {"a": 1}, "genre": "horror"}\n'
        '{"text": "Two.", "genre": ["fairy tale"]}\n'
    )
    s = read_story_set("x", path)
    assert s.texts == ("One.", "Two.") and s.genres == ("horror, gothic", "fairy tale")
    assert s.notes == (
        f"{path} line 2: 'text' is null, not a story; left out",
        f"{path} line 3: 'text' is an object, not a story; left out",
    )
    path.write_text('{"text": 3}\n')
    with pytest.raises(InputError) as caught:
        read_story_set("x", path)
    assert (
        str(caught.value)
        == f"{path} has no stories: no record's 'text' is text ({path} line 1: 'text' is a number (3), not a story; left out)"
    )


# --- issue: name clashes keep both ---------------------------------------------------------------------


def card(name: str, description: str) -> dict:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": name, "description": description}}


def test_a_name_clash_without_a_terminal_keeps_both(run_cli, tmp_path):
    data = tmp_path / "d"
    first, second = tmp_path / "Aqua.json", tmp_path / "Aqua2.json"
    first.write_text(json.dumps(card("Aqua", "Edited in the app.")))
    second.write_text(json.dumps(card("Aqua", "From the web.")))
    assert run_cli("import", first, "--data-dir", data).returncode == 0
    result = run_cli("import", second, "--data-dir", data)
    assert result.returncode == 0
    kept = data / "characters" / "aqua.json"
    assert json.loads(kept.read_text())["data"]["description"] == "Edited in the app."
    assert json.loads((data / "characters" / "aqua-2.json").read_text())["data"]["description"] == "From the web."
    assert f"note: a character of that name was already kept: {kept} was kept as it is" in result.stderr
    assert run_cli("import", second, "--data-dir", data, "--replace").returncode == 0
    assert json.loads(kept.read_text())["data"]["description"] == "From the web."
    assert run_cli("import", first, "--data-dir", data, "--keep-both").returncode == 0
    assert (data / "characters" / "aqua-3.json").exists()
    assert one_line(run_cli("import", first, "--data-dir", data, "--replace", "--keep-both")) == (
        "error: --replace and --keep-both contradict each other; give one of them"
    )


def test_on_a_terminal_the_clash_is_asked(run_cli, tmp_path, monkeypatch):
    from talesmith.cli import importing

    data = tmp_path / "d"
    source = world_file(tmp_path)
    assert run_cli("import", source, "--data-dir", data).returncode == 0
    monkeypatch.setattr(importing, "interactive", lambda: True)
    asked = []
    monkeypatch.setattr(importing, "ask_replace", lambda kind, name, existing: asked.append((kind, name)) or True)
    assert run_cli("import", source, "--data-dir", data).returncode == 0
    assert asked == [("lorebook", "Sky")] and sorted(p.name for p in (data / "lorebooks").iterdir()) == ["sky.json"]


def test_two_lorebooks_and_two_presets_of_one_name_are_both_kept(tmp_path):
    data = tmp_path / "d"
    for content in ("Old.", "New."):
        source = tmp_path / "Sky.json"
        source.write_text(json.dumps(world(entry(1, "sky", content))))
        save_import(read_import(source), data)
    assert [load_lorebook(data / "lorebooks" / n).entries[0].content for n in ("sky.json", "sky-2.json")] == [
        "Old.",
        "New.",
    ]
    source = tmp_path / "Godlike.json"
    for temp in (0.5, 0.9):
        source.write_text(json.dumps({"temp": temp, "rep_pen": 1.1}))
        saved, path = saved_import(read_import(source), data)
    assert (saved.name, path.name) == ("Godlike (2)", "godlike-2.json")
    assert [(p.name, p.settings.temperature) for p in user_presets(data)] == [("Godlike", 0.5), ("Godlike (2)", 0.9)]


# --- issue: continuing an imported SillyTavern chat ------------------------------------------------------


ST_CHAT = [
    {"user_name": "Kaito", "character_name": "Seraphina", "create_date": "2024-5-1 @10h 00m 00s 000ms"},
    {
        "name": "Mayari",
        "is_user": False,
        "send_date": "May 1, 2024 10:00am",
        "mes": "Hello.",
        "extra": {"api": "kobold", "model": "old-model"},
    },
]


def test_continuing_an_imported_chat_writes_what_sillytavern_writes():
    doc = chat_from_st(json.loads(json.dumps(ST_CHAT)), "chat.jsonl")
    doc = ChatDocument(**{**doc.__dict__, "model": "gemma-3"}).swiped_reply("Hi again.").sent("Tell me more.")
    now = datetime(2026, 3, 4, 0, 5)
    out = chat_to_st(doc, now=now)
    swiped, new = out[1], out[2]
    assert swiped["name"] == "Mayari" and swiped["swipes"] == ["Hello.", "Hi again."] and swiped["swipe_id"] == 1
    assert swiped["swipe_info"] == [
        {"send_date": "May 1, 2024 10:00am", "extra": {"api": "kobold", "model": "old-model"}},
        {
            "send_date": "March 4, 2026 12:05am",
            "gen_started": None,
            "gen_finished": None,
            "extra": {"api": "talesmith", "model": "gemma-3"},
        },
    ]
    assert swiped["send_date"] == "March 4, 2026 12:05am" and swiped["extra"] == {
        "api": "talesmith",
        "model": "gemma-3",
    }
    assert new == {
        "name": "Kaito",
        "is_user": True,
        "is_name": True,
        "send_date": "March 4, 2026 12:05am",
        "mes": "Tell me more.",
        "extra": {},
    }


def test_a_new_chat_exported_names_the_user_and_dates_as_sillytavern(run_cli, tmp_path, monkeypatch):
    now = datetime(2026, 12, 7, 13, 2, 3, 45000)
    assert send_date(now) == "December 7, 2026 1:02pm" and create_date(now) == "2026-12-7 @13h 02m 03s 045ms"
    data = tmp_path / "d"
    (data).mkdir()
    (data / "preferences.json").write_text(json.dumps({"user": {"name": "Kaito", "persona": ""}}))
    chat = ChatDocument.start(Character("Aqua", greeting="Hi!")).sent("Hello.")
    library = Library(data / "chats", "chat")
    library.save("c", chat)
    assert run_cli("export", library.path("c"), "-o", tmp_path / "c.jsonl", "--data-dir", data).returncode == 0
    lines = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert lines[0]["user_name"] == "Kaito" and lines[2]["name"] == "Kaito" and lines[2]["is_user"] is True
    assert isinstance(lines[2]["send_date"], str) and lines[2]["send_date"] != 0


# --- issue: files go where they belong -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"name": "Default", "quickReplySlots": [{"mes": "/?", "label": "HELP"}], "numberOfSlots": 1},
            "looks like a SillyTavern quick-reply set ('Default'); talesmith imports stories, chats, characters, "
            "lorebooks and sampler presets",
        ),
        (
            {"firstRun": True, "username": "User", "main_api": "koboldhorde", "power_user": {}},
            "looks like SillyTavern's settings.json (all of its settings); import a preset from its presets/ "
            "folders instead",
        ),
        (
            {"chat_completion_source": "openai", "temperature": 1, "repetition_penalty": 1},
            "looks like a SillyTavern chat-completion (OpenAI) preset: prompts for remote chat APIs; import a "
            "textgen, kobold or NovelAI preset instead",
        ),
        (
            {"name": "Thing", "color": "blue", "size": 3},
            "is not a file talesmith can import: it is a JSON object with keys name, color, size; expected a "
            "SillyTavern chat (.jsonl), preset or World Info, a NovelAI scenario, lorebook or preset, a KoboldAI "
            "story, or a character card",
        ),
    ],
)
def test_files_that_are_not_imported_are_refused_saying_what_they_looked_like(tmp_path, data, message):
    source = tmp_path / "file.json"
    source.write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        read_import(source)
    assert str(caught.value) == f"{source} {message}"


SCENARIO = {
    "scenarioVersion": 0,
    "title": "The Lab",
    "description": "An interview.",
    "prompt": "I'm Daniel.\nA knock at the door.",
    "tags": ["sci-fi"],
    "context": [
        {"text": "[Daniel is an inventor.]", "contextConfig": {"insertionPosition": 0, "tokenBudget": 2048}},
        {"text": "[ Style: lyrical ]", "contextConfig": {"insertionPosition": -4, "budgetPriority": -400}},
    ],
    "ephemeralContext": [],
    "placeholders": [],
    "settings": {
        "parameters": {
            "temperature": 0.55,
            "max_length": 60,
            "min_length": 40,
            "top_k": 140,
            "top_p": 0.9,
            "tail_free_sampling": 1,
            "repetition_penalty": 1.5,
            "repetition_penalty_range": 1024,
            "repetition_penalty_slope": 6.57,
            "bad_words_ids": [],
        },
        "prefix": "vanilla",
    },
    "lorebook": {
        "lorebookVersion": 1,
        "entries": [
            {
                "text": "Sophia has black hair.",
                "contextConfig": {"budgetPriority": 400, "insertionPosition": -1},
                "displayName": "Sophia",
                "keys": ["Sophia"],
                "searchRange": 1000,
                "enabled": True,
                "forceActivation": False,
            }
        ],
        "settings": {"orderByKeyLocations": False},
    },
    "author": "",
}


def test_a_novelai_scenario_imports_as_a_story(tmp_path):
    source = tmp_path / "lab.scenario"
    source.write_text(json.dumps(SCENARIO))
    imported = read_import(source)
    doc = imported.value
    assert isinstance(doc, StoryDocument) and (imported.kind, imported.name) == ("story", "The Lab")
    s = doc.story
    assert (s.text, s.memory, s.author_note, s.author_note_depth) == (
        "I'm Daniel.\nA knock at the door.",
        "[Daniel is an inventor.]",
        "[ Style: lyrical ]",
        3,
    )
    assert (s.header.title, s.header.tags) == ("The Lab", ("sci-fi",))
    (book,) = doc.lorebooks
    e = book.entries[0]
    assert (e.keys, e.content, e.name, e.order, e.constant) == (
        ("Sophia",),
        "Sophia has black hair.",
        "Sophia",
        400,
        False,
    )
    st = doc.settings
    assert (st.temperature, st.top_k, st.max_new_tokens, st.min_new_tokens, st.repetition_window) == (
        0.55,
        140,
        60,
        40,
        1024,
    )
    assert imported.notes[0] == "sampler settings without an equivalent, left out: repetition_penalty_slope=6.57"
    saved = save_import(imported, tmp_path / "d")
    assert Library(tmp_path / "d" / "stories", "story").load(saved.stem).extra["novelai"] == SCENARIO


def test_a_novelai_lorebook_and_presets_import(tmp_path):
    book = tmp_path / "Lab.lorebook"
    book.write_text(json.dumps({**SCENARIO["lorebook"], "name": "Lab"}))
    imported = read_import(book)
    assert (imported.kind, [e.content for e in imported.value.entries]) == ("lorebook", ["Sophia has black hair."])
    preset = tmp_path / "Asper-Kayra.json"
    preset.write_text(
        json.dumps(
            {
                "order": [5, 0, 1, 3],
                "temperature": 1.16,
                "max_length": 150,
                "top_k": 175,
                "typical_p": 0.96,
                "tail_free_sampling": 0.994,
                "repetition_penalty": 1.68,
                "repetition_penalty_range": 2240,
                "repetition_penalty_presence": 0.005,
                "mirostat_tau": 0,
                "mirostat_lr": 1,
            }
        )
    )
    p = read_import(preset)
    s = p.value.settings
    assert p.kind == "preset" and (s.temperature, s.top_k, s.typical_p, s.presence_penalty, s.mirostat) == (
        1.16,
        175,
        0.96,
        0.005,
        0,
    )
    assert p.notes[0] == "no equivalent, left out: tail_free_sampling=0.994"
    legacy = tmp_path / "Classic.settings"
    legacy.write_text(
        json.dumps({"temperature": 0.6, "max_length": 40, "repetition_penalty_range": 1024, "mirostat_tau": 5})
    )
    s = read_import(legacy).value.settings
    assert (s.temperature, s.max_new_tokens, s.mirostat, s.mirostat_tau) == (0.6, 40, 2, 5.0)


def test_tavernai_chat_as_one_json_list_imports(tmp_path):
    source = tmp_path / "Aqua.json"
    source.write_text(
        json.dumps(
            [
                {"user_name": "You", "character_name": "Aqua", "create_date": 1673181146000},
                {"name": "Aqua", "is_user": False, "is_name": True, "send_date": 1, "mes": "Hi!"},
                {"name": "You", "is_user": True, "is_name": True, "send_date": 2, "mes": "Hello."},
            ]
        )
    )
    imported = read_import(source)
    assert imported.kind == "chat" and [m.text for m in imported.value.messages] == ["Hi!", "Hello."]


@pytest.mark.skipif(not (REAL / "novelai-scenario").is_dir(), reason="no real NovelAI scenario here")
def test_the_real_novelai_scenario(tmp_path):
    imported = read_import(REAL / "novelai-scenario" / "a_laboratory_assistant.scenario")
    doc = imported.value
    assert imported.kind == "story" and doc.story.memory.startswith("[I'm Daniel")
    assert doc.story.author_note.startswith("[ Author: Sylvia Day") and doc.story.author_note_depth == 3
    assert len(doc.lorebooks[0].entries) == 8


@pytest.mark.skipif(not (REAL / "st-presets").is_dir(), reason="no real SillyTavern presets here")
def test_every_real_novelai_preset_imports_and_other_files_are_refused():
    for path in sorted((REAL / "st-presets" / "presets" / "novel").glob("*.json")):
        assert read_import(path).kind == "preset", path
    for folder in ("quick-replies", "openai", "moving-ui"):  # instruct, context, sysprompt: prompt formats
        for path in sorted((REAL / "st-presets" / "presets" / folder).glob("*.json")):
            with pytest.raises(InputError, match="looks like"):
                read_import(path)
    with pytest.raises(InputError, match="settings.json"):
        read_import(REAL / "st-presets" / "settings.json")


# --- issue 23: the data folder without the app ---------------------------------------------------------


def test_the_data_folder_is_found_without_importing_the_app(monkeypatch, tmp_path):
    monkeypatch.setenv("TALESMITH_HOME", str(tmp_path / "home"))
    assert files.default_data_dir() == tmp_path / "home"
    monkeypatch.delenv("TALESMITH_HOME")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert files.default_data_dir() == tmp_path / "xdg" / "talesmith"
        monkeypatch.delenv("XDG_DATA_HOME")
        assert files.default_data_dir() == Path.home() / ".local" / "share" / "talesmith"
    import ast

    for module in ("cli/importing.py", "cli/options.py"):
        tree = ast.parse((Path(__file__).resolve().parents[1] / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "talesmith.tui.launch" not in imported and "talesmith.tui.app" not in imported


@pytest.mark.parametrize("typed, replace", [("r\n", True), ("k\n", False), ("\n", False), ("what\nreplace\n", True)])
def test_the_clash_question_takes_r_or_k_and_keeps_both_by_default(monkeypatch, typed, replace):
    import io

    from talesmith.cli.importing import ask_replace

    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    assert ask_replace("character", "Aqua", Path("aqua.json")) is replace


def test_a_card_as_deep_as_an_import_may_be_reads_back_inside_a_chat(run_cli, tmp_path):
    deep = json.loads(nested(96))  # the card itself: 2 levels more, 98 in all
    source = tmp_path / "Deep.json"
    source.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "Deep", "extensions": {"x": deep}}}))
    character = read_import(source).value
    library = Library(tmp_path / "d" / "chats", "chat")
    library.save("c", ChatDocument.start(character).sent("Hi."))
    assert run_cli("export", library.path("c"), "-o", tmp_path / "c.jsonl").returncode == 0
    source.write_text(json.dumps({"spec": "chara_card_v2", "data": {"name": "Deep", "x": json.loads(nested(200))}}))
    with pytest.raises(InputError) as caught:
        read_import(source)
    assert str(caught.value) == f"{source} is nested too deeply (more than 100 levels of lists and objects)"


def test_a_read_only_data_folder_is_one_line(run_cli, tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    data = tmp_path / "d"
    assert one_line(run_cli("import", world_file(tmp_path), "--data-dir", data)) == (
        f"error: cannot make the folder {data} for talesmith's data (Read-only file system)"
    )
