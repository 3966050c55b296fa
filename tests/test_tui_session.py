"""The document session without Textual: undo steps, saving, forgetting an emptied untitled document,
a file that follows its document's name, checkpoints while a generation streams."""

import dataclasses
import errno
import subprocess
import sys
from pathlib import Path

from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.stories import Library, StoryDocument
from talesmith.tui.session import CHECKPOINT_SECONDS, MERGE_SECONDS, DocumentSession, _named_after

UNTITLED = StoryDocument().name


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def session(tmp_path, clock=None, *, named_files=False):
    return DocumentSession(
        Library(tmp_path / "stories", "story"),
        StoryDocument(),
        empty=lambda d: d.story == Story(),
        disposable=lambda d: d.name == UNTITLED,
        named_files=named_files,
        clock=clock or Clock(),
    )


def typed(doc, text):
    return doc.with_text(text)


def test_edits_of_one_field_close_together_are_one_undo_step(tmp_path):
    clock = Clock()
    s = session(tmp_path, clock)
    for text in ("O", "On", "Once"):
        assert s.commit(typed(s.doc, text), edit="text")
        clock.now += MERGE_SECONDS / 2
    clock.now += MERGE_SECONDS
    s.commit(typed(s.doc, "Once upon"), edit="text")
    assert not s.commit(s.doc, edit="text")
    assert s.undo() and s.doc.text == "Once"
    assert s.undo() and s.doc.text == ""
    assert not s.undo()
    assert s.redo() and s.redo() and s.doc.text == "Once upon" and not s.redo()


def test_saving_writes_new_documents_once_and_leaves_empty_ones_alone(tmp_path):
    s = session(tmp_path)
    assert s.save().ok and s.doc_id is None and not (tmp_path / "stories").exists()
    s.commit(typed(s.doc, "Once"))
    assert s.unsaved()
    assert s.save().ok and s.doc_id is not None and not s.unsaved()
    assert Library(tmp_path / "stories", "story").load(s.doc_id).text == "Once"


def test_an_untitled_document_emptied_again_loses_its_file(tmp_path):
    s = session(tmp_path)
    s.commit(typed(s.doc, "Once"))
    s.save()
    path = s.library.path(s.doc_id)
    s.commit(typed(s.doc, ""))
    assert s.save().ok and s.doc_id is None and not path.exists() and not s.unsaved()
    named = session(tmp_path)
    named.commit(StoryDocument(story=Story(text="x"), name="Kept"))
    named.save()
    named.commit(StoryDocument(name="Kept"))
    assert named.save().ok and named.library.path(named.doc_id).exists()


def test_a_file_named_after_its_document_follows_a_new_name_with_its_saved_state(tmp_path):
    s = session(tmp_path, named_files=True)
    s.commit(typed(s.doc, "It came from the sky."))
    assert s.save().ok and s.doc_id.endswith("-untitled-story")
    old = s.library.path(s.doc_id)
    old.with_suffix(".kv").write_bytes(b"state")
    Path(str(old.with_suffix(".kv")) + ".meta").write_text('{"tokens": [1, 2]}')
    s.commit(dataclasses.replace(s.doc, name="The Colour Out of Space"))
    assert s.save().ok and s.doc_id.endswith("-the-colour-out-of-space") and not s.unsaved()
    new = s.library.path(s.doc_id)
    assert sorted(p.name for p in (tmp_path / "stories").iterdir()) == [
        new.name,
        new.name[:-5] + ".kv",
        new.name[:-5] + ".kv.meta",
    ]
    assert s.library.load(s.doc_id) == s.doc and s.doc.text == "It came from the sky."
    assert new.with_suffix(".kv").read_bytes() == b"state"
    s.commit(typed(s.doc, "It came from the sky. Then"))  # the same name: the same file
    assert s.save().ok and s.library.path(s.doc_id) == new
    plain = session(tmp_path / "plain")  # chats keep their file whatever their name
    plain.commit(typed(plain.doc, "x"))
    plain.save()
    first = plain.doc_id
    plain.commit(dataclasses.replace(plain.doc, name="Other"))
    assert plain.save().ok and plain.doc_id == first


def test_which_file_ids_were_made_from_a_name():
    assert _named_after("20261207-193000-the-sea", "The Sea")
    assert _named_after("20261207-193000-the-sea-2", "The sea")  # a second file made in the same second
    assert _named_after("20261207-193000-part-2", "Part 2")
    assert not _named_after("20261207-193000-untitled-story", "The Sea")
    assert not _named_after("20261207-193000-the-sea", "The Sea Again")
    assert _named_after("imported", "Anything")  # ids of another shape are left as they are


def test_a_failed_save_says_why_and_keeps_the_changes_unsaved(tmp_path, monkeypatch):
    s = session(tmp_path)
    s.commit(typed(s.doc, "Precious"))

    def full(doc_id, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(s.library, "save", full)
    saved = s.save()
    assert not saved.ok and saved.error == "[Errno 28] No space left on device" and s.unsaved()
    s.mark_saved()
    assert not s.unsaved()


def test_streamed_text_is_checkpointed_at_most_every_interval_and_only_for_the_running_job(tmp_path):
    clock = Clock()
    s = session(tmp_path, clock)
    job = s.start("Once")
    assert s.busy and s.streamed(job, " upon") and not s.checkpoint_due()
    clock.now += CHECKPOINT_SECONDS
    assert s.checkpoint_due() and not s.checkpoint_due()
    assert s.write(typed(s.doc, job.base + job.text)).ok
    assert Library(tmp_path / "stories", "story").load(s.doc_id).text == "Once upon" and s.doc.text == ""
    s.end(job)
    assert not s.busy and not s.streamed(job, " a time") and job.text == " upon"
    clock.now += CHECKPOINT_SECONDS
    assert not s.checkpoint_due()


def test_the_session_imports_no_textual():
    code = "import sys, talesmith.tui.session; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
