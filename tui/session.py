"""One open story or chat, without Textual: its undo history, what is on disk, when edits merge into
one undo step, saving (and forgetting an untitled document emptied again), the generation running and
when its text is checkpointed. The screens show a session; this module decides."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from talesmith.runtime import files
from talesmith.runtime.documents.adventure import Adventure
from talesmith.runtime.documents.formats import History, PromptDocument
from talesmith.runtime.documents.stories import (
    ChatDocument,
    Library,
    StoryDocument,
    User,
    atomic_write,
    dumps,
    export,
    slug,
)
from talesmith.runtime.errors import TalesmithError

D = TypeVar("D", StoryDocument, ChatDocument)
"""A session's document: a story or a chat."""
Prompt = PromptDocument | Adventure
"""The runtime document a generation continues (a story, a chat, an adventure)."""
_ids = itertools.count(1)

MERGE_SECONDS = 1.5
"""Edits to one field closer together than this are one undo step."""
CHECKPOINT_SECONDS = 1.0
"""While a generation streams, its text so far is written to the document's file this often."""


@dataclass
class Job:
    """One generation: what it continues and the text it has produced so far."""

    base: Any
    """What the screen needs to place the result (the story text before it, or the kind of reply)."""
    id: int = field(default_factory=lambda: next(_ids))
    stop: threading.Event = field(default_factory=threading.Event)
    parts: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass(frozen=True)
class Saved:
    """What a save did: `error` says why nothing was written; `replaced` counts characters UTF-8 cannot hold."""

    error: str = ""
    replaced: int = 0

    @property
    def ok(self) -> bool:
        return not self.error

    def notice(self, name: str, folder: Path) -> tuple[str, str] | None:
        """What to tell the user about saving `name` in `folder` and how loudly (error, warning); None: nothing."""
        if self.error:
            return (
                f"Could not save {name!r} to {folder}: {self.error}. Your text is still here; "
                f"free some space or fix the folder, then press ctrl+s.",
                "error",
            )
        if self.replaced:
            return (
                f"{self.replaced} characters of {name!r} cannot be stored as UTF-8 (broken surrogates, "
                f"often from a card); they were saved as \ufffd",
                "warning",
            )
        return None


class DocumentSession(Generic[D]):
    """A document of one library: `history.present` is what the user sees, `saved_doc` what is on disk."""

    def __init__(
        self,
        library: Library,
        blank: D,
        *,
        empty: Callable[[D], bool],
        disposable: Callable[[D], bool] = lambda doc: False,
        named_files: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.library = library
        self.empty: Callable[[D], bool] = empty
        self.disposable: Callable[[D], bool] = disposable
        self.clock = clock
        self.named_files = named_files
        """Whether a document's file follows its name (a story named after its title): renamed when it changes."""
        self.blank: D = blank
        self.history: History[D] = History(blank)
        self.doc_id: str | None = None
        self.saved_doc: D | None = blank
        self.job: Job | None = None
        self._last_edit: tuple[str, float] = ("", 0.0)
        self._checkpointed = 0.0

    @property
    def doc(self) -> D:
        return self.history.present

    # --- editing -----------------------------------------------------------------------------

    def commit(self, doc: D, *, edit: str = "") -> bool:
        """Make `doc` the present; edits of one field in quick succession are one undo step.
        False when nothing changed."""
        if doc == self.doc:
            return False
        now = self.clock()
        merge = bool(edit) and self._last_edit[0] == edit and now - self._last_edit[1] < MERGE_SECONDS
        self._last_edit = (edit, now)
        self.history = self.history.push(doc, merge=merge)
        return True

    def replace(self, doc: D) -> None:
        """Change the present without an undo step (its name after a rename, the model that wrote it)."""
        self.history = self.history.replace(doc)

    def load(self, doc_id: str | None, doc: D) -> None:
        """Show `doc` (saved as `doc_id`, or new when None), with a fresh undo history."""
        self.doc_id = doc_id
        self.history = History(doc)
        self.saved_doc = doc if doc_id is not None else None
        self._last_edit = ("", 0.0)

    def undo(self) -> bool:
        return self._travel(self.history.undo())

    def redo(self) -> bool:
        return self._travel(self.history.redo())

    def _travel(self, history: History[D]) -> bool:
        if history is self.history:
            return False
        self.history = history
        self._last_edit = ("", 0.0)
        return True

    # --- saving ------------------------------------------------------------------------------

    def unsaved(self) -> bool:
        """Whether the document holds changes that are not on disk (a new empty one holds none)."""
        return self.doc != self.saved_doc and not (self.doc_id is None and self.empty(self.doc))

    def save(self) -> Saved:
        """Write the document if it changed; a new document with nothing in it is not written, and a
        disposable one (untitled) emptied again loses its file."""
        doc = self.doc
        if not self.unsaved():
            return Saved()
        if self.doc_id is not None and self.empty(doc) and self.disposable(doc):
            try:
                self.library.delete(self.doc_id)
            except (OSError, TalesmithError) as e:
                return Saved(error=str(e))
            self.doc_id, self.saved_doc = None, doc
            return Saved()
        if self.named_files and self.doc_id is not None and not _named_after(self.doc_id, doc.name):
            return self._move(doc)
        result = self.write(doc)
        if result.ok:
            self.saved_doc = doc
        return result

    def _move(self, doc: D) -> Saved:
        """Write `doc` under a new file named after it, then move its saved model state there and remove
        the old file: a crash in between leaves both files, never neither."""
        assert self.doc_id is not None
        old = self.library.path(self.doc_id)
        try:
            new_id = self.library.new_id(doc.name)
            replaced = self.library.save(new_id, doc)
        except (OSError, TalesmithError) as e:
            return Saved(error=str(e))
        self.doc_id, self.saved_doc = new_id, doc
        new = self.library.path(new_id)
        try:
            for src, dst in (
                (files.state_path(old), files.state_path(new)),
                (files.state_meta_path(files.state_path(old)), files.state_meta_path(files.state_path(new))),
            ):
                if src.exists():
                    os.replace(src, dst)
            old.unlink(missing_ok=True)
        except OSError:
            pass  # the document is saved under its new name; the old file or its state is only left behind
        return Saved(replaced=replaced)

    def write(self, doc: D) -> Saved:
        """Write `doc` as this document's file (a new document gets its id), whatever the present is."""
        try:
            if self.doc_id is None:
                self.doc_id = self.library.new_id(doc.name)
            return Saved(replaced=self.library.save(self.doc_id, doc))
        except (OSError, TalesmithError) as e:
            return Saved(error=str(e))

    def read(self, doc_id: str) -> D:
        """The saved document `doc_id` of this session's library (a TalesmithError when it cannot be read)."""
        doc = self.library.load(doc_id)
        if not isinstance(doc, type(self.blank)):
            raise TalesmithError(f"{self.library.path(doc_id)} is not a {self.library.kind}")
        return doc

    def reread(self) -> str:
        """After the library was changed from outside: 'deleted' when the open document's file is gone (the
        session then holds a blank document, nothing to write), 'renamed' when its name changed there (taken
        as saved, without an undo step), '' otherwise."""
        if self.doc_id is None:
            return ""
        if not self.library.path(self.doc_id).exists():
            self.mark_saved()  # deleted on purpose: not to be written again
            self.load(None, self.blank)
            return "deleted"
        try:
            name = self.read(self.doc_id).name
        except TalesmithError:
            return ""
        if name == self.doc.name:
            return ""
        self.replace(dataclasses.replace(self.doc, name=name))
        self.mark_saved()
        return "renamed"

    def export(self, path: Path, user: User) -> str:
        """Write the document somewhere else (.json whole, .txt/.md as text), its changes then safe there;
        what could not be written ('' when it was)."""
        try:
            if path.suffix.lower() == ".json":
                atomic_write(path, dumps(self.doc))
            else:
                export(self.doc, path, user=user)
        except (OSError, TalesmithError) as e:
            return str(e)
        self.mark_saved()
        return ""

    def mark_saved(self) -> None:
        """The present is safe (exported elsewhere, or deleted on purpose): nothing left to write."""
        self.saved_doc = self.doc

    # --- generation --------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, base: Any) -> Job:
        """A new generation placed at `base`; its text is checkpointed from now on."""
        self.job = Job(base)
        self._checkpointed = self.clock()
        return self.job

    def streamed(self, job: Job, text: str) -> bool:
        """Add a chunk to `job`; False when the job is no longer the running one (stopped, replaced)."""
        if job is not self.job or job.done:
            return False
        job.parts.append(text)
        return True

    def checkpoint_due(self) -> bool:
        """Whether the streamed text should be written now (at most every CHECKPOINT_SECONDS)."""
        now = self.clock()
        if self.job is None or now - self._checkpointed < CHECKPOINT_SECONDS:
            return False
        self._checkpointed = now
        return True

    def end(self, job: Job) -> None:
        """The generation is over (finished or stopped); later chunks of it are ignored."""
        job.done = True
        if job is self.job:
            self.job = None


def _named_after(doc_id: str, name: str) -> bool:
    """Whether a file id made by `Library.new_id` (`DATE-TIME-slug`, `-N` on a clash) was made from `name`;
    True for ids of any other shape, which are left as they are."""
    made = re.fullmatch(r"\d{8}-\d{6}-(.+)", doc_id)
    if made is None:
        return True
    stem, want = made.group(1), slug(name)
    return stem == want or re.fullmatch(re.escape(want) + r"-\d+", stem) is not None
