"""The Hugging Face hub, through huggingface-hub: a revision's commit and files, one file downloaded
at a commit into huggingface-hub's own cache (resumed where an earlier try stopped), and where a
cached file lies.

The hub's address, offline mode and cache folder are read from the environment when each function
runs (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE, HF_HOME). A token comes from huggingface-hub's
own login (`hf auth login` or HF_TOKEN); talesmith never reads, returns or stores it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from talesmith.runtime.errors import HubError, HubUnreachable

_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None
    """The sha256 the hub reports for files stored with Git LFS; None for small files kept in git."""


@dataclass(frozen=True)
class RemoteRevision:
    repo: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to a true value: use the local cache only."""
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").lower() in _TRUE


def cache_dir() -> Path:
    """huggingface-hub's cache folder, as its own settings give it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    """The folder of one model repo inside the cache (blobs, snapshots, refs)."""
    return cache_dir() / ("models--" + repo.replace("/", "--"))


def snapshot_dir(repo: str, commit: str) -> Path:
    return repo_folder(repo) / "snapshots" / commit


def locks_folder(repo: str) -> Path:
    """Where huggingface-hub keeps its per-download lock files for this repo."""
    return cache_dir() / ".locks" / ("models--" + repo.replace("/", "--"))


def _reason(e: BaseException) -> str:
    """A short cause: the operating system's words when there are some, else the exception's first words."""
    text = " ".join(str(e).split())
    errno = re.search(r"\[Errno -?\d+\] ([^)\]'\"]+)", text)
    if errno:
        return errno.group(1).strip().rstrip(".")
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    text = re.sub(r"[\[\]]", "", text) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


@contextmanager
def translated_errors(
    repo: str, revision: str, *, filename: str | None = None, retry: str = "", missing: str = ""
) -> Iterator[None]:
    """Turn huggingface-hub's and requests' exceptions into one-line HubErrors (every hub call goes through this).

    `retry` is appended to the messages of errors that a later try may not meet (a network that is down);
    `missing`, when given, is the message for a repository that does not exist.
    """
    import requests
    from huggingface_hub import errors

    what = f"{filename} of {repo}" if filename else repo
    login = "log in with `hf auth login` or set HF_TOKEN"
    try:
        yield
    except errors.GatedRepoError:
        raise HubError(f"{repo} is gated: accept its terms at {endpoint()}/{repo}, then {login}") from None
    except errors.RepositoryNotFoundError:
        if missing:
            raise HubError(missing) from None
        raise HubError(
            f"hub repo {repo!r} does not exist, or it is private and needs a token (check the name, or {login})"
        ) from None
    except errors.RevisionNotFoundError:
        raise HubError(
            f"revision {revision!r} is not in {repo}; pass an existing branch, tag or commit with --revision"
        ) from None
    except errors.LocalEntryNotFoundError as e:
        if is_offline():
            raise HubUnreachable(
                f"{what} at {revision[:12]} is not in the local cache and HF_HUB_OFFLINE is set; "
                f"unset HF_HUB_OFFLINE to download it"
            ) from None
        cause = e.__cause__ or e
        raise HubUnreachable(
            f"cannot reach the hub at {endpoint()} for {what} ({_reason(cause)}); check the network{retry}"
        ) from None
    except errors.EntryNotFoundError:
        raise HubError(
            f"{filename} is not in {repo} at {revision[:12]}; correct the file list in models.lock"
        ) from None
    except errors.OfflineModeIsEnabled:
        raise HubUnreachable(
            f"HF_HUB_OFFLINE is set, so {what} cannot be fetched; unset it where the hub is reachable"
        ) from None
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "an error"
        raise HubError(f"the hub answered {status} for {what}; try again later{retry}") from None
    except requests.exceptions.ChunkedEncodingError:
        raise HubError(f"the connection broke while downloading {what}{retry}") from None
    except requests.ConnectionError as e:
        raise HubUnreachable(
            f"cannot reach the hub at {endpoint()} for {what} ({_reason(e)}); check the network{retry}"
        ) from None
    except (requests.RequestException, OSError) as e:
        raise HubError(f"downloading {what} failed ({_reason(e)}){retry}") from None


def remote_revision(repo: str, revision: str) -> RemoteRevision:
    """The commit a branch, tag or commit of `repo` points at now, and that commit's files."""
    if is_offline():
        raise HubUnreachable(
            f"cannot resolve revision {revision!r} of {repo}: HF_HUB_OFFLINE is set; "
            f"unset it where the hub is reachable"
        )
    from huggingface_hub import HfApi

    with translated_errors(repo, revision):
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True)
    if not info.sha:
        raise HubError(f"the hub at {endpoint()} gave no commit for {repo} at {revision!r}")
    files = tuple(
        RemoteFile(s.rfilename, int(s.lfs.size if s.lfs else s.size or 0), s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or ()
    )
    return RemoteRevision(repo, revision, info.sha, files)


def download(repo: str, commit: str, filename: str, *, force: bool = False, retry: str = "") -> Path:
    """One file of `repo` at `commit`, from the cache or downloaded into it (resuming a partial download)."""
    from huggingface_hub import hf_hub_download

    if force and is_offline():
        raise HubUnreachable(
            f"downloading {filename} of {repo} again needs the hub, and HF_HUB_OFFLINE is set; unset it or drop --force"
        )
    with translated_errors(repo, commit, filename=filename, retry=retry):
        path = hf_hub_download(
            repo,
            filename,
            revision=commit,
            cache_dir=cache_dir(),
            endpoint=endpoint(),
            local_files_only=is_offline(),
            force_download=force,
        )
    return Path(path)
