import pytest
from conftest import golden

from talesmith.runtime.documents.formats import (
    CHARACTER,
    USER,
    Chat,
    GenrePrompt,
    Message,
    RawText,
    Story,
    StoryHeader,
    TinyStory,
    make_document,
)
from talesmith.runtime.documents.prompts import fit, plan, render, split_units
from talesmith.runtime.errors import ContextOverflowError, SettingsError

DUNWICH = StoryHeader(
    title="The Dunwich Horror", author="H. P. Lovecraft", genre="Horror", tags=("3rdperson", "scary"), style="Dark"
)


def test_annotated_story_matches_lit6b_card():
    story = Story(text="When a traveler in north central Massachusetts takes the wrong fork...", header=DUNWICH)
    golden("story_annotated.txt", render(story))


def test_story_header_has_only_given_fields():
    story = Story(
        text="When a traveler", header=StoryHeader(title="The Dunwich Horror", author="H. P. Lovecraft", genre="Horror")
    )
    assert (
        render(story) == "[ Title: The Dunwich Horror; Author: H. P. Lovecraft; Genre: Horror ]\n***\nWhen a traveler"
    )


def test_story_without_header_is_its_text():
    assert render(Story(text="Once.")) == "Once."


def test_story_memory_and_authors_note():
    story = Story(
        text="Line one.\nLine two.\nLine three.\nLine four.",
        header=DUNWICH,
        memory="Wilbur is eleven feet tall.",
        author_note="Dread builds slowly.",
        author_note_depth=2,
    )
    golden("story_memory_note.txt", render(story))


def test_authors_note_deeper_than_text_goes_first():
    story = Story(text="Only line.", author_note="Note.", author_note_depth=5)
    assert render(story) == "[ Author's note: Note. ]\nOnly line."


def test_japanese_story_matches_genji_card():
    story = Story(
        japanese=True,
        synopsis="あなたは異世界に転生してしまいました。勇者となって、仲間を作り、異世界を冒険しよう！",
        text="転生すると、ある能力を手に入れていた。それは、",
    )
    golden("story_japanese.txt", render(story))


def test_persona_chat_matches_pygmalion_card():
    chat = Chat(
        character="Aqua",
        persona="A cheerful goddess of water who is easily flustered.",
        scenario="You meet Aqua at the guild hall.",
        examples=("{{user}}: Hi!\n{{char}}: Oh! A new adventurer!",),
        messages=(Message(CHARACTER, "Welcome to Axel!"), Message(USER, "Can you heal me?")),
    )
    golden("chat_pygmalion.txt", render(chat))
    assert plan(chat).stops[:3] == ("\nYou:", "\n<START>", "<END>")


def test_chat_without_scenario_or_examples():
    chat = Chat(character="Bob", persona="A baker.", messages=(Message(USER, "Hello"),))
    assert render(chat) == "Bob's Persona: A baker.\n<START>\nYou: Hello\nBob:"


def test_chat_continuing_a_reply_and_writing_the_user_s_line():
    said = (Message(USER, "Hello"),)
    cut = Chat(character="Bob", persona="A baker.", messages=said, started="Fresh bread, {{user}}, and")
    assert render(cut) == "Bob's Persona: A baker.\n<START>\nYou: Hello\nBob: Fresh bread, You, and"
    assert plan(cut).stops[0] == "\nYou:"
    you = Chat(character="Bob", persona="A baker.", messages=(*said, Message(CHARACTER, "Hi!")), writer=USER)
    assert render(you) == "Bob's Persona: A baker.\n<START>\nYou: Hello\nBob: Hi!\nYou:"
    assert plan(you).stops[0] == "\nBob:" and "\nYou:" not in plan(you).stops


def test_genre_prompts_falcon_and_llama():
    assert render(GenrePrompt("horror", "falcon")) == "<human> write me a horror story\n<assistant>"
    assert render(GenrePrompt("fairy tale", "falcon")) == "<human> write me a fairy tale\n<assistant>"
    assert render(GenrePrompt("horror", "llama")) == "### Human: Write me a horror story \n ### Assistant:"
    assert plan(GenrePrompt("horror", "llama")).stops == ("### Human:",)


def test_tinystories_prompt():
    assert render(TinyStory("Once upon a time")) == "<|startoftext|> Once upon a time"
    assert render(TinyStory()) == "<|startoftext|>"
    assert plan(TinyStory()).stops == ("<|endoftext|>",)


def test_raw_is_untouched():
    assert render(RawText("  exactly\n this ")) == "  exactly\n this "


def test_make_document_rejects_fields_of_other_formats():
    with pytest.raises(ValueError, match="format 'raw' does not take 'title'"):
        make_document("raw", "x", {"title": "T"})
    with pytest.raises(ValueError, match="unknown format 'poem'"):
        make_document("poem", "x")


def test_make_document_chat_from_fields():
    doc = make_document("chat", "Hi", {"character": "Aqua", "persona": "Goddess.", "greeting": "Hello!"})
    assert render(doc) == "Aqua's Persona: Goddess.\n<START>\nAqua: Hello!\nYou: Hi\nAqua:"


def test_chat_needs_a_character():
    with pytest.raises(SettingsError, match="character name"):
        render(Chat(character=" "))


def test_split_units_keeps_text_and_splits_long_lines():
    text = "Short line.\n" + "A sentence here. " * 40 + "\nEnd"
    units = split_units(text)
    assert "".join(units) == text
    assert units[0] == "Short line.\n"
    assert len(units) > 3 and all(len(u) <= 400 for u in units)


def words(text):
    return len(text.split())


def test_fit_drops_oldest_story_lines_never_the_header():
    story = Story(text="".join(f"line {i} a b c\n" for i in range(10)) + "last", header=DUNWICH, memory="Mem.")
    full = words(render(story))
    fitted = fit(plan(story), words, full - 10)
    assert fitted.dropped == 2  # each line is 5 words
    assert fitted.text.startswith("Mem.\n[ Title: The Dunwich Horror;")
    assert "line 0" not in fitted.text and "line 1 " not in fitted.text and "line 2 a" in fitted.text
    assert fitted.n_tokens <= full - 10


def test_fit_keeps_chat_persona_and_drops_oldest_turns():
    chat = Chat(
        character="Aqua",
        persona="Goddess of water.",
        messages=tuple(Message(USER if i % 2 else CHARACTER, f"message number {i}") for i in range(8)),
    )
    fitted = fit(plan(chat), words, words(render(chat)) - 7)
    assert fitted.dropped == 2  # each turn is 4 words
    assert fitted.text.startswith("Aqua's Persona: Goddess of water.\n<START>\nAqua: message number 2\n")
    assert fitted.text.endswith("Aqua: message number 6\nYou: message number 7\nAqua:")


def test_fit_refuses_when_the_kept_part_does_not_fit():
    chat = Chat(character="Aqua", persona="a " * 50, messages=(Message(USER, "hi"),))
    with pytest.raises(ContextOverflowError, match="persona"):
        fit(plan(chat), words, 10)
    with pytest.raises(ContextOverflowError, match="the prompt is 6 tokens"):
        fit(plan(RawText("one two three four five six")), words, 3)
