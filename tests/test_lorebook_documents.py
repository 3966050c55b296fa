"""Lorebooks attached to stories and chats, and a card's character_book, saved and read back."""

import dataclasses
import json

from talesmith.runtime.documents.cards import character_from_card, to_card
from talesmith.runtime.documents.lorebook import Entry, Lorebook
from talesmith.runtime.documents.stories import ChatDocument, StoryDocument, from_dict, to_dict
from talesmith.runtime.documents.worldinfo import GLOBAL_FOLDER, document_lore, from_st, global_lorebooks, to_st

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Sera",
        "description": "A healer.",
        "first_mes": "Hello.",
        "character_book": {
            "name": "Eldoria",
            "scan_depth": 5,
            "token_budget": 300,
            "recursive_scanning": False,
            "extensions": {"x": 1},
            "entries": [
                {
                    "keys": ["glade"],
                    "content": "The glade is safe.",
                    "enabled": True,
                    "insertion_order": 100,
                    "id": 3,
                    "position": "after_char",
                    "unknown": [1, 2],
                    "extensions": {
                        "depth": 2,
                        "selectiveLogic": 3,
                        "probability": 40,
                        "useProbability": True,
                        "match_whole_words": True,
                    },
                }
            ],
        },
    },
}


def test_card_character_book_is_read_and_exported_unchanged():
    character = character_from_card(json.loads(json.dumps(CARD)))
    lore = document_lore(ChatDocument(character=character))
    (entry,) = lore.books[0].entries
    assert (entry.keys, entry.uid, entry.position, entry.logic, entry.probability, entry.whole_words) == (
        ("glade",),
        3,
        "after",
        "and_all",
        40,
        True,
    )
    assert (lore.settings.scan_depth, lore.settings.budget_tokens, lore.settings.recursive) == (5, 300, False)
    assert to_card(character)["data"]["character_book"] == CARD["data"]["character_book"]


def test_attached_lorebooks_and_extras_survive_saving():
    book = from_st(
        {"entries": {"7": {"uid": 7, "key": ["moon"], "content": "Two moons.", "extensions": {"a": 1}}}}, "Sky"
    )
    doc = StoryDocument(lorebooks=(book, Lorebook("Mine", (Entry(("sun",), "One sun."),))), extra={"kobold": {"x": 1}})
    back = from_dict(json.loads(json.dumps(to_dict(doc))))
    assert [b.name for b in back.lorebooks] == ["Sky", "Mine"] and back.extra == {"kobold": {"x": 1}}
    assert to_st(back.lorebooks[0]) == to_st(book) and back.lorebooks[1].entries[0].content == "One sun."
    assert "lorebooks" not in to_dict(StoryDocument()) and "extra" not in to_dict(StoryDocument())


def test_global_lorebooks_come_from_their_folder(tmp_path):
    folder = tmp_path / GLOBAL_FOLDER
    folder.mkdir(parents=True)
    (folder / "world.json").write_text(json.dumps({"entries": {"0": {"uid": 0, "key": ["x"], "content": "X."}}}))
    books = global_lorebooks(tmp_path)
    assert [b.name for b in books] == ["world"]
    lore = document_lore(StoryDocument(lorebooks=(Lorebook("Mine"),)), global_books=books)
    assert [b.name for b in lore.books] == ["Mine", "world"]
    assert global_lorebooks(tmp_path / "none") == () and document_lore(StoryDocument()) is None


def test_the_app_documents_carry_their_lore_into_the_prompt():
    from fakes import ScriptedBackend

    from talesmith.runtime.documents.formats import Story
    from talesmith.runtime.documents.stories import ChatMessage
    from talesmith.runtime.engine.generate import prepare
    from talesmith.runtime.settings import SamplingSettings

    backend, settings = ScriptedBackend("x", n_ctx=2048), SamplingSettings(max_new_tokens=4)
    chat = ChatDocument(
        character=character_from_card(json.loads(json.dumps(CARD))),
        messages=(ChatMessage("user", ("Is the glade safe?",)),),
        user_name="Kazuma",
    )
    prepared = prepare(backend, chat.to_chat(), settings)
    assert [a.entry.uid for a in prepared.lore.entries] in ([3], [])  # a 40% entry: fired or not, by the seed
    rolls = set()
    for i in range(12):  # the roll depends on the seed, the entry and the length of the chat
        chat = chat.sent(f"The glade, {i}?")
        rolls.add(bool(prepare(backend, chat.to_chat(), settings).lore.entries))
    assert rolls == {True, False}
    story = StoryDocument(
        story=Story(text="The moon rose."),
        lorebooks=(from_st({"entries": {"0": {"uid": 0, "key": ["moon"], "content": "Two moons."}}}, "Sky"),),
    )
    assert prepare(backend, story.prompt_story(), settings).fitted.text == "Two moons.\nThe moon rose."
    assert prepare(backend, story.story, settings).fitted.text == "The moon rose."


def test_the_prompt_view_lists_the_entries_that_fired():
    from fakes import ScriptedBackend

    from talesmith.runtime.documents.formats import Story
    from talesmith.runtime.settings import SamplingSettings
    from talesmith.tui.promptview import report

    story = StoryDocument(
        story=Story(text="The moon rose.\nIt was late."),
        lorebooks=(
            from_st(
                {"entries": {"0": {"uid": 0, "key": ["moon"], "content": "Two moons.", "comment": "Moons"}}}, "Sky"
            ),
        ),
    )
    r = report(ScriptedBackend("x", n_ctx=2048), story.prompt_story(), SamplingSettings(max_new_tokens=4))
    assert r.text == "Two moons.\nThe moon rose.\nIt was late."  # before the story, as the entry says
    assert "lorebook entry 'Moons' (fired)" in [p.name for p in r.parts]
    anchored = dataclasses.replace(story, lore_placement="anchored")
    r = report(ScriptedBackend("x", n_ctx=2048), anchored.prompt_story(), SamplingSettings(max_new_tokens=4))
    assert r.text == "The moon rose.\nTwo moons.\nIt was late."  # where the moon first came up
    names = [p.name for p in r.parts]
    assert "lorebook entry 'Moons' (fired)" in names and "inserted 1 from the end" in names


def test_a_lorebook_file_can_carry_talesmith_settings(tmp_path):
    import pytest

    from talesmith.runtime.documents.worldinfo import load_lore
    from talesmith.runtime.errors import InputError

    path = tmp_path / "w.json"
    path.write_text(
        json.dumps(
            {
                "entries": {},
                "scan_depth": 9,
                "talesmith": {"placement": "declared", "scan_depth": 4, "budget_percent": 10},
            }
        )
    )
    settings = load_lore([path]).settings
    assert (settings.placement, settings.scan_depth, settings.budget_percent) == ("declared", 4, 10)
    path.write_text(json.dumps({"entries": {}, "talesmith": {"placement": "nowhere"}}))
    with pytest.raises(InputError, match="w.json: placement 'nowhere' is unknown"):
        load_lore([path])
    path.write_text(json.dumps({"entries": {}, "talesmith": {"colour": 1}}))
    with pytest.raises(InputError, match="'talesmith' must be an object of lorebook settings"):
        load_lore([path])


def test_a_bad_entry_in_a_card_book_names_the_card():
    import pytest

    from talesmith.runtime.documents.worldinfo import card_lorebook
    from talesmith.runtime.errors import InputError

    card = json.loads(json.dumps(CARD))
    card["data"]["character_book"]["entries"][0]["extensions"]["depth"] = -2
    with pytest.raises(InputError, match=r"^sera.png: its character_book: lorebook entry 3: depth -2 is negative"):
        card_lorebook(card, "sera.png")
    card["data"]["character_book"]["entries"] = "many"
    with pytest.raises(InputError, match=r"^sera.png: its character_book cannot be read"):
        card_lorebook(card, "sera.png")


def test_a_broken_card_book_is_an_error_of_the_prompt_not_of_the_chat():
    import pytest
    from fakes import ScriptedBackend

    from talesmith.runtime.engine.generate import prepare
    from talesmith.runtime.errors import InputError
    from talesmith.runtime.settings import SamplingSettings

    card = json.loads(json.dumps(CARD))
    card["data"]["character_book"]["entries"] = "many"
    chat = ChatDocument(character=character_from_card(card)).sent("Hi")
    prompt = chat.to_chat()  # building the prompt document never fails
    with pytest.raises(InputError, match="its character_book cannot be read"):
        prepare(ScriptedBackend("x", n_ctx=512), prompt, SamplingSettings(max_new_tokens=4))


def test_timed_effects_are_read_from_world_info_and_a_card_and_written_back():
    from talesmith.runtime.documents.worldinfo import from_character_book

    raw = {"uid": 0, "key": ["x"], "content": "c", "sticky": 3, "cooldown": None, "delay": 2}
    book = from_st({"entries": {"0": raw}}, "w")
    assert (book.entries[0].sticky, book.entries[0].cooldown, book.entries[0].delay) == (3, 0, 2)
    edited = dataclasses.replace(book.entries[0], cooldown=4)
    written = to_st(dataclasses.replace(book, entries=(edited,)))["entries"]["0"]
    assert (written["sticky"], written["cooldown"], written["delay"]) == (3, 4, 2)
    card_book = {"entries": [{"keys": ["x"], "content": "c", "extensions": {"sticky": 1, "cooldown": 2}}]}
    entry = from_character_book(card_book, "card").entries[0]
    assert (entry.sticky, entry.cooldown, entry.delay) == (1, 2, 0)


def test_a_lorebook_is_found_by_name_or_path(tmp_path):
    import pytest

    from talesmith.runtime.documents.worldinfo import find_lorebook
    from talesmith.runtime.errors import InputError

    folder = tmp_path / "lorebooks"
    (folder / "global").mkdir(parents=True)
    for name in ("honkai-impact-rpg", "honkai-impact-rpg-2", "eldoria"):
        (folder / f"{name}.json").write_text('{"entries": {}}')
    (folder / "global" / "moons.json").write_text('{"entries": {}}')
    assert find_lorebook(tmp_path, "Honkai Impact RPG") == folder / "honkai-impact-rpg.json"
    assert find_lorebook(tmp_path, "ELDOR") == folder / "eldoria.json"
    assert find_lorebook(tmp_path, "moons") == folder / "global" / "moons.json"
    assert find_lorebook(tmp_path, str(folder / "eldoria.json")) == folder / "eldoria.json"
    with pytest.raises(InputError, match="'honkai' names 2 lorebooks \\(honkai-impact-rpg, honkai-impact-rpg-2\\)"):
        find_lorebook(tmp_path, "honkai")
    with pytest.raises(InputError, match="no lorebook named 'atlantis' in .*lorebooks, and no such file"):
        find_lorebook(tmp_path, "atlantis")
