"""Lorebook activation and placement: each option with exact expectations, golden prompts per position."""

import dataclasses

import pytest
from conftest import golden

from talesmith.runtime.documents.cards import fill_macros
from talesmith.runtime.documents.formats import CHARACTER, USER, Chat, Message, Story, StoryHeader
from talesmith.runtime.documents.lorebook import (
    AFTER,
    ANCHORED,
    AND_ALL,
    AND_ANY,
    BEFORE,
    DECLARED,
    DEPTH,
    NOT_ALL,
    NOT_ANY,
    NOTE_BOTTOM,
    NOTE_TOP,
    Entry,
    Lore,
    Lorebook,
    LoreSettings,
    activate,
    match_key,
    parse_regex_key,
    scan_text,
)
from talesmith.runtime.documents.prompts import fit, plan
from talesmith.runtime.errors import SettingsError


def words(text: str) -> int:
    return len(text.split())


def fired(entries, units, n_ctx=1000, **settings):
    book = Lorebook("book", tuple(entries))
    act = activate([book], units, settings=LoreSettings(**settings), count_tokens=words, n_ctx=n_ctx)
    return [a.entry.uid for a in act.entries]


def e(uid, keys=(), content="", **kw):
    return Entry(keys=tuple(keys), content=content or f"lore {uid}", uid=uid, **kw)


# --- keys ---------------------------------------------------------------------------------------


def test_plain_key_is_a_case_insensitive_substring_by_default():
    assert match_key("the Dragonfly", "dragon", case_sensitive=False, whole_words=False)
    assert not match_key("the Dragonfly", "dragon", case_sensitive=True, whole_words=False)
    assert match_key("the Dragonfly", "Dragon", case_sensitive=True, whole_words=False)


def test_whole_words_single_word_needs_word_boundaries():
    assert not match_key("a dragonfly", "dragon", case_sensitive=False, whole_words=True)
    assert match_key("a dragon, flying", "dragon", case_sensitive=False, whole_words=True)
    assert match_key("\x01dragon", "dragon", case_sensitive=False, whole_words=True)


def test_whole_words_with_several_words_is_a_substring_as_in_sillytavern():
    assert match_key("the red dragonfly", "red dragon", case_sensitive=False, whole_words=True)


def test_regex_keys_with_flags():
    assert parse_regex_key("/drag(on|ons)/i") is not None
    assert parse_regex_key("plain") is None
    assert parse_regex_key("/a/b/") is None  # an unescaped slash inside: a plain key, as in SillyTavern
    assert match_key("Two DRAGONS", "/drag(on|ons)/i", case_sensitive=True, whole_words=False)
    assert not match_key("Two DRAGONS", "/drag(on|ons)/", case_sensitive=False, whole_words=False)
    assert match_key("x\x01She runs", "/^She/m", case_sensitive=False, whole_words=False) is False
    assert match_key("x\nShe runs", "/^She/m", case_sensitive=False, whole_words=False)


def test_a_regex_that_does_not_compile_is_a_plain_key():
    assert match_key("a /(/ b", "/(/", case_sensitive=False, whole_words=False)


def test_a_catastrophic_regex_key_times_out_as_no_match():
    assert not match_key("a" * 40 + "b", "/(a+)+c/", case_sensitive=False, whole_words=False)


def test_entry_case_and_whole_word_options_override_the_settings():
    entries = [e(1, ["Moon"], case_sensitive=True), e(2, ["sun"], whole_words=True), e(3, ["star"])]
    assert fired(entries, ["the moon and sunny starlight"]) == [3]
    assert fired(entries, ["the moon and sunny starlight"], case_sensitive=True, whole_words=True) == []
    assert fired(entries, ["the Moon, the sun, a star"], whole_words=True) == [1, 2, 3]


@pytest.mark.parametrize(
    "logic, text, expected",
    [
        (AND_ANY, "dragon fire", True),
        (AND_ANY, "dragon", False),
        (AND_ANY, "dragon fire ice", True),
        (AND_ALL, "dragon fire", False),
        (AND_ALL, "dragon fire ice", True),
        (NOT_ANY, "dragon", True),
        (NOT_ANY, "dragon ice", False),
        (NOT_ALL, "dragon ice", True),
        (NOT_ALL, "dragon fire ice", False),
        (NOT_ALL, "dragon", True),
    ],
)
def test_secondary_key_logic(logic, text, expected):
    entry = e(1, ["dragon"], secondary=("fire", "ice"), logic=logic)
    assert fired([entry], [text]) == ([1] if expected else [])


def test_secondary_keys_are_ignored_when_the_entry_is_not_selective():
    assert fired([e(1, ["dragon"], secondary=("fire",), selective=False)], ["dragon"]) == [1]


def test_secondary_match_alone_does_not_activate():
    assert fired([e(1, ["dragon"], secondary=("fire",))], ["fire"]) == []


# --- entries and scanning ------------------------------------------------------------------------


def test_constant_and_disabled_entries():
    entries = [e(1, constant=True), e(2, ["x"], enabled=False), e(3, ["x"], constant=True, enabled=False)]
    assert fired(entries, ["x"]) == [1]


def test_empty_keys_never_match():
    assert fired([e(1, ["", "  "])], ["anything"]) == []


def test_scan_depth_counts_units_from_the_end():
    units = ["the dragon woke", "it was late", "nobody spoke"]
    assert fired([e(1, ["dragon"])], units, scan_depth=2) == []
    assert fired([e(1, ["dragon"])], units, scan_depth=3) == [1]
    assert fired([e(1, ["dragon"], scan_depth=3)], units, scan_depth=1) == [1]
    assert fired([e(1, ["nobody"])], units, scan_depth=0) == []


def test_scan_text_is_newest_first_with_message_marks():
    assert scan_text(["a\n", "b\n", "c\n"], 2) == "\x01c\n\x01b"


def test_activation_order_is_highest_order_first():
    entries = [e(1, ["x"], order=10), e(2, ["x"], order=300), e(3, ["x"], order=10), e(4, constant=True, order=50)]
    assert fired(entries, ["x"]) == [2, 4, 1, 3]


# --- budget ---------------------------------------------------------------------------------------


def test_budget_keeps_highest_order_entries_and_stops_at_the_first_that_overflows():
    entries = [
        e(1, ["x"], "one two three", order=3),
        e(2, ["x"], "four five six seven", order=2),
        e(3, ["x"], "eight", order=1),
    ]
    # budget 8 tokens: 3 fit (3 < 8); 3 + 4 = 7 fit; 7 + 1 = 8 reaches it: left out.
    book = Lorebook("b", tuple(entries))
    act = activate([book], ["x"], settings=LoreSettings(budget_tokens=8), count_tokens=words, n_ctx=100)
    assert [a.entry.uid for a in act.entries] == [1, 2] and act.overflowed
    assert [a.tokens for a in act.entries] == [3, 4]
    # the same in percent of the context: 10% of 60 = 6 tokens; entry 2 overflows, entry 3 is never tried
    act = activate([book], ["x"], settings=LoreSettings(budget_percent=10), count_tokens=words, n_ctx=60)
    assert [a.entry.uid for a in act.entries] == [1] and act.overflowed


# --- recursion ------------------------------------------------------------------------------------


def chain():
    return [
        e(1, ["castle"], "The castle has a tower."),
        e(2, ["tower"], "The tower hides a key."),
        e(3, ["key"], "The key opens the vault."),
    ]


def test_recursion_follows_activated_content():
    assert fired(chain(), ["We see the castle"]) == [1, 2, 3]
    assert fired(chain(), ["We see the castle"], recursive=False) == [1]


def test_recursion_step_limit():
    assert fired(chain(), ["We see the castle"], max_recursion_steps=1) == [1]
    assert fired(chain(), ["We see the castle"], max_recursion_steps=2) == [1, 2]
    assert fired(chain(), ["We see the castle"], max_recursion_steps=3) == [1, 2, 3]


def test_exclude_prevent_and_delay_recursion():
    c = chain()
    assert fired([c[0], dataclasses.replace(c[1], exclude_recursion=True), c[2]], ["the castle"]) == [1]
    assert fired([dataclasses.replace(c[0], prevent_recursion=True), c[1], c[2]], ["the castle"]) == [1]
    delayed = dataclasses.replace(c[1], delay_until_recursion=True)
    assert fired([c[0], delayed], ["the castle, the tower"]) == [1, 2]
    assert fired([delayed], ["the tower"]) == []


# --- probability -----------------------------------------------------------------------------------


def test_probability_is_seeded():
    entries = [e(i, ["x"], probability=50) for i in range(40)]
    a = fired(entries, ["x"], seed=7)
    assert a == fired(entries, ["x"], seed=7)
    assert a != fired(entries, ["x"], seed=8)
    assert 10 < len(a) < 30
    assert fired([e(1, ["x"], probability=0)], ["x"]) == []
    assert fired([e(1, ["x"], probability=0, use_probability=False)], ["x"]) == [1]


def test_probability_rolls_again_on_each_turn():
    entries = [e(i, ["x"], probability=50) for i in range(40)]
    assert fired(entries, ["x"], seed=7) != fired(entries, ["y", "x"], seed=7)


def test_invalid_entry_values_are_refused():
    with pytest.raises(SettingsError, match="position 'middle'"):
        e(1, position="middle")
    with pytest.raises(SettingsError, match="probability 120"):
        e(1, probability=120)
    with pytest.raises(SettingsError, match="placement"):
        LoreSettings(placement="anywhere")


def test_macros_fill_char_and_user():
    book = Lorebook("b", (e(1, ["x"], "{{char}} knows {{User}}."),))
    lore = Lore((book,), LoreSettings(placement=DECLARED), {"char": "Aqua", "user": "Kazuma"})
    p, act = lore.apply(plan(Chat("Aqua", messages=(Message(USER, "x"),))), count_tokens=words, n_ctx=100)
    assert "Aqua knows Kazuma.\n" in p.render()


def test_macros_are_filled_the_same_way_in_a_lorebook_entry_as_in_a_card():
    text = "<USER> meets {{ char }}"
    assert fill_macros(text, char="Aqua", user="Kazuma") == "Kazuma meets Aqua"
    book = Lorebook("b", (e(1, ["x"], text),))
    chat = Chat("Aqua", user_name="Kazuma", messages=(Message(USER, "x"),))
    lore = Lore((book,), LoreSettings(placement=DECLARED)).for_document(chat)
    p, _ = lore.apply(plan(chat), count_tokens=words, n_ctx=100)
    assert "Kazuma meets Aqua\n" in p.render() and "<USER>" not in p.render()


def test_a_macro_without_a_value_is_left_as_it_is():
    assert fill_macros("{{char}} <BOT> {{time}} {{original}}", {"Char": "Aqua"}) == "Aqua Aqua {{time}} "


# --- placement: golden prompts ------------------------------------------------------------------------

STORY = Story(
    text="The night was cold.\nThe dragon slept.\nA knight came.\nHe drew his sword.\nThe dragon",
    header=StoryHeader(title="Embers", author="Anon", genre="Fantasy"),
    memory="Dragons hoard gold.",
    author_note="Keep it tense.",
    author_note_depth=2,
)
CHAT = Chat(
    "Aqua",
    persona="A goddess.",
    scenario="A tavern.",
    examples=("{{user}}: Hi\n{{char}}: Hello!",),
    messages=(
        Message(CHARACTER, "Welcome!"),
        Message(USER, "Tell me of the dragon."),
        Message(CHARACTER, "It sleeps."),
        Message(USER, "And the sword?"),
    ),
    user_name="Kazuma",
)


def placed(document, position, *, depth=4, placement=DECLARED):
    entries = (
        e(1, ["dragon"], "Dragons breathe fire.", position=position, depth=depth, order=2),
        e(2, ["sword"], "The sword is cursed.", position=position, depth=depth, order=1),
    )
    lore = Lore((Lorebook("b", entries),), LoreSettings(scan_depth=4, placement=placement))
    return lore.apply(plan(document), count_tokens=words, n_ctx=1000)[0].render()


@pytest.mark.parametrize("position", [BEFORE, AFTER, NOTE_TOP, NOTE_BOTTOM, DEPTH])
def test_story_positions(position):
    golden(f"lorebook_story_{position}.txt", placed(STORY, position, depth=1))


@pytest.mark.parametrize("position", [BEFORE, AFTER, NOTE_TOP, NOTE_BOTTOM, DEPTH])
def test_chat_positions(position):
    golden(f"lorebook_chat_{position}.txt", placed(CHAT, position, depth=2))


def test_story_depth_zero_stays_before_the_unfinished_line():
    text = placed(STORY, DEPTH, depth=0)
    assert text.endswith("He drew his sword.\nThe sword is cursed.\nDragons breathe fire.\nThe dragon")


def test_anchored_entries_stand_where_they_fired():
    chat = dataclasses.replace(
        CHAT, messages=CHAT.messages + (Message(CHARACTER, "Cursed, they say."), Message(USER, "Hm."))
    )
    golden("lorebook_chat_anchored.txt", placed(chat, BEFORE, placement="anchored"))


def chat_turns(lore, turns):
    messages = [Message(USER, "Hi."), Message(CHARACTER, "Hello."), Message(USER, "A dragon!")]
    prompts = []
    for reply, user in turns:
        chat = dataclasses.replace(CHAT, messages=tuple(messages))
        prompts.append(lore.apply(plan(chat), count_tokens=words, n_ctx=1000))
        messages += [Message(CHARACTER, reply), Message(USER, user)]
    return prompts


def test_anchored_entry_keeps_its_place_while_the_chat_goes_on():
    """The prompt up to the entry does not change from one turn to the next: only new text follows."""
    lore = Lore(
        (Lorebook("b", (e(1, ["dragon"], "Dragons breathe fire."),)),), LoreSettings(scan_depth=3, placement=ANCHORED)
    )
    turns = chat_turns(lore, [("Where?", "There."), ("I see it.", "Run."), ("Yes.", "Ok.")])
    (first, a1), (second, a2), (third, a3) = [(p.render(), act) for p, act in turns]
    assert first.endswith("Kazuma: A dragon!\nDragons breathe fire.\nAqua:")
    assert second.startswith(first[: -len("Aqua:")]) and third.startswith(second[: -len("Aqua:")])
    # the key left the scan depth: the entry went quiet, and stays where it stands (it still fits the budget)
    assert [a.entry.uid for a in a2.entries] == [1] and a2.lingering == ()
    assert a3.entries == () and [a.entry.uid for a in a3.lingering] == [1]


def test_a_quiet_entry_leaves_when_the_budget_does_not_hold_it():
    book = Lorebook("b", (e(1, ["dragon"], "Dragons breathe fire."), e(2, ["run"], "Running is futile here.")))
    lore = Lore((book,), LoreSettings(scan_depth=1, budget_tokens=7, placement=ANCHORED))
    turns = chat_turns(lore, [("Where?", "Run."), ("Fast!", "Ok."), ("-", "-")])
    (p1, a1), (p2, a2), (p3, a3) = turns
    assert [a.entry.uid for a in a1.entries] == [1]
    assert [a.entry.uid for a in a2.entries] == [2] and a2.lingering == ()  # 4 + 3 tokens do not fit in 7
    assert "Dragons" not in p2.render() and "Running is futile here.\nAqua:" in p2.render()
    assert a3.entries == () and [a.entry.uid for a in a3.lingering] == [2]


def test_fit_drops_history_but_keeps_head_lore():
    lore = Lore((Lorebook("b", (e(1, constant=True, content="Always here."),)),), LoreSettings())
    p, _ = lore.apply(plan(CHAT), count_tokens=words, n_ctx=1000)
    fitted = fit(p, words, 20)
    assert fitted.dropped > 0 and fitted.text.startswith("Always here.\nAqua's Persona")


def test_plans_without_history_take_every_entry_before_the_text():
    from talesmith.runtime.documents.formats import RawText

    lore = Lore((Lorebook("b", (e(1, constant=True, content="Lore.", position=DEPTH),)),), LoreSettings())
    assert lore.apply(plan(RawText("Once")), count_tokens=words, n_ctx=100)[0].render() == "Lore.\nOnce"


def test_when_the_budget_is_short_the_latest_standing_quiet_entry_leaves_first():
    book = Lorebook(
        "b", (e(1, ["alpha"], "one two three"), e(2, ["beta"], "four five six"), e(3, ["gamma"], "seven eight nine"))
    )
    lore = Lore((book,), LoreSettings(scan_depth=1, budget_tokens=8, placement=ANCHORED))
    chat = dataclasses.replace(CHAT, messages=(Message(USER, "alpha"), Message(USER, "beta"), Message(USER, "gamma")))
    p, act = lore.apply(plan(chat), count_tokens=words, n_ctx=1000)
    assert [a.entry.uid for a in act.entries] == [3] and [a.entry.uid for a in act.lingering] == [1]
    assert p.render().endswith("Kazuma: alpha\none two three\nKazuma: beta\nKazuma: gamma\nseven eight nine\nAqua:")


def test_the_replay_memo_gives_the_same_prompt_as_a_fresh_replay():
    from talesmith.runtime.documents import lorebook

    book = Lorebook(
        "b",
        (
            e(1, ["dragon"], "Dragons breathe fire."),
            e(2, ["sword"], "The sword is cursed."),
            e(3, ["ship"], "The ship sank.", probability=50),
        ),
    )
    lore = Lore((book,), LoreSettings(scan_depth=1, budget_tokens=9))
    words_cycle = ["dragon", "calm", "sword", "ship", "calm", "dragon sword"]
    messages = []
    for i in range(30):
        messages.append(Message(USER if i % 2 else CHARACTER, f"{words_cycle[i % 6]} {i}"))
        chat = dataclasses.replace(CHAT, messages=tuple(messages))
        memo = lore.apply(plan(chat), count_tokens=words, n_ctx=1000)[0].render()
        lorebook._REPLAYS.clear()
        assert lore.apply(plan(chat), count_tokens=words, n_ctx=1000)[0].render() == memo
    edited = dataclasses.replace(chat, messages=(messages[0], Message(USER, "ship ahoy"), *messages[2:]))
    memo = lore.apply(plan(edited), count_tokens=words, n_ctx=1000)[0].render()
    lorebook._REPLAYS.clear()
    assert lore.apply(plan(edited), count_tokens=words, n_ctx=1000)[0].render() == memo


def test_books_of_the_same_name_keep_all_their_entries():
    a, b = Lorebook("world", (e(0, ["x"], "From a."),)), Lorebook("world", (e(0, ["x"], "From b."),))
    lore = Lore((a, b), LoreSettings(placement=DECLARED))
    assert [x.name for x in lore.books] == ["world", "world (2)"]
    p, act = lore.apply(plan(Chat("A", messages=(Message(USER, "x"),))), count_tokens=words, n_ctx=100)
    assert len(act.entries) == 2 and p.render().startswith("From a.\nFrom b.\n")


# --- SillyTavern's placement by default, held entries, timed effects ----------------------------------


def active_by_length(entry, texts, **settings):
    """The entries active at each length of a chat whose messages are `texts` (SillyTavern's set, not held)."""
    lore = Lore((Lorebook("b", (entry,)),), LoreSettings(scan_depth=1, hold=False, **settings))
    out = []
    for k in range(1, len(texts) + 1):
        chat = Chat("Aqua", messages=tuple(Message(USER, t) for t in texts[:k]))
        _, act = lore.apply(plan(chat), count_tokens=words, n_ctx=1000)
        out.append(bool(act.entries))
    return out


def test_the_default_placement_is_sillytaverns():
    assert LoreSettings().placement == DECLARED and LoreSettings().hold
    lore = Lore((Lorebook("b", (e(1, ["dragon"], "Dragons breathe fire."),)),))
    p, _ = lore.apply(plan(CHAT), count_tokens=words, n_ctx=1000)
    assert p.render().startswith("Dragons breathe fire.\nAqua's Persona: A goddess.")


def test_a_sticky_entry_stays_active_for_its_messages_without_its_key():
    assert active_by_length(e(1, ["dragon"], sticky=2), ["dragon", "calm", "calm", "calm"]) == [1, 1, 0, 0]


def test_an_entry_on_cooldown_cannot_activate():
    assert active_by_length(e(1, ["dragon"], cooldown=2), ["dragon"] * 5) == [1, 0, 1, 0, 1]


def test_a_sticky_entry_cools_down_from_where_its_sticky_time_ends():
    # as SillyTavern: the cooldown started with the activation ends first; the end of the sticky time starts it again
    assert active_by_length(e(1, ["dragon"], sticky=2, cooldown=1), ["dragon"] * 6) == [1, 1, 0, 1, 1, 0]


def test_a_delayed_entry_waits_for_that_many_messages():
    assert active_by_length(e(1, ["dragon"], delay=3), ["dragon"] * 4) == [0, 0, 1, 1]


def test_a_sticky_entry_is_not_rolled_again():
    # probability 1: the roll at the first length passes for seed 5 and none after; sticky keeps it
    rolls = active_by_length(e(1, ["dragon"], probability=1, use_probability=True), ["dragon"] * 40, seed=5)
    first = rolls.index(True)
    sticky = e(1, ["dragon"], probability=1, use_probability=True, sticky=3)
    assert active_by_length(sticky, ["dragon"] * 40, seed=5)[first : first + 4] == [1, 1, 1, 0]


def test_timed_effects_must_not_be_negative():
    with pytest.raises(SettingsError, match="lorebook entry 1: sticky -1 is negative"):
        e(1, ["x"], sticky=-1)


def test_a_held_entry_keeps_the_start_of_the_prompt_until_a_new_entry_fires():
    """SillyTavern's placement: the entry stands before the character; once its key has gone it is held there
    while the budget holds it, so the prompt before the history changes only when a new entry fires."""
    book = Lorebook("b", (e(1, ["dragon"], "Dragons breathe fire."), e(2, ["sword"], "The sword is cursed.")))
    texts = ["A dragon!", "Where?", "There.", "A sword!"]
    prompts = {}
    for hold in (True, False):
        lore = Lore((book,), LoreSettings(scan_depth=1, hold=hold))
        prompts[hold] = []
        for k in range(1, len(texts) + 1):
            chat = dataclasses.replace(CHAT, messages=tuple(Message(USER, t) for t in texts[:k]))
            p, act = lore.apply(plan(chat), count_tokens=words, n_ctx=1000)
            prompts[hold].append((p.render().split("Aqua's Persona")[0], act))
    heads = [head for head, _ in prompts[True]]
    # ties in order stand as in the book, whichever fired last
    assert heads == ["Dragons breathe fire.\n"] * 3 + ["Dragons breathe fire.\nThe sword is cursed.\n"]
    assert [a.entry.uid for a in prompts[True][2][1].lingering] == [1] and prompts[True][2][1].entries == ()
    assert [head for head, _ in prompts[False]] == ["Dragons breathe fire.\n", "", "", "The sword is cursed.\n"]


def test_a_documents_own_placement_wins_over_its_lorebooks():
    from talesmith.runtime.documents.stories import StoryDocument, from_dict, to_dict
    from talesmith.runtime.documents.worldinfo import document_lore

    book = Lorebook("b", (e(1, ["moon"]),), raw={"talesmith": {"placement": "declared"}})
    story = StoryDocument(story=Story(text="The moon."), lorebooks=(book,))
    assert document_lore(story).settings.placement == DECLARED
    anchored = dataclasses.replace(story, lore_placement=ANCHORED)
    assert document_lore(anchored).settings.placement == ANCHORED
    assert to_dict(anchored)["lore_placement"] == "anchored" and "lore_placement" not in to_dict(story)
    assert from_dict(to_dict(anchored)).lore_placement == ANCHORED
