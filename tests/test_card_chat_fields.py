"""Card fields in the chat prompt (system prompt, post-history instructions, user persona), macros filled in
one place, the chat stop strings, unsavable text and the card chunks of PNG files."""

import base64
import json
import zlib

import pytest
from conftest import golden
from test_cards import _chunk, tiny_png

from talesmith.runtime.documents.cards import (
    MAX_CARD_TEXT,
    CardError,
    clean_text,
    fill_macros,
    load_card,
    parse_json_card,
    parse_png_card,
    to_card,
)
from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message
from talesmith.runtime.documents.prompts import plan, render
from talesmith.runtime.documents.stories import ChatDocument, Library, User, from_dict

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": '[{{char}}\'s Personality= "caring"] Guards {{user}}.',
        "scenario": "{{user}} wakes in {{char}}'s glade.",
        "first_mes": "You're awake, {{user}}!",
        "mes_example": "<START>\n{{user}}: Where am I?\n{{char}}: Safe.",
        "system_prompt": "{{original}}Write {{char}}'s next reply.",
        "post_history_instructions": "Stay in character as {{char}}; never speak for {{User}}.",
        "creator_notes": "Contest winner",
        "character_book": {"entries": [{"keys": ["glade"]}]},
    },
}


def test_fill_macros_any_case_and_the_old_forms():
    assert (
        fill_macros("{{char}} {{ User }} {{CHAR}} <USER> <BOT> [{{original}}]", char="Sera", user="Sam", original="o")
        == "Sera Sam Sera Sam Sera [o]"
    )


def test_card_fields_are_read_written_back_and_shaped_into_the_prompt():
    character = parse_json_card(json.dumps(CARD))
    assert character.system_prompt == "{{original}}Write {{char}}'s next reply."
    assert character.post_history.startswith("Stay in character")
    assert character.creator_notes == "Contest winner" and character.book_entries == 1
    data = to_card(character)["data"]
    assert data["post_history_instructions"] == CARD["data"]["post_history_instructions"]
    assert data["character_book"] == CARD["data"]["character_book"]
    chat = ChatDocument.start(character, user=User("Sam", "A lost traveller, {{char}}'s guest.")).sent(
        "Thanks, {{char}}."
    )
    assert chat.messages[0].text == "You're awake, Sam!"
    golden("chat_card_fields.txt", render(chat.to_chat(user=User("Sam", "A lost traveller, {{char}}'s guest."))))


def test_a_chat_s_own_user_overrides_the_global_one():
    chat = ChatDocument.start(parse_json_card(json.dumps(CARD)), user=User("Sam"))
    assert chat.user(User("Sam")).name == "Sam" and chat.to_chat(user=User("Kim")).user_name == "Kim"
    own = ChatDocument(chat.character, chat.messages, user_name="Rin", user_persona="A thief.")
    assert own.to_chat(user=User("Kim", "A knight.")).user_persona == "A thief."
    again = from_dict(json.loads(json.dumps({"kind": "chat", "character": CARD, "user_name": "You"})))
    assert again.user_name == ""  # older files always wrote "You": not a choice of this chat


def test_chat_stops_on_end_and_the_user_s_next_line():
    stops = plan(Chat(character="Aqua", user_name="Kazuma", messages=(Message(USER, "Hi"),))).stops
    for leak in ("<END>", "\nKazuma:", "[ Kazuma:", "\n<START>", "\n**Kazuma:**"):
        assert leak in stops


def test_lone_surrogates_are_saved_as_replacement_characters(tmp_path):
    assert clean_text("ok") == ("ok", 0)
    assert clean_text("\ud800 x \ud83d\ude00") == ("\ufffd x \U0001f600", 1)
    character = parse_json_card('{"name": "\\ud800 x", "description": "d", "tags": ["\\udfff"]}')
    assert (character.name, character.replaced, character.card["tags"]) == ("\ufffd x", 2, ["\ufffd"])
    library = Library(tmp_path, "chat")
    assert library.save("c", ChatDocument.start(character).sent("typed \ud800")) == 1
    assert library.load("c").messages[-1].text == "typed \ufffd"


def test_a_cut_png_is_named_as_such(tmp_path):
    path = tmp_path / "card.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(CardError, match=r"card.png: a PNG file cut short \(4 bytes\)"):
        load_card(path)


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_a_card_in_a_compressed_or_international_chunk_is_named_unsupported(kind):
    body = b"chara\0\0" + zlib.compress(base64.b64encode(json.dumps(CARD).encode()))
    with pytest.raises(CardError, match=f"the card is in a {kind.decode()} PNG chunk, which talesmith does not read"):
        parse_png_card(tiny_png(_chunk(kind, body)), "card.png")


def test_only_the_card_s_own_chunk_is_limited_in_size():
    big = _chunk(b"tEXt", b"Comment\0" + b"x" * (MAX_CARD_TEXT + 10))
    card = _chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(CARD).encode()))
    assert parse_png_card(tiny_png(big, card)).name == "Seraphina"
    huge_card = b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"chara\0" + b"A" * (MAX_CARD_TEXT + 8))
    with pytest.raises(CardError, match="'chara' chunk of .* bytes is larger than"):
        parse_png_card(huge_card)


def test_message_macros_are_filled_in_the_prompt():
    chat = Chat(
        character="Aqua",
        persona="p",
        user_name="Sam",
        messages=(Message(CHARACTER, "Hi {{user}}"), Message(USER, "I am {{user}}, you are {{char}}")),
    )
    assert render(chat).endswith("Aqua: Hi Sam\nSam: I am Sam, you are Aqua\nAqua:")
