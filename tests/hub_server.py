"""A small HTTP server on 127.0.0.1 that answers the way the Hugging Face hub does, for the requests
huggingface-hub makes: file resolve URLs (HEAD and GET, with X-Repo-Commit, ETag / X-Linked-Etag,
X-Linked-Size, Content-Length and Range) and the repo-revision API used to resolve commits.

Tests point HF_ENDPOINT at it, so the real huggingface-hub download and resume code runs. Switches
make it cut a download short, serve altered bytes, or demand a token, and every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    commit: str = ""
    branches: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    """When set, the repo is gated: requests need `Authorization: Bearer TOKEN`."""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(self.repo_id.encode() + b"".join(sorted(self.files.values()))).hexdigest()
        self.branches.setdefault("main", self.commit)

    def sibling(self, name: str) -> dict:
        data = self.files[name]
        entry = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
        if name in self.lfs:
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[Request] = []
        self.cut: dict[str, int] = {}
        """filename -> bytes sent before the next GET of that file is cut off."""
        self.altered: dict[str, bytes] = {}
        """filename -> bytes served instead of the real ones (headers still describe the real file)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.repo_id] = repo
        return repo

    def gets(self, filename: str) -> list[Request]:
        return [r for r in self.log if r.method == "GET" and r.path.endswith("/" + filename)]

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _split(path: str, marker: str) -> tuple[str, str, str] | None:
    """'/owner/name/resolve/main/a/b.txt' -> ('owner/name', 'main', 'a/b.txt')."""
    if marker not in path:
        return None
    repo, rest = path.lstrip("/").split(marker, 1)
    revision, _, filename = rest.partition("/")
    return repo, unquote(revision), filename


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _error(self, status: int, code: str, commit: str | None = None) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, body: bool) -> None:
            path = urlsplit(self.path).path
            hub.log.append(Request(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
            api = _split(path.removeprefix("/api/models"), "/revision/") if path.startswith("/api/models/") else None
            target = api or _split(path, "/resolve/")
            if target is None:
                return self._error(404, "RepoNotFound")
            repo = hub.repos.get(target[0])
            if repo is None:
                return self._error(401, "RepoNotFound")
            if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                return self._error(401, "GatedRepo")
            revision = target[1]
            commit = repo.branches.get(revision) or (revision if revision == repo.commit else None)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            if api:
                return self._json(
                    {
                        "id": repo.repo_id,
                        "sha": commit,
                        "private": False,
                        "siblings": [repo.sibling(n) for n in sorted(repo.files)],
                    }
                )
            return self._file(repo, commit, target[2], body)

        def _json(self, data: dict) -> None:
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _file(self, repo: Repo, commit: str, name: str, body: bool) -> None:
            if name not in repo.files:
                return self._error(404, "EntryNotFound", commit)
            real = repo.files[name]
            data = hub.altered.get(name, real) if body else real
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes=") : -1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            if name in repo.lfs:
                digest = hashlib.sha256(real).hexdigest()
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(real)))
                self.send_header("ETag", f'"{digest}"')
            else:
                self.send_header("ETag", f'"{git_blob_sha1(real)}"')
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            part = data[start:]
            cut = hub.cut.pop(name, None) if self.command == "GET" else None
            if cut is not None:
                self.wfile.write(part[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler
