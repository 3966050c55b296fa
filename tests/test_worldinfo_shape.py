"""SillyTavern World Info entries read through one typed model: SillyTavern's defaults for what older files
leave out or write as null, one line naming the entry, the field and the value for what has the wrong shape."""

import pytest

from talesmith.runtime.documents.lorebook import AND_ALL, DEPTH, LOGICS, Entry
from talesmith.runtime.documents.worldinfo import (
    entry_from_card,
    entry_from_st,
    entry_to_card,
    entry_to_st,
    lorebook_from_json,
)
from talesmith.runtime.errors import InputError


def test_missing_and_null_fields_take_sillytaverns_defaults():
    missing = entry_from_st({"key": ["a"]}, 7)
    assert (missing.uid, missing.order, missing.depth, missing.probability, missing.scan_depth) == (
        7,
        100,
        4,
        100,
        None,
    )
    null = entry_from_st(
        {"key": "a, b ,", "content": None, "order": None, "depth": None, "probability": None, "scanDepth": ""}
    )
    assert (null.keys, null.content, null.order, null.depth, null.probability, null.scan_depth) == (
        ("a", "b"),
        "",
        0,
        4,
        100,
        None,
    )


def test_fields_are_read_by_their_sillytavern_names():
    e = entry_from_st(
        {
            "uid": "3",
            "key": [" x ", 5, ""],
            "keysecondary": ["y"],
            "selectiveLogic": 3,
            "selective": 1,
            "position": 4,
            "depth": 2,
            "caseSensitive": True,
            "matchWholeWords": False,
            "useProbability": "true",
            "sticky": 2,
            "comment": "Moons",
        }
    )
    assert (e.uid, e.keys, e.secondary, e.logic, e.selective, e.position, e.depth) == (
        3,
        (" x ", "5"),
        ("y",),
        AND_ALL,
        True,
        DEPTH,
        2,
    )
    assert (e.case_sensitive, e.whole_words, e.use_probability, e.sticky, e.name) == (True, False, True, 2, "Moons")


@pytest.mark.parametrize(
    "entry, what",
    [
        ({"key": 5}, "entry 0: key = 5 must be a list"),
        ({"key": ["a"], "selectiveLogic": 4}, "entry 0: selectiveLogic = 4 must be at most 3"),
        ({"key": ["a"], "order": "high"}, "entry 0: order = 'high' must be a whole number"),
        ({"key": ["a"], "constant": "maybe"}, "entry 0: constant = 'maybe' must be true or false"),
    ],
)
def test_an_entry_of_the_wrong_shape_is_one_line_naming_the_field_and_the_value(entry, what):
    with pytest.raises(InputError) as e:
        lorebook_from_json({"entries": {"0": entry}}, "w", "w.json")
    assert str(e.value) == f"w.json: a lorebook entry has the wrong shape ({what})"


def test_a_character_book_entry_reads_as_sillytavern_reads_it():
    from talesmith.runtime.documents.lorebook import AFTER
    from talesmith.runtime.documents.worldinfo import entry_from_card

    e = entry_from_card(
        {
            "keys": ["a", ""],
            "content": None,
            "id": 0,
            "enabled": True,
            "position": "after_char",
            "case_sensitive": None,
            "name": "Moons",
            "extensions": {"depth": None, "probability": None, "useProbability": True, "case_sensitive": True},
        },
        5,
    )
    assert (e.keys, e.content, e.uid, e.position, e.depth, e.probability, e.use_probability) == (
        ("a",),
        "",
        5,
        AFTER,
        0,
        0,
        True,
    )
    assert e.case_sensitive is None and e.name == "Moons"  # the entry's own case_sensitive, even null, wins
    outlet = entry_from_card({"keys": ["a"], "extensions": {"position": 7}}, 0)
    assert not outlet.enabled


def test_a_character_book_entry_of_the_wrong_shape_names_the_field_and_the_value():
    card = {
        "spec": "chara_card_v2",
        "data": {"name": "A", "character_book": {"entries": [{"keys": ["a"]}, {"keys": 3}]}},
    }
    with pytest.raises(InputError) as e:
        lorebook_from_json(card, "A", "a.json")
    assert str(e.value) == "a.json: its character_book cannot be read (entry 1: keys = 3 must be a list)"


def test_kobold_and_novelai_entries_read_through_their_models():
    from talesmith.runtime.documents.worldinfo import from_kobold, from_novelai

    kobold = from_kobold(
        [{"key": "a, b", "content": "x", "uid": None}, {"key": "", "content": "", "init": False, "uid": 9}], "k"
    )
    assert [(e.keys, e.uid, e.content) for e in kobold.entries] == [(("a", "b"), 0, "x")]  # the placeholder row left
    novel = from_novelai(
        {
            "lorebookVersion": 5,
            "entries": [
                {"keys": ["a"], "text": "t", "contextConfig": {"insertionPosition": -2, "budgetPriority": -100}},
                {"keys": ["b"], "contextConfig": None, "forceActivation": True, "displayName": "B"},
            ],
        },
        "n",
    )
    assert [(e.position, e.depth, e.order, e.constant, e.name) for e in novel.entries] == [
        (DEPTH, 1, -100, False, ""),
        ("before", 4, 400, True, "B"),
    ]
    with pytest.raises(InputError) as e:
        lorebook_from_json(
            {"lorebookVersion": 5, "entries": [{"contextConfig": {"budgetPriority": "x"}}]}, "n", "n.json"
        )
    assert str(e.value) == (
        "n.json: a lorebook entry has the wrong shape (entry 0: contextConfig.budgetPriority = 'x' must be a whole number)"
    )


def _edited_entry():
    return Entry(
        keys=("moon",),
        content="The moon is red.",
        uid=3,
        secondary=("night",),
        logic=LOGICS[1],
        selective=True,
        constant=False,
        enabled=False,
        order=42,
        position=DEPTH,
        depth=2,
        scan_depth=5,
        case_sensitive=True,
        whole_words=False,
        probability=60,
        use_probability=True,
        exclude_recursion=True,
        prevent_recursion=False,
        delay_until_recursion=True,
        sticky=1,
        cooldown=2,
        delay=3,
        name="Moon",
    )


def test_an_entry_is_written_under_sillytaverns_world_info_names():
    assert entry_to_st(_edited_entry()) == {
        "uid": 3,
        "key": ["moon"],
        "keysecondary": ["night"],
        "content": "The moon is red.",
        "constant": False,
        "selective": True,
        "comment": "Moon",
        "order": 42,
        "caseSensitive": True,
        "matchWholeWords": False,
        "depth": 2,
        "scanDepth": 5,
        "probability": 60,
        "useProbability": True,
        "excludeRecursion": True,
        "preventRecursion": False,
        "delayUntilRecursion": True,
        "sticky": 1,
        "cooldown": 2,
        "delay": 3,
        "selectiveLogic": 1,
        "position": 4,
        "disable": True,
    }
    assert entry_from_st(entry_to_st(_edited_entry()), 3) == _edited_entry()


def test_an_entry_is_written_under_a_character_books_names():
    assert entry_to_card(_edited_entry()) == {
        "id": 3,
        "keys": ["moon"],
        "secondary_keys": ["night"],
        "content": "The moon is red.",
        "constant": False,
        "selective": True,
        "insertion_order": 42,
        "case_sensitive": True,
        "comment": "Moon",
        "enabled": False,
        "position": "before_char",
        "extensions": {
            "position": 4,
            "selectiveLogic": 1,
            "match_whole_words": False,
            "depth": 2,
            "scan_depth": 5,
            "probability": 60,
            "useProbability": True,
            "exclude_recursion": True,
            "prevent_recursion": False,
            "delay_until_recursion": True,
            "sticky": 1,
            "cooldown": 2,
            "delay": 3,
        },
    }
    assert entry_from_card(entry_to_card(_edited_entry()), 0) == _edited_entry()
