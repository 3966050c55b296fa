"""runtime/files.py: the one JSON Lines reader (batch inputs, analysis sets, SillyTavern chats) and the one
text-file reader with one-line errors (config files, saved documents, story sets)."""

import json
import tomllib

import pytest

from talesmith.runtime.errors import InputError
from talesmith.runtime.files import jsonl_objects, read_text


def test_only_newline_ends_a_record():
    texts = ["a\u2028b", "c\x85d", "e\x0cf", "g\rh"]
    raw = "".join(json.dumps({"mes": t}, ensure_ascii=False) + "\n" for t in texts) + "\n\n"
    assert jsonl_objects(raw, "chat.jsonl") == [{"mes": t} for t in texts]


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            '{"a": 1}\n{not json\n',
            "chat.jsonl line 2 is not JSON (Expecting property name enclosed in double quotes); "
            "each line must be one JSON object",
        ),
        ('["x"]\n', "chat.jsonl line 1 is not a JSON object"),
        ("[" * 100_000 + "\n", "chat.jsonl line 1 is not JSON (nested too deeply); each line must be one JSON object"),
    ],
)
def test_a_bad_line_is_named(raw, message):
    with pytest.raises(InputError) as info:
        jsonl_objects(raw, "chat.jsonl")
    assert str(info.value) == message


def _read_toml(path):
    return read_text(
        path,
        tomllib.loads,
        encoding="utf-8-sig",
        errors=(tomllib.TOMLDecodeError,),
        missing="missing",
        unreadable=lambda e: f"unreadable: {type(e).__name__}",
        nesting="nested",
    )


def test_read_text_parses_the_text(tmp_path):
    path = tmp_path / "a.toml"
    path.write_bytes(b"\xef\xbb\xbfa = 1\n")
    assert _read_toml(path) == {"a": 1}
    assert read_text(path, str, missing="", unreadable=str) == "\ufeffa = 1\n"


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "missing"),
        (b"a = \xff\n", "unreadable: UnicodeDecodeError"),
        (b"a = = 1\n", "unreadable: TOMLDecodeError"),
        (b"a = " + b"[" * 100_000 + b"\n", "nested"),
    ],
)
def test_read_text_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "a.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        _read_toml(path)
    assert str(info.value) == message


def test_read_text_of_a_folder_is_unreadable(tmp_path):
    with pytest.raises(InputError) as info:
        read_text(tmp_path, str, missing="missing", unreadable=lambda e: f"unreadable: {type(e).__name__}")
    assert str(info.value) == "unreadable: IsADirectoryError"


def test_read_text_lets_other_errors_through(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        read_text(path, json.loads, missing="", unreadable=str)
