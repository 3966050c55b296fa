import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def isolated_lock(tmp_path, monkeypatch):
    """Tests never read or write the user's models.lock: each gets the repository's own copy."""
    repo_lock = Path(__file__).parent.parent / "models.lock"
    lock = tmp_path / "models.lock"
    if repo_lock.exists():
        lock.write_text(repo_lock.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("TALESMITH_LOCK", str(lock))
    return lock


@pytest.fixture(scope="session")
def bundled_path():
    from talesmith.runtime.models.resolve import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def llama(bundled_path):
    """The bundled default model, loaded once for all end-to-end tests."""
    from talesmith.runtime.engine.llama import LlamaCppBackend

    backend = LlamaCppBackend(bundled_path, n_ctx=2048)
    yield backend
    backend.close()


def golden(name: str, text: str) -> None:
    """Compare `text` with tests/golden/NAME exactly; TALESMITH_UPDATE_GOLDEN=1 rewrites the file."""
    path = GOLDEN / name
    if os.environ.get("TALESMITH_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text
