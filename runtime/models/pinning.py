"""Adding models to models.lock and pinning hub revisions to commits: `models add` and `models lock`.

A hub entry records the commit its branch or tag pointed at and the files chosen at that commit,
with the sha256 the hub reports for files kept in Git LFS. Local files and folders are hashed here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError, ModelError
from talesmith.runtime.models import hub, integrity
from talesmith.runtime.models.lockfile import FORMATS, UNRESOLVED, check_name
from talesmith.runtime.models.resolve import lock_path, model_entry, read_lock, record_model

Lockish = str | os.PathLike[str] | None
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_QUANT = re.compile(r"(?i)(?<![A-Za-z0-9])(IQ\d_[A-Z0-9_]+?|Q\d_K_[SML]|Q\d_K|Q\d_\d|BF16|F16|F32)(?![A-Za-z0-9])")
_HF_META = (".json", ".txt", ".model", ".tiktoken")


def add(
    name: str,
    source: str,
    *,
    revision: str | None = None,
    include: Iterable[str] = (),
    fmt: str | None = None,
    prompt_format: str | None = None,
    preset: str | None = None,
    quantization: str | None = None,
    architecture: str | None = None,
    lock: Lockish = None,
) -> tuple[dict[str, Any], str | None]:
    """Add model `name` from a local file or folder or a hub repo id; returns the entry and a note
    (why a hub revision was left unresolved) or None."""
    check_name(name)
    lp = lock_path(lock)
    if name in read_lock(lp):
        raise ModelError(
            f"{name!r} is already in {lp}; remove it first with `talesmith models remove {name}` or choose another name"
        )
    _check_choices(fmt, prompt_format, preset)
    include = list(include)
    p = Path(source).expanduser()
    note = None
    if p.exists():
        if revision:
            raise InputError(f"--revision {revision} applies to hub repos, and {source} is a local path")
        entry = _local_entry(p, lp, fmt=fmt, include=include)
    elif source.startswith((".", "/", "~")) or p.suffix.lower() in (".gguf", ".onnx") or not _REPO_ID.match(source):
        raise InputError(f"{source} is neither an existing file or folder nor a hub repo id like owner/name")
    else:
        entry, note = _hub_entry(source, revision or "main", fmt=fmt, include=include)
    for key, value in (
        ("architecture", architecture),
        ("quantization", quantization),
        ("prompt_format", prompt_format),
        ("preset", preset),
    ):
        if value is not None:
            entry[key] = value
    entry = _ordered(entry)
    record_model(name, entry, lock=lp)
    return entry, note


def _check_choices(fmt: str | None, prompt_format: str | None, preset: str | None) -> None:
    from talesmith.runtime.documents.formats import FORMATS as PROMPT_FORMATS
    from talesmith.runtime.settings import PRESETS

    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
    if prompt_format is not None and prompt_format not in PROMPT_FORMATS:
        raise InputError(f"--prompt-format {prompt_format!r} must be one of {', '.join(PROMPT_FORMATS)}")
    if preset is not None and preset not in PRESETS:
        raise InputError(f"--preset {preset!r} must be one of {', '.join(PRESETS)}")


_ORDER = (
    "format",
    "architecture",
    "quantization",
    "prompt_format",
    "format_fields",
    "preset",
    "path",
    "source",
    "include",
    "tokenizer",
    "files",
    "adapters",
)


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in _ORDER if k in entry] + [k for k in entry if k not in _ORDER]
    return {k: entry[k] for k in keys}


def _local_entry(p: Path, lock: Path, *, fmt: str | None, include: list[str]) -> dict[str, Any]:
    if p.is_dir():
        names = sorted(
            q.relative_to(p).as_posix()
            for q in p.rglob("*")
            if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)
        )
        if include:
            names = [n for n in names if any(fnmatch(n, pat) for pat in include)]
        if not names:
            raise InputError(f"{p} holds no files{' matching ' + ', '.join(include) if include else ''}")
        fmt = fmt or _format_of(names) or _no_format(p)
        paths = {n: p / n for n in names}
    else:
        fmt = fmt or {".gguf": "gguf", ".onnx": "onnx"}.get(p.suffix.lower()) or _no_format(p)
        paths = {p.name: p}
    files = [{"name": n, "sha256": integrity.rehash(q), "size": q.stat().st_size} for n, q in paths.items()]
    entry: dict[str, Any] = {"format": fmt, "path": _relative_to(p, lock.parent), "files": files}
    ggufs = [q for q in paths.values() if q.suffix.lower() == ".gguf"]
    if fmt == "gguf" and ggufs:
        entry.update(_gguf_facts(ggufs[0]))
    return entry


def _no_format(p: Path) -> str:
    raise InputError(f"cannot tell whether {p} is an hf, gguf or onnx model; pass --format")


def _relative_to(p: Path, folder: Path) -> str:
    p = p.resolve()
    try:
        return p.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(p)


def _gguf_facts(path: Path) -> dict[str, str]:
    from talesmith.runtime.models.gguf_header import read_info

    info = read_info(path)
    facts = {"architecture": info.architecture}
    ftype = info.metadata.get("general.file_type")
    if isinstance(ftype, int):
        try:
            from gguf import LlamaFileType

            facts["quantization"] = LlamaFileType(ftype).name.removeprefix("MOSTLY_")
        except (ImportError, ValueError):
            pass
    return facts


def _format_of(names: list[str]) -> str | None:
    top = [n for n in names if "/" not in n]
    if "config.json" in top and any(n.endswith((".safetensors", ".bin")) for n in top):
        return "hf"
    if any(n.endswith(".gguf") for n in names):
        return "gguf"
    if any(n.endswith(".onnx") for n in names):
        return "onnx"
    return None


def _hub_entry(repo: str, revision: str, *, fmt: str | None, include: list[str]) -> tuple[dict[str, Any], str | None]:
    source = {"hub": repo, "revision": revision, "commit": UNRESOLVED}
    entry: dict[str, Any] = {"source": source}
    if include:
        entry["include"] = include
    try:
        remote = hub.remote_revision(repo, revision)
    except hub.HubUnreachable as e:
        if fmt is None:
            raise InputError(
                f"pass --format ({', '.join(FORMATS)}) for {repo}: the hub cannot be asked ({e})"
            ) from None
        return {"format": fmt, **entry}, str(e)
    fmt = fmt or _format_of([f.name for f in remote.files])
    if fmt is None:
        raise InputError(f"cannot tell whether {repo} is an hf, gguf or onnx model; pass --format")
    entry["format"] = fmt
    _apply_remote(entry, remote)
    return entry, None


def _select(remote: hub.RemoteRevision, fmt: str, include: list[str]) -> list[hub.RemoteFile]:
    files = list(remote.files)
    where = f"{remote.repo} at {remote.revision}"
    if include:
        chosen = [f for f in files if any(fnmatch(f.name, pat) for pat in include)]
        if not chosen:
            raise ModelError(f"no file of {where} matches {', '.join(include)}; change the --file patterns")
        return chosen
    top = [f for f in files if "/" not in f.name]
    if fmt == "gguf":
        ggufs = [f for f in files if f.name.endswith(".gguf")]
        if len(ggufs) != 1:
            names = ", ".join(f.name for f in ggufs[:6]) + (", ..." if len(ggufs) > 6 else "")
            raise ModelError(f"{where} has {len(ggufs)} GGUF files ({names or 'none'}); choose with --file PATTERN")
        return ggufs
    if fmt == "onnx":
        return [f for f in top if f.name.endswith((".onnx", ".onnx_data", *_HF_META))]
    weights = [f for f in top if f.name.endswith(".safetensors") or f.name == "model.safetensors.index.json"]
    if not weights:
        weights = [
            f for f in top if re.match(r"pytorch_model.*\.bin$", f.name) or f.name == "pytorch_model.bin.index.json"
        ]
    meta = [f for f in top if f.name.endswith(_HF_META) and f not in weights]
    return sorted(meta + weights, key=lambda f: f.name)


def _apply_remote(entry: dict[str, Any], remote: hub.RemoteRevision) -> None:
    """Pin `entry` to the commit in `remote`, choosing and describing its files."""
    old = {f["name"]: f for f in entry.get("files", [])}
    same_commit = entry["source"].get("commit") == remote.commit
    by_name = {f.name: f for f in remote.files}
    if old and not entry.get("include") and all(n in by_name for n in old):
        chosen = [by_name[n] for n in old]
    else:
        chosen = _select(remote, entry["format"], entry.get("include", []))
    files = []
    for f in chosen:
        record: dict[str, Any] = {"name": f.name}
        digest = f.sha256 or (old[f.name].get("sha256") if same_commit and f.name in old else None)
        if digest:
            record["sha256"] = digest
        record["size"] = f.size
        files.append(record)
    entry["source"] = {**entry["source"], "revision": remote.revision, "commit": remote.commit}
    entry["files"] = files
    if entry["format"] == "gguf" and "quantization" not in entry:
        quant = _QUANT.search(files[0]["name"])
        if quant:
            entry["quantization"] = quant.group(1).upper()


def lock_model(name: str, *, revision: str | None = None, lock: Lockish = None) -> tuple[dict[str, Any], str]:
    """Resolve the entry's branch or tag (or `revision`) to the commit it points at now and pin it
    there with its files; returns the new entry and the previous commit (or "unresolved")."""
    lp, current = model_entry(name, lock)
    source = current.source
    if source is None or source.hub is None:
        raise ModelError(f"model {name!r} does not come from the hub, so it has no revision to lock")
    remote = hub.remote_revision(source.hub, revision or source.revision or "main")
    entry = dict(current.table)
    _apply_remote(entry, remote)
    tokenizer = entry.get("tokenizer")
    if isinstance(tokenizer, dict) and "hub" in tokenizer:
        tok = hub.remote_revision(tokenizer["hub"], tokenizer.get("revision") or "main")
        entry["tokenizer"] = {**tokenizer, "revision": tok.revision, "commit": tok.commit}
    record_model(name, entry, lock=lp)
    return entry, source.commit
