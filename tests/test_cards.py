"""Character cards: v1/v2/v3 JSON, PNG tEXt chunks, hostile files, unknown fields kept."""

import base64
import json
import struct
import zlib

import pytest

from talesmith.runtime.documents.cards import (
    MAX_CARD_TEXT,
    CardError,
    Character,
    load_card,
    parse_json_card,
    parse_png_card,
    png_with_card,
    to_card,
)

V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Aqua",
        "description": "A goddess.",
        "personality": "cheerful",
        "scenario": "A tavern.",
        "first_mes": "Hello!",
        "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Yo\n<START>\n{{char}}: Again",
        "alternate_greetings": ["Hey!"],
        "creator_notes": "keep me",
        "extensions": {"depth_prompt": {"prompt": "x", "depth": 4}},
        "character_book": {"entries": []},
    },
}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def tiny_png(*chunks: bytes) -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0\0"))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + idat + _chunk(b"IEND", b"")


def card_png(card: dict, key: bytes = b"chara") -> bytes:
    return tiny_png(_chunk(b"tEXt", key + b"\0" + base64.b64encode(json.dumps(card).encode())))


def test_v2_json_card_fields():
    c = parse_json_card(json.dumps(V2))
    assert (c.name, c.persona, c.personality, c.scenario, c.greeting) == (
        "Aqua",
        "A goddess.",
        "cheerful",
        "A tavern.",
        "Hello!",
    )
    assert c.alternate_greetings == ("Hey!",)
    assert c.example_blocks() == ("{{user}}: Hi\n{{char}}: Yo", "{{char}}: Again")
    assert c.full_persona() == "A goddess.\nPersonality: cheerful"


def test_v1_and_v3_cards():
    v1 = parse_json_card(json.dumps({"name": "Old", "description": "d", "first_mes": "hi"}))
    assert v1.name == "Old" and v1.greeting == "hi"
    assert to_card(v1)["spec"] == "chara_card_v2" and to_card(v1)["data"]["name"] == "Old"
    v3 = parse_json_card(json.dumps({**V2, "spec": "chara_card_v3", "spec_version": "3.0"}))
    assert v3.name == "Aqua" and to_card(v3)["spec"] == "chara_card_v3"


def test_unknown_fields_survive_an_edit_and_resave():
    c = parse_json_card(json.dumps({**V2, "x_top": True}))
    edited = Character(**{**c.__dict__, "persona": "A new description."})
    card = to_card(edited)
    assert card["x_top"] is True
    assert card["data"]["creator_notes"] == "keep me"
    assert card["data"]["extensions"] == V2["data"]["extensions"]
    assert card["data"]["character_book"] == {"entries": []}
    assert card["data"]["description"] == "A new description."
    assert parse_json_card(json.dumps(card)).persona == "A new description."


def test_png_cards_chara_and_ccv3(tmp_path):
    path = tmp_path / "aqua.png"
    path.write_bytes(card_png(V2))
    assert load_card(path).name == "Aqua"
    both = tiny_png(
        _chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(V2).encode())),
        _chunk(
            b"tEXt",
            b"ccv3\0"
            + base64.b64encode(
                json.dumps({**V2, "spec": "chara_card_v3", "data": {**V2["data"], "name": "Aqua3"}}).encode()
            ),
        ),
    )
    assert parse_png_card(both).name == "Aqua3"  # v3 wins when both are present


def test_card_written_into_a_png_reads_back_and_replaces_the_old_one():
    c = parse_json_card(json.dumps(V2))
    out = png_with_card(card_png(V2), Character(**{**c.__dict__, "name": "Renamed"}))
    assert parse_png_card(out).name == "Renamed"
    assert out.count(b"chara\0") == 1


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", b"x" * 13), "no character card"),
        (tiny_png(_chunk(b"tEXt", b"chara\0!!!not base64!!!")), "not valid base64"),
        (tiny_png(_chunk(b"tEXt", b"chara\0" + base64.b64encode(b"{broken"))), "not valid JSON"),
        (tiny_png(_chunk(b"tEXt", b"chara\0" + base64.b64encode(b"[1, 2]"))), "must be a JSON object"),
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 2**31) + b"tEXtchara\0abc", "file ends first"),
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"chara\0" + b"A" * (MAX_CARD_TEXT + 8)), "larger than"),
    ],
)
def test_hostile_pngs_are_refused_with_a_reason(data, message):
    with pytest.raises(CardError, match=message):
        parse_png_card(data, "evil.png")


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"spec": "chara_card_v2", "data": "x"}', "needs a 'data' object"),
        ('{"spec": "chara_card_v2", "data": {"name": ""}}', "no character name"),
        ('{"spec": "chara_card_v2", "data": {"name": "A", "description": 5}}', "must be text"),
        ('{"spec": "chara_card_v2", "data": {"name": "A", "alternate_greetings": "hi"}}', "list of texts"),
        ('{"spec": "something"}', "not a character card"),
        ("[" * 100000 + "]" * 100000, "nested too deeply|not valid JSON"),
    ],
)
def test_malformed_json_cards_are_refused(text, message):
    with pytest.raises(CardError, match=message):
        parse_json_card(text)


def test_missing_and_odd_paths(tmp_path):
    with pytest.raises(CardError, match="does not exist"):
        load_card(tmp_path / "none.png")
    with pytest.raises(CardError, match="is a folder"):
        load_card(tmp_path)


@pytest.mark.parametrize(
    "text, line",
    [
        ('{"name": "A", "description": 5}', "c.json: description = 5 must be text"),
        ('{"name": "A", "first_mes": ["Hi"]}', "c.json: first_mes = ['Hi'] must be text"),
        (
            '{"spec": "chara_card_v3", "data": {"name": "A", "alternate_greetings": ["a", 3]}}',
            "c.json: alternate_greetings.1 = 3: alternate_greetings must be a list of texts",
        ),
    ],
)
def test_a_card_field_of_the_wrong_type_is_one_line_naming_the_field_and_the_value(text, line):
    with pytest.raises(CardError) as e:
        parse_json_card(text, "c.json")
    assert str(e.value) == line


def test_card_texts_given_as_null_or_no_greetings_as_empty_text_read_as_empty():
    c = parse_json_card('{"name": "A", "description": null, "alternate_greetings": ""}')
    assert (c.persona, c.alternate_greetings) == ("", ())
