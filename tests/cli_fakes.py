"""The `talesmith` command run in the test's own process, on a scripted model or the real one.

`run_cli` calls the command's entry point as the console script does (argv in, exit status and the two
streams out), so its errors go through the same one-line printer. `scripted_model` puts a ScriptedBackend
in place of llama.cpp through the library's opener registry (talesmith.runtime.engine.loading.OPENERS).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fakes import ScriptedBackend

from talesmith.cli.main import main
from talesmith.runtime.engine import loading


@pytest.fixture
def run_cli(monkeypatch, capsys):
    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()  # what came before is not this command's
        monkeypatch.setattr(sys, "argv", ["talesmith", *map(str, args)])
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["talesmith", *map(str, args)], code, out.out, out.err)

    return run


@pytest.fixture
def scripted_model(monkeypatch, tmp_path):
    """A model file whose "model" writes " Once upon a time." (one byte per token); its path."""
    backend = ScriptedBackend(" Once upon a time.", n_ctx=512)

    def open_scripted(path, **options) -> ScriptedBackend:
        return backend

    monkeypatch.setitem(loading.OPENERS, "llama", open_scripted)
    path = tmp_path / "scripted.gguf"
    path.write_bytes(b"not read: the scripted backend stands in for llama.cpp")
    return path
