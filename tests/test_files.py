"""runtime/files.py: the one JSON Lines reader (batch inputs, analysis sets, SillyTavern chats)."""

import json

import pytest

from talesmith.runtime.errors import InputError
from talesmith.runtime.files import jsonl_objects


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
