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
_QUANT = re.compile(
    r"(?i)(?<![A-Za-z0-9])(IQ\d_[A-Z0-9_]+?|Q\d_K_(?:XL|[SML])|Q\d_K|T?Q\d_\d|MXFP4|BF16|F16|F32)(?![A-Za-z0-9])"
)
_HF_META = (".json", ".txt", ".model", ".tiktoken")


def add(
    name: str | None,
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
    (why a hub revision was left unresolved) or None.

    A hub source may name a quantization, `owner/repo:Q4_K_M`, as llama.cpp's `-hf` does: the repo's GGUF
    file of that quantization (all parts of a split one) is chosen. Without `name`, the model is named
    after the repo and the quantization (`owner/tiny-GGUF:Q4_K_M` -> `tiny-Q4_K_M`)."""
    p = Path(source).expanduser()
    local = p.exists()
    repo, quant = (source, None) if local else split_tag(source)
    name = name if name is not None else name_for(source)
    check_name(name)
    lp = lock_path(lock)
    if name in read_lock(lp):
        raise ModelError(
            f"{name!r} is already in {lp}; remove it first with `talesmith models remove {name}` or choose another name"
        )
    _check_choices(fmt, prompt_format, preset)
    include = list(include)
    note = None
    if local:
        if revision:
            raise InputError(f"--revision {revision} applies to hub repos, and {source} is a local path")
        entry = _local_entry(p, lp, fmt=fmt, include=include)
    elif (
        repo.startswith((".", "/", "~")) or Path(repo).suffix.lower() in (".gguf", ".onnx") or not _REPO_ID.match(repo)
    ):
        raise InputError(f"{source} is neither an existing file or folder nor a hub repo id like owner/name")
    else:
        if quant is not None and include:
            raise InputError(f"{source} names a quantization and --file names files; give one of them")
        if quant is not None and fmt not in (None, "gguf"):
            raise InputError(f"{source} names a GGUF quantization, so --format {fmt} does not apply")
        entry, note = _hub_entry(repo, revision or "main", fmt="gguf" if quant else fmt, include=include, quant=quant)
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


_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_tag(source: str) -> tuple[str, str | None]:
    """`owner/repo:QUANT` -> ("owner/repo", "QUANT"); a source without a tag -> (source, None)."""
    repo, colon, tag = source.rpartition(":")
    if not colon or "/" in tag:
        return source, None
    if not _TAG.match(tag):
        raise InputError(f"{source}: {tag!r} is not a quantization; write owner/repo:QUANT, e.g. owner/repo:Q4_K_M")
    return repo, tag.upper()


def name_for(source: str) -> str:
    """The name `models add` gives a hub GGUF named by quantization when it is given none:
    `owner/tiny-GGUF:Q4_K_M` -> `tiny-Q4_K_M`. Any other source needs a name."""
    if Path(source).expanduser().exists():
        raise InputError(f"name the model: talesmith models add NAME {source}")
    repo, quant = split_tag(source)
    if quant is None:
        raise InputError(
            f"name the model: talesmith models add NAME {source} (or give its quantization: {source}:Q4_K_M)"
        )
    base = re.sub(r"(?i)[-_.]gguf$", "", repo.rsplit("/", 1)[-1]) or repo.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{base}-{quant}").lstrip("._-") or quant


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


def _hub_entry(
    repo: str, revision: str, *, fmt: str | None, include: list[str], quant: str | None = None
) -> tuple[dict[str, Any], str | None]:
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
        if quant is not None:  # remembered, so that `models lock` picks this quantization later
            entry["quantization"] = quant
        return {"format": fmt, **entry}, str(e)
    fmt = fmt or _format_of([f.name for f in remote.files])
    if fmt is None:
        raise InputError(f"cannot tell whether {repo} is an hf, gguf or onnx model; pass --format")
    entry["format"] = fmt
    _apply_remote(entry, remote, quant=quant)
    return entry, None


def _select(
    remote: hub.RemoteRevision, fmt: str, include: list[str], *, quant: str | None = None, prefer: str | None = None
) -> list[hub.RemoteFile]:
    """The files an entry pins: those matching `include`, else for GGUF the file of quantization `quant`
    (asked for) or, among several, of `prefer` (the entry's own); else the model's files by format."""
    files = list(remote.files)
    where = f"{remote.repo} at {remote.revision}"
    if include:
        chosen = [f for f in files if any(fnmatch(f.name, pat) for pat in include)]
        if not chosen:
            raise ModelError(f"no file of {where} matches {', '.join(include)}; change the --file patterns")
        return chosen
    top = [f for f in files if "/" not in f.name]
    if fmt == "gguf":
        ggufs = [f for f in files if f.name.lower().endswith(".gguf") and not _is_projector(f.name)]
        several = len(_split_sets(ggufs)) > 1
        if quant is not None or (several and prefer is not None):
            return _by_quant(where, remote.repo, ggufs, quant or str(prefer))
        if several or not ggufs:
            names = ", ".join(f.name for f in ggufs[:6]) + (", ..." if len(ggufs) > 6 else "")
            quants = sorted({q for f in ggufs if (q := quant_of(f.name))})
            example = "Q4_K_M" if "Q4_K_M" in quants else quants[0] if quants else ""
            choice = f" or {remote.repo}:{example} (quantizations here: {', '.join(quants)})" if quants else ""
            raise ModelError(
                f"{where} has {len(ggufs)} GGUF files ({names or 'none'}); choose with --file PATTERN{choice}"
            )
        return sorted(ggufs, key=lambda f: f.name)
    if fmt == "onnx":
        return [f for f in top if f.name.endswith((".onnx", ".onnx_data", *_HF_META))]
    weights = [f for f in top if f.name.endswith(".safetensors") or f.name == "model.safetensors.index.json"]
    if not weights:
        weights = [
            f for f in top if re.match(r"pytorch_model.*\.bin$", f.name) or f.name == "pytorch_model.bin.index.json"
        ]
    meta = [f for f in top if f.name.endswith(_HF_META) and f not in weights]
    return sorted(meta + weights, key=lambda f: f.name)


_SPLIT = re.compile(r"(?i)-(\d{5})-of-(\d{5})\.gguf$")


def quant_of(filename: str) -> str | None:
    """The quantization a GGUF file name states (`tiny-q4_k_m.gguf` -> Q4_K_M), as the hub reads it."""
    found = _QUANT.search(filename.rsplit("/", 1)[-1]) or _QUANT.search(filename)
    return found.group(1).upper() if found else None


def _is_projector(filename: str) -> bool:
    """A multimodal projector (mmproj-*.gguf) beside the model: never the model itself."""
    return "mmproj" in filename.rsplit("/", 1)[-1].lower()


def _split_sets(files: list[hub.RemoteFile]) -> dict[str, list[hub.RemoteFile]]:
    """The files grouped by model: the parts of a split GGUF (`-00001-of-00003.gguf`) form one group."""
    sets: dict[str, list[hub.RemoteFile]] = {}
    for f in files:
        sets.setdefault(_SPLIT.sub("", f.name), []).append(f)
    return sets


def _by_quant(where: str, repo: str, ggufs: list[hub.RemoteFile], quant: str) -> list[hub.RemoteFile]:
    """The GGUF of quantization `quant` (all its parts when split), as `-hf owner/repo:QUANT` picks it in
    llama.cpp: the exact quantization, else the one family member `quant` names (Q4 -> Q4_K_M when
    several Q4 files are there, as llama.cpp prefers Q4_K_M)."""
    quants = sorted({q for f in ggufs if (q := quant_of(f.name))})
    chosen = [f for f in ggufs if quant_of(f.name) == quant]
    if not chosen:
        family = sorted({q for q in quants if q.startswith(quant + "_")})
        preferred = [q for q in (f"{quant}_K_M", f"{quant}_M") if q in family]  # Q4 -> Q4_K_M, Q4_K -> Q4_K_M
        pick = family[0] if len(family) == 1 else preferred[0] if preferred else None
        chosen = [f for f in ggufs if pick is not None and quant_of(f.name) == pick]
    if not chosen:
        here = f"quantizations here: {', '.join(quants)}" if quants else "no GGUF file names a quantization"
        raise ModelError(f"{where} has no {quant} GGUF file ({here}); choose one with {repo}:QUANT or --file NAME")
    sets = _split_sets(chosen)
    if len(sets) > 1:
        names = ", ".join(sorted(sets))
        raise ModelError(f"{where} has {len(sets)} {quant} GGUF models ({names}); choose one with --file NAME")
    return sorted(chosen, key=lambda f: f.name)


def _apply_remote(entry: dict[str, Any], remote: hub.RemoteRevision, *, quant: str | None = None) -> None:
    """Pin `entry` to the commit in `remote`, choosing and describing its files (for GGUF, those of
    quantization `quant` when it is given)."""
    old = {f["name"]: f for f in entry.get("files", [])}
    same_commit = entry["source"].get("commit") == remote.commit
    by_name = {f.name: f for f in remote.files}
    if old and not entry.get("include") and all(n in by_name for n in old):
        chosen = [by_name[n] for n in old]
    else:
        prefer = entry.get("quantization") if entry["format"] == "gguf" else None
        chosen = _select(remote, entry["format"], entry.get("include", []), quant=quant, prefer=prefer)
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
    stated = quant_of(files[0]["name"]) if entry["format"] == "gguf" and files else None
    if stated and ("quantization" not in entry or quant is not None):
        entry["quantization"] = stated


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
