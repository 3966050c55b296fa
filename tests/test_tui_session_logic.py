"""What the screens leave to modules without Textual: the chat's decisions (where a generation's text goes,
which reply a key acts on, the prompt it continues), the character cards kept, a save's notice, export,
reading a document back after the library changed it, and the saved model state."""

import dataclasses
import json
import subprocess
import sys

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.documents.cards import Character, load_card
from talesmith.runtime.documents.formats import USER
from talesmith.runtime.documents.stories import ChatDocument, Library, StoryDocument, User, from_dict
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import preset
from talesmith.tui import cache, chatlogic, storylogic
from talesmith.tui.chatlogic import CONTINUE, IMPERSONATE, REPLY, SWIPE, Target
from talesmith.tui.model import ModelSession
from talesmith.tui.session import DocumentSession, Saved

ANNA = Character(name="Anna", persona="A baker.", greeting="Hello, {{user}}.", alternate_greetings=("Hi.",))


def chat() -> ChatDocument:
    """Anna's greeting (two swipes), your line, her reply."""
    return ChatDocument.start(ANNA, user=User("Bo")).sent("Morning!").replied("Bread?")


def test_the_modules_the_screens_decide_with_do_not_import_textual():
    code = "import sys, talesmith.tui.chatlogic, talesmith.tui.storylogic, talesmith.tui.cache, talesmith.tui.session; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- where a generation's text goes ------------------------------------------------------------------


def test_a_reply_is_added_stripped_a_swipe_shown_and_a_continued_reply_grows():
    doc = chat()
    assert chatlogic.placed(doc, Target(REPLY), "  More? ").messages[-1].swipes == ("More?",)
    swiped = chatlogic.placed(doc, Target(SWIPE, 2), " Cake?\n").messages[2]
    assert (swiped.swipes, swiped.index) == (("Bread?", "Cake?"), 1)
    assert chatlogic.placed(doc, Target(CONTINUE, 2), " Or rolls? \n").messages[2].text == "Bread? Or rolls?"
    assert chatlogic.placed(doc, Target(IMPERSONATE), "I am Bo.") == doc  # the composer's, not the chat's


def test_the_prompt_of_a_swipe_stops_before_the_reply_and_a_continued_reply_is_started():
    doc = chat()
    assert [m.text for m in chatlogic.prompt_for(doc, Target(REPLY), User(), ()).messages] == [
        "Hello, Bo.",
        "Morning!",
        "Bread?",
    ]
    assert [m.text for m in chatlogic.prompt_for(doc, Target(SWIPE, 2), User(), ()).messages] == [
        "Hello, Bo.",
        "Morning!",
    ]
    assert chatlogic.prompt_for(doc, Target(CONTINUE, 2), User(), ()).started == "Bread?"
    assert chatlogic.prompt_for(doc, Target(IMPERSONATE), User(), ()).writer == USER


def test_swiping_the_last_reply():
    doc = chat()
    assert chatlogic.last_reply_target(doc.sent("Yes"), 1) == (
        "Swipes change the character's last reply; there is none after your message"
    )
    assert chatlogic.last_reply_target(doc, 1) == Target(SWIPE, 2)  # past its only swipe: write a new one
    greeted = ChatDocument.start(ANNA, user=User("Bo"))
    shown = chatlogic.last_reply_target(greeted, 1)
    assert isinstance(shown, ChatDocument) and shown.messages[0].text == "Hi."
    assert chatlogic.last_reply_target(shown, 1) == "That is the last greeting; ctrl+r writes a new one with the model"


def test_acting_on_any_reply_leaves_the_messages_after_it():
    doc = chat()
    assert chatlogic.act_on_reply(doc, "regenerate", 1, 0) == (
        "That is your message: r, ←/→ and c act on the character's replies; e edits yours"
    )
    assert chatlogic.act_on_reply(doc, "continue", 2, 0) == Target(CONTINUE, 2)
    assert chatlogic.act_on_reply(doc, "regenerate", 0, 0) == Target(SWIPE, 0)
    assert chatlogic.act_on_reply(doc, "swipe", 2, 1) == Target(SWIPE, 2)
    assert chatlogic.act_on_reply(doc, "swipe", 2, -1) is None  # one swipe: nothing to show instead
    swiped = chatlogic.act_on_reply(doc, "swipe", 0, 1)  # the greetings: the next one, the rest kept
    assert isinstance(swiped, ChatDocument)
    assert [m.text for m in swiped.messages] == ["Hi.", "Morning!", "Bread?"]
    back = chatlogic.act_on_reply(swiped, "swipe", 0, 1)  # past the last greeting: the first again
    assert isinstance(back, ChatDocument) and back.messages[0].text == "Hello, Bo."


def test_the_chats_status_names_messages_out_of_context_and_the_swipe_shown():
    doc = ChatDocument.start(ANNA)
    assert chatlogic.status_extra(doc, 0) == "swipe 1/2 (alt+←/→)"
    assert chatlogic.status_extra(chat(), 3) == "3 msgs out of ctx"


def test_a_new_chat_keeps_the_open_chats_sampling_else_takes_the_models_preset():
    open_chat = ChatDocument.start(ANNA, settings=preset("default"), preset="default")
    assert chatlogic.new_chat(open_chat, ANNA, User(), "pygmalion").preset == "default"
    fresh = chatlogic.new_chat(chatlogic.NO_CHAT, ANNA, User("Bo"), "default")
    assert (fresh.preset, fresh.settings, fresh.messages[0].text) == ("default", preset("default"), "Hello, Bo.")
    assert chatlogic.new_chat(chatlogic.NO_CHAT, ANNA, User(), None).preset == ChatDocument(ANNA).preset


def test_a_chat_named_after_its_character_follows_a_new_name():
    renamed = Character(name="Anne")
    assert chatlogic.with_character(chat(), renamed).name == "Chat with Anne"
    own = chatlogic.with_character(ChatDocument(ANNA, name="Bakery"), renamed)
    assert (own.name, own.character) == ("Bakery", renamed)


# --- character cards ---------------------------------------------------------------------------------


def test_a_card_is_kept_under_its_name_and_an_import_keeps_both_or_replaces(tmp_path):
    path = chatlogic.card_path(tmp_path, ANNA)
    assert path == tmp_path / "characters" / "anna.json"
    assert chatlogic.write_card(path, ANNA) == 0
    assert load_card(path).name == "Anna"
    assert json.loads(path.read_text())["data"]["first_mes"] == "Hello, {{user}}."
    assert chatlogic.import_target(path, "replace") == path
    assert chatlogic.import_target(path, "keep") == tmp_path / "characters" / "anna-2.json"
    (tmp_path / "characters" / "anna-2.json").write_text("{}")
    assert chatlogic.free_path(path) == tmp_path / "characters" / "anna-3.json"


def test_a_card_that_cannot_be_written_raises_oserror(tmp_path):
    (tmp_path / "characters").write_text("a file, not a folder")
    with pytest.raises(OSError):
        chatlogic.write_card(chatlogic.card_path(tmp_path, ANNA), ANNA)


# --- saving, export, the library changed from outside ------------------------------------------------


def test_what_a_save_tells_the_user(tmp_path):
    assert Saved().notice("Tale", tmp_path) is None
    assert Saved(error="disk full").notice("Tale", tmp_path) == (
        f"Could not save 'Tale' to {tmp_path}: disk full. Your text is still here; "
        f"free some space or fix the folder, then press ctrl+s.",
        "error",
    )
    assert Saved(replaced=2).notice("Tale", tmp_path) == (
        "2 characters of 'Tale' cannot be stored as UTF-8 (broken surrogates, often from a card); they were saved as \ufffd",
        "warning",
    )


def chats(tmp_path) -> DocumentSession:
    return DocumentSession(Library(tmp_path / "chats", "chat"), chatlogic.NO_CHAT, empty=lambda d: not d.character.name)


def test_an_export_makes_the_changes_safe_and_a_failed_one_says_why(tmp_path):
    session = chats(tmp_path)
    session.commit(chat())
    assert session.export(tmp_path / "out.json", User()) == ""
    assert from_dict(json.loads((tmp_path / "out.json").read_text())) == chat()
    assert not session.unsaved()
    session.commit(chat().sent("More"))
    error = session.export(tmp_path / "out.txt", User("Bo"))
    assert error == "" and "Bo: More" in (tmp_path / "out.txt").read_text()
    session.commit(chat().sent("Again"))
    assert session.export(tmp_path / "out.txt", User()) == (
        f"{tmp_path / 'out.txt'} already exists and was left as it is; choose another name"
    )
    assert session.unsaved()


def test_reading_back_after_the_library_renamed_or_deleted_the_open_document(tmp_path):
    session = chats(tmp_path)
    session.commit(chat())
    assert session.save().ok and session.doc_id is not None
    assert session.reread() == ""
    session.library.save(session.doc_id, ChatDocument(ANNA, chat().messages, name="Renamed"))
    assert session.reread() == "renamed"
    assert (session.doc.name, session.unsaved()) == ("Renamed", False)
    assert session.history.undo().present == chatlogic.NO_CHAT  # the rename is no undo step of its own
    session.library.path(session.doc_id).unlink()
    assert session.reread() == "deleted"
    assert (session.doc_id, session.doc, session.unsaved()) == (None, chatlogic.NO_CHAT, False)


def test_reading_a_document_of_another_kind_is_refused(tmp_path):
    stories = Library(tmp_path / "chats", "story")
    stories.save("tale", StoryDocument())
    with pytest.raises(TalesmithError):
        chats(tmp_path).read("tale")


# --- the saved model state ---------------------------------------------------------------------------


def test_keeping_a_state_holds_the_states_under_the_cap(tmp_path):
    folder = tmp_path / "stories"
    folder.mkdir()
    old = folder / "old.json.kv"
    old.write_bytes(b"x" * 2048)
    model = ModelSession("scripted")
    backend = ScriptedBackend("")  # keeps no state files of its own
    assert cache.keep(model, backend, folder / "tale.json", [folder], cap_mb=1)
    assert old.exists()
    assert cache.keep(model, backend, folder / "tale.json", [folder], cap_mb=0)
    assert not old.exists()
    assert cache.restore(model, backend, folder / "tale.json", None, preset("default")) == 0
    assert not model.lock.locked()


# --- the story screen's decisions ----------------------------------------------------------------------


def test_a_header_field_edit_and_a_story_named_after_its_title():
    doc = StoryDocument()
    titled = storylogic.field_edit(doc, "title", "The Mill ")
    assert isinstance(titled, StoryDocument)
    assert (titled.name, titled.story.header.title) == ("The Mill", "The Mill ")
    named = dataclasses.replace(titled, name="My own name")
    renamed = storylogic.field_edit(named, "title", "The Barn")
    assert isinstance(renamed, StoryDocument) and renamed.name == "My own name"
    tagged = storylogic.field_edit(doc, "tags", " sea, , storm ")
    assert isinstance(tagged, StoryDocument) and tagged.story.header.tags == ("sea", "storm")
    assert storylogic.field_edit(doc, "author_note_depth", "0") == (
        "Author's note depth 0 must be at least 1 (lines from the end)"
    )
    assert storylogic.field_edit(doc, "author_note_depth", "") is None  # half typed: nothing yet
    deep = storylogic.field_edit(doc, "author_note_depth", "4")
    assert isinstance(deep, StoryDocument) and deep.story.author_note_depth == 4
    assert storylogic.field_edit(doc, "memory", "x") is None  # not a header field


def test_a_storys_free_name_its_synopsis_and_where_a_generation_writes():
    assert storylogic.free_name("Tale", ["Tale", "Tale (2)", "Other"]) == "Tale (3)"
    assert storylogic.free_name("Tale", ["Other"]) == "Tale"
    assert storylogic.follows_title("Tale (2)", "Tale") and not storylogic.follows_title("Mine", "Tale")
    assert storylogic.without_prefix("  あらすじ：A mill.") == "A mill."
    assert storylogic.place_of("Once") == ("Once", "")
    assert storylogic.place_of(storylogic.Place("Once", " upon")) == ("Once", " upon")
    assert storylogic.status_extra(StoryDocument()) == ""
