"""`talesmith import` and the formats it reads: round trips with fixtures built here, the real files when present."""

import json
import subprocess
import sys
import zlib
from datetime import datetime
from pathlib import Path

import pytest

from talesmith.runtime.documents.cards import Character, png_with_card
from talesmith.runtime.documents.formats import CHARACTER, USER
from talesmith.runtime.documents.importers import read_import, save_import
from talesmith.runtime.documents.importers.kobold import story_from_kobold, story_to_kobold
from talesmith.runtime.documents.importers.presets import from_sillytavern, load_preset
from talesmith.runtime.documents.importers.stchat import chat_from_st, chat_to_st, dumps
from talesmith.runtime.documents.lorebook import Entry
from talesmith.runtime.documents.stories import ChatMessage, Library
from talesmith.runtime.documents.worldinfo import from_st, load_lorebook, to_st
from talesmith.runtime.errors import InputError
from talesmith.runtime.files import jsonl_objects
from talesmith.runtime.settings import SamplingSettings

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]

CHAT = [
    {"user_name": "Kazuma", "character_name": "Aqua", "create_date": 1674559896839, "chat_metadata": {"x": 1}},
    {"name": "Aqua", "is_user": False, "is_name": True, "send_date": 1, "mes": "Hi!", "extra": {"api": "kobold"}},
    {"name": "Kazuma", "is_user": True, "is_name": True, "send_date": 2, "mes": "Hello."},
    {"name": "Narrator", "is_user": False, "is_system": True, "send_date": 3, "mes": "Time passes."},
    {
        "name": "Aqua",
        "is_user": False,
        "send_date": 4,
        "mes": "Two",
        "swipes": ["One", "Two", "Three"],
        "swipe_id": 1,
        "swipe_info": [{}, {}, {}],
        "gen_id": 99,
    },
]


def jsonl(lines):
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


# --- SillyTavern chats --------------------------------------------------------------------------------


def test_st_chat_reads_messages_swipes_and_names():
    doc = chat_from_st(json.loads(json.dumps(CHAT)), "chat.jsonl")
    assert doc.character.name == "Aqua" and doc.user_name == "Kazuma"
    assert doc.messages == (
        ChatMessage(CHARACTER, ("Hi!",)),
        ChatMessage(USER, ("Hello.",)),
        ChatMessage(CHARACTER, ("One", "Two", "Three"), 1),
    )


def test_st_chat_round_trip_is_unchanged_and_keeps_unknown_fields_of_edited_messages():
    doc = chat_from_st(json.loads(json.dumps(CHAT)), "chat.jsonl")
    assert dumps(chat_to_st(doc)) == jsonl(CHAT)
    edited = doc.edited(0, "Hi there!").sent("Bye.")
    out = chat_to_st(edited, now=datetime(2026, 1, 2, 15, 4))
    assert out[1] == {**CHAT[1], "mes": "Hi there!"}  # its "extra" is kept
    assert out[2:5] == CHAT[2:5]  # the narrator stays where it stood
    assert out[5] == {
        "name": "Kazuma",
        "is_user": True,
        "is_name": True,
        "send_date": "January 2, 2026 3:04pm",
        "mes": "Bye.",
        "extra": {},
    }


def test_st_chat_new_swipe_is_written_with_its_index():
    doc = chat_from_st(json.loads(json.dumps(CHAT)), "chat.jsonl").swiped_reply("Four")
    last = chat_to_st(doc)[-1]
    assert last["swipes"] == ["One", "Two", "Three", "Four"] and last["swipe_id"] == 3 and last["mes"] == "Four"
    assert last["gen_id"] == 99


def test_imported_chat_saved_in_the_library_exports_the_same(tmp_path):
    source = tmp_path / "Aqua.jsonl"
    source.write_text(jsonl(CHAT))
    path = save_import(read_import(source), tmp_path / "data")
    doc = Library(path.parent, "chat").load(path.stem)
    assert dumps(chat_to_st(doc)) == source.read_text()


def test_chat_uses_the_character_card_from_the_library(tmp_path):
    card = {"spec": "chara_card_v2", "data": {"name": "Aqua", "description": "A goddess.", "first_mes": "Hi!"}}
    (tmp_path / "characters").mkdir()
    (tmp_path / "characters" / "aqua.json").write_text(json.dumps(card))
    source = tmp_path / "c.jsonl"
    source.write_text(jsonl(CHAT))
    imported = read_import(source, characters=tmp_path / "characters")
    assert imported.value.character.persona == "A goddess." and imported.notes == ()
    assert read_import(source).notes[0].startswith("no card for 'Aqua' in the library")


@pytest.mark.skipif(not (REAL / "st-chat-jsonl").is_dir(), reason="no real SillyTavern chats here")
def test_real_st_chats_round_trip():
    for path in sorted((REAL / "st-chat-jsonl").glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        doc = chat_from_st(jsonl_objects(text, str(path)), str(path))
        assert doc.messages and dumps(chat_to_st(doc)).rstrip("\n") == text.rstrip("\n"), path.name


# --- presets --------------------------------------------------------------------------------------------

KOBOLD = {
    "temp": 0.7,
    "rep_pen": 1.1,
    "rep_pen_range": 1024,
    "top_p": 0.5,
    "top_a": 0.75,
    "top_k": 0,
    "typical": 0.19,
    "tfs": 0.97,
    "rep_pen_slope": 0.7,
    "sampler_order": [6, 0, 1],
    "mirostat": 0,
    "mirostat_tau": 5,
    "mirostat_eta": 0.1,
    "grammar": "",
}
TEXTGEN = {
    "temp": 1.2,
    "temperature_last": True,
    "top_p": 1,
    "top_k": 40,
    "typical_p": 1,
    "min_p": 0.05,
    "rep_pen": 1.0,
    "rep_pen_range": 0,
    "presence_pen": 0.1,
    "freq_pen": 0.2,
    "dry_multiplier": 0.8,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_sequence_breakers": '["\\n", ":"]',
    "dry_penalty_last_n": 0,
    "mirostat_mode": 0,
    "mirostat_tau": 5,
    "mirostat_eta": 0.1,
    "seed": -1,
    "tfs": 1,
    "num_beams": 1,
    "add_bos_token": True,
}


def test_kobold_preset_maps_and_lists_what_has_no_equivalent():
    p = from_sillytavern(KOBOLD, "Godlike", "Godlike.json")
    assert p.settings == SamplingSettings(
        temperature=0.7,
        repetition_penalty=1.1,
        repetition_window=1024,
        top_p=0.5,
        top_k=0,
        typical_p=0.19,
        mirostat=0,
        mirostat_tau=5.0,
        mirostat_eta=0.1,
    )
    assert p.unmapped == {"top_a": 0.75, "tfs": 0.97, "rep_pen_slope": 0.7, "sampler_order": [6, 0, 1], "grammar": ""}
    assert p.effective_unmapped == {"top_a": 0.75, "tfs": 0.97, "rep_pen_slope": 0.7}


def test_textgen_preset_maps_windows_breakers_and_seed():
    p = from_sillytavern(TEXTGEN, "Mine", "Mine.json")
    assert p.settings == SamplingSettings(
        temperature=1.2,
        top_k=40,
        min_p=0.05,
        repetition_window=-1,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        dry_multiplier=0.8,
        dry_sequence_breakers=("\n", ":"),
        dry_window=-1,
    )
    assert p.effective_unmapped == {} and set(p.unmapped) == {"temperature_last", "tfs", "num_beams", "add_bos_token"}


def test_kobold_zero_top_p_and_typical_mean_off():
    p = from_sillytavern({"temp": 1, "rep_pen": 1, "top_p": 0, "typical": 0}, "x", "x.json")
    assert (p.settings.top_p, p.settings.typical_p) == (1.0, 1.0)


def test_a_preset_out_of_range_is_one_error_naming_the_file():
    with pytest.raises(InputError, match=r"^bad.json: temperature -1.0 is negative"):
        from_sillytavern({"temp": -1, "rep_pen": 1}, "bad", "bad.json")
    with pytest.raises(InputError, match=r"bad.json: top_k = 'many' is not a value"):
        from_sillytavern({"temp": 1, "rep_pen": 1, "top_k": "many"}, "bad", "bad.json")


def test_imported_preset_is_saved_and_read_back(tmp_path):
    source = tmp_path / "Godlike.json"
    source.write_text(json.dumps(KOBOLD))
    imported = read_import(source)
    assert imported.notes == (
        "no equivalent, left out: top_a=0.75, tfs=0.97, rep_pen_slope=0.7",
        "also left out (off, or settings of the tool itself): sampler_order, grammar",
    )
    path = save_import(imported, tmp_path / "data")
    assert path == tmp_path / "data" / "presets" / "godlike.json"
    assert load_preset(tmp_path / "data", "Godlike") == imported.value


@pytest.mark.skipif(not (REAL / "st-presets").is_dir(), reason="no real SillyTavern presets here")
def test_every_real_sampler_preset_imports():
    found = sorted((REAL / "st-presets" / "presets").glob("kobold/*.json")) + sorted(
        (REAL / "st-presets" / "presets").glob("textgen/*.json")
    )
    assert len(found) > 20
    for path in found:
        assert read_import(path).kind == "preset", path.name
    assert read_import(REAL / "st-presets" / "presets" / "context" / "ChatML.json").kind == "format"


# --- KoboldAI stories -------------------------------------------------------------------------------------

KSTORY = {
    "gamestarted": True,
    "prompt": "Niko stalked down the alley.",
    "memory": "Niko is a kobold.",
    "authorsnote": "Things get crazy.",
    "actions": [" He waited.", " Then he ran.\n\nA thud."],
    "worldinfo": [
        {
            "key": "butcher, stall",
            "keysecondary": "",
            "content": "The butcher is grumpy.",
            "comment": "",
            "folder": None,
            "num": 0,
            "init": True,
            "selective": False,
            "constant": False,
            "uid": 11,
        },
        {
            "key": "",
            "keysecondary": "",
            "content": "",
            "comment": "",
            "folder": None,
            "num": 1,
            "init": False,
            "selective": False,
            "constant": False,
            "uid": 12,
        },
    ],
    "savedir": "",
    "wifolders_d": {},
    "wifolders_l": [],
}


def test_kobold_story_reads_text_memory_note_and_world_info():
    doc = story_from_kobold(json.loads(json.dumps(KSTORY)), "niko", "niko.json")
    s = doc.story
    assert s.text == "Niko stalked down the alley. He waited. Then he ran.\n\nA thud."
    assert (s.memory, s.author_note, s.author_note_depth) == ("Niko is a kobold.", "Things get crazy.", 3)
    (book,) = doc.lorebooks
    assert book.entries == (
        Entry(keys=("butcher", "stall"), content="The butcher is grumpy.", uid=11, selective=False, book=book.name),
    )


def test_kobold_story_round_trip_and_continuation():
    doc = story_from_kobold(json.loads(json.dumps(KSTORY)), "niko", "niko.json")
    assert story_to_kobold(doc) == KSTORY
    more = story_to_kobold(doc.with_text(doc.text + " He hid."))
    assert more["actions"] == [" He waited.", " Then he ran.\n\nA thud.", " He hid."]
    assert more["worldinfo"] == KSTORY["worldinfo"] and more["wifolders_d"] == {}


@pytest.mark.skipif(not (REAL / "kobold-client-story-and-maps").is_dir(), reason="no real KoboldAI story here")
def test_real_kobold_story_round_trip(tmp_path):
    path = REAL / "kobold-client-story-and-maps" / "sample_story.json"
    imported = read_import(path)
    assert imported.kind == "story" and imported.value.text.startswith("Niko the kobold")
    saved = save_import(imported, tmp_path)
    doc = Library(saved.parent, "story").load(saved.stem)
    assert story_to_kobold(doc) == json.loads(path.read_text())


# --- cards and lorebooks ----------------------------------------------------------------------------------


def tiny_png() -> bytes:
    def chunk(kind, body):
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")


def test_card_png_with_a_lorebook_imports_as_a_character(tmp_path):
    book = {"name": "Lore", "entries": [{"keys": ["glade"], "content": "Safe.", "id": 1, "extensions": {"q": 1}}]}
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Sera", "character_book": book}}
    source = tmp_path / "sera.png"
    source.write_bytes(png_with_card(tiny_png(), Character("Sera", card=card)))
    imported = read_import(source)
    assert imported.kind == "character"
    path = save_import(imported, tmp_path / "data")
    assert json.loads(path.read_text())["data"]["character_book"] == book
    assert load_lorebook(source).entries[0].keys == ("glade",)


def test_world_info_imports_as_a_lorebook_and_writes_back_the_same(tmp_path):
    world = {
        "entries": {
            "3": {
                "uid": 3,
                "key": ["moon"],
                "content": "Two moons.",
                "vectorized": False,
                "position": 4,
                "depth": 2,
                "selectiveLogic": 2,
                "keysecondary": ["sun"],
                "selective": True,
            }
        },
        "originalData": {"kept": True},
    }
    source = tmp_path / "Sky.json"
    source.write_text(json.dumps(world))
    imported = read_import(source)
    entry = imported.value.entries[0]
    assert (imported.kind, entry.position, entry.depth, entry.logic, entry.secondary) == (
        "lorebook",
        "depth",
        2,
        "not_any",
        ("sun",),
    )
    path = save_import(imported, tmp_path / "data")
    assert json.loads(path.read_text()) == world


@pytest.mark.skipif(not (REAL / "st-worldinfo").is_dir(), reason="no real World Info here")
def test_real_world_info_round_trips():
    for path in sorted((REAL / "st-worldinfo").glob("*.json")):
        raw = json.loads(path.read_text())
        book = from_st(raw, path.stem)
        assert book.entries and to_st(book) == raw, path.name


@pytest.mark.skipif(not (REAL / "card-v2-stcontent-sakana").is_dir(), reason="no real cards here")
def test_real_card_lorebooks():
    sakana = load_lorebook(next((REAL / "card-v2-stcontent-sakana").glob("*.png")))
    seraphina = load_lorebook(next((REAL / "card-st-seraphina").glob("*.png")))
    assert (len(sakana.entries), len(seraphina.entries)) == (14, 4)


# --- nothing half-imported ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe garbage", "is not UTF-8 text nor a PNG card"),
        (b"{not json", "line 1 is not JSON"),
        (b'{"a": 1}\n{"b": 2}\n', "is neither JSON nor a SillyTavern chat"),
        (b'{"hello": 1}', "is not a file talesmith can import"),
        (b'{"character_name": "A"}\n{"name": "A", "mes": 3}\n', "line 2: 'mes' must be text"),
        (b'{"character_name": ""}\n{"mes": "x"}\n', "the chat names no character"),
        (b'{"entries": {"0": {"key": 5}}}', "a lorebook entry has the wrong shape"),
        (b'{"actions": "x", "prompt": "p"}', "'actions' must be a list of texts"),
        (b'{"temp": 1, "rep_pen": 1, "top_p": 5}', "top_p 5.0 is outside"),
        (b"\x89PNG\r\n\x1a\n", "carries no character card"),
    ],
)
def test_a_file_that_cannot_be_imported_is_one_error_and_nothing_is_written(tmp_path, content, message):
    source = tmp_path / "bad.json"
    source.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_import(source)
    assert str(source) in str(caught.value) and "\n" not in str(caught.value)


def test_import_command(tmp_path):
    source = tmp_path / "Aqua.jsonl"
    source.write_text(jsonl(CHAT))
    ok = subprocess.run(
        [*TALESMITH, "import", str(source), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "imported chat 'Chat with Aqua'" in ok.stderr
    assert len(list((tmp_path / "d" / "chats").glob("*.json"))) == 1
    bad = subprocess.run(
        [*TALESMITH, "import", str(tmp_path / "none.json"), "--data-dir", str(tmp_path / "e")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert not (tmp_path / "e").exists()


@pytest.mark.model
def test_an_imported_preset_is_used_by_generate(tmp_path):
    source = tmp_path / "Godlike.json"
    source.write_text(json.dumps(KOBOLD))
    env = {**__import__("os").environ, "TALESMITH_HOME": str(tmp_path / "home")}
    run = lambda *a: subprocess.run([*TALESMITH, *a], capture_output=True, text=True, timeout=300, env=env)  # noqa: E731
    assert run("import", str(source)).returncode == 0
    result = run("generate", "--preset", "Godlike", "--max-new-tokens", "3", "--seed", "1", "--json", "Once")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert (settings["top_p"], settings["typical_p"], settings["max_new_tokens"]) == (0.5, 0.19, 3)
    unknown = run("generate", "--preset", "nothing-like-it", "Once")
    assert unknown.returncode == 2 and "unknown preset 'nothing-like-it'" in unknown.stderr


def test_export_command_writes_st_chat_kobold_story_and_world_info(tmp_path):
    chat = tmp_path / "Aqua.jsonl"
    chat.write_text(jsonl(CHAT))
    story = tmp_path / "niko.json"
    story.write_text(json.dumps(KSTORY))
    world = tmp_path / "Sky.json"
    world.write_text(json.dumps({"entries": {"1": {"uid": 1, "key": ["a"], "content": "A.", "x": [1]}}}))
    data = tmp_path / "d"
    saved = [save_import(read_import(p), data) for p in (chat, story, world)]

    def export(source, out):
        return subprocess.run(
            [*TALESMITH, "export", str(source), "-o", str(out)], capture_output=True, text=True, timeout=120
        )

    for source, original, out in zip(saved, (chat, story, world), ("c.jsonl", "s.json", "w.json"), strict=False):
        result = export(source, tmp_path / out)
        assert result.returncode == 0, result.stderr
        if out.endswith(".jsonl"):
            assert (tmp_path / out).read_text() == original.read_text()
        else:
            assert json.loads((tmp_path / out).read_text()) == json.loads(original.read_text())
    wrong = export(saved[0], tmp_path / "c.json")
    assert wrong.returncode == 2 and "export it to a file ending in .jsonl" in wrong.stderr


def test_a_bare_character_book_imports_and_exports_as_world_info(tmp_path):
    source = tmp_path / "book.json"
    source.write_text(
        json.dumps(
            {
                "name": "Lore",
                "scan_depth": 3,
                "entries": [
                    {
                        "keys": ["glade"],
                        "content": "Safe.",
                        "extensions": {"position": 4, "depth": 1},
                        "insertion_order": 7,
                    }
                ],
            }
        )
    )
    saved = save_import(read_import(source), tmp_path / "d")
    world = json.loads(export_text_of(saved, tmp_path / "w.json"))
    assert world["scan_depth"] == 3 and [
        (e["key"], e["position"], e["depth"], e["order"]) for e in world["entries"].values()
    ] == [(["glade"], 4, 1, 7)]
    assert from_st(world, "Lore").entries == load_lorebook(source).entries


def export_text_of(source, out):
    from talesmith.runtime.documents.importers import export_text

    return export_text(source, out)


def test_a_kobold_save_of_another_shape_is_one_error(tmp_path):
    source = tmp_path / "united.json"
    source.write_text(json.dumps({"prompt": "p", "actions": {"action_count": 1, "actions": {"0": {}}}}))
    with pytest.raises(InputError, match="'actions' must be a list of texts"):
        read_import(source)
