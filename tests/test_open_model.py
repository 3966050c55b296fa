"""One way to open a model for the CLI, batch and the app; what the backend protocol lets callers ask."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fakes import ScriptedBackend
from tui_fakes import StateBackend, TakesBackend

from talesmith.runtime.engine import kvstate, loading
from talesmith.runtime.engine.protocol import CacheShifter, ModelMetadata, StatefulBackend
from talesmith.runtime.errors import ModelError
from talesmith.runtime.files import sha256_file
from talesmith.runtime.models.resolve import ModelRef


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """llama.cpp replaced by a scripted backend naming prompt format "chatml" and preset "lit-6b"."""
    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "cache"))
    backend = ScriptedBackend(" x", meta=ModelMetadata(prompt_format="chatml", preset="lit-6b"))
    backend.warnings.append(
        "--ctx 9000 is beyond the 2048 tokens this model was trained on; expect worse text past 2048"
    )
    opened = []
    monkeypatch.setitem(loading.OPENERS, "llama", lambda path, **options: opened.append((path, options)) or backend)
    return backend, opened


def lock_with(tmp_path: Path, path: Path, sha256: str, extra: str = "") -> Path:
    lock = tmp_path / "models.lock"
    lock.write_text(
        f'version = 1\n\n[models.tiny]\nformat = "gguf"\npath = "{path.name}"\n{extra}files = [\n'
        f'  {{ name = "{path.name}", sha256 = "{sha256}", size = {path.stat().st_size} }},\n]\n',
        encoding="utf-8",
    )
    return lock


def test_open_model_gives_the_lock_note_the_backend_note_and_the_models_metadata(tmp_path, scripted):
    backend, opened = scripted
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"changed since it was pinned")
    lock = lock_with(tmp_path, path, "0" * 64)
    model = loading.open_model("tiny", lock=lock, n_ctx=9000, threads=2)
    assert model.backend is backend
    assert opened == [(path, {"device": "cpu", "n_ctx": 9000, "gpu_layers": 0, "threads": 2, "spin": True})]
    assert model.notes == (
        f"tiny.gguf of model 'tiny' no longer matches {lock} (sha256 {sha256_file(path)[:12]}..., pinned "
        f"000000000000...); running it anyway: restore it, or re-add the model with `talesmith models add` to pin "
        f"the new file",
        "--ctx 9000 is beyond the 2048 tokens this model was trained on; expect worse text past 2048",
    )
    assert (model.ref.name, model.ref.path, model.ref.prompt_format, model.ref.preset) == (
        "tiny",
        path,
        "chatml",
        "lit-6b",
    )


def test_what_the_lock_says_wins_over_the_models_own_metadata(tmp_path, scripted):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"pinned")
    lock = lock_with(tmp_path, path, sha256_file(path), extra='prompt_format = "story"\npreset = "default"\n')
    model = loading.open_model("tiny", lock=lock)
    assert (model.ref.prompt_format, model.ref.preset) == ("story", "default")
    assert model.notes == (
        "--ctx 9000 is beyond the 2048 tokens this model was trained on; expect worse text past 2048",
    )


def test_unknown_backend_and_device_are_refused_by_name(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"^--backend tpu is unknown; use llama or onnx$"):
        loading.open_backend(path, backend="tpu")
    with pytest.raises(ModelError, match=r"^--device tpu is unknown; use cpu or cuda$"):
        loading.open_backend(path, device="tpu")


def test_saved_state_is_asked_of_backends_that_say_they_keep_it(tmp_path):
    stateful, plain = StateBackend([" x"]), ScriptedBackend(" x")
    assert isinstance(stateful, StatefulBackend) and not isinstance(plain, StatefulBackend)
    assert not isinstance(plain, CacheShifter)
    for backend in (stateful, plain):
        backend.prefill([1, 2, 3])
    assert kvstate.save(plain, tmp_path / "plain.json") is False and not (tmp_path / "plain.kv").exists()
    assert kvstate.save(stateful, tmp_path / "doc.json") is True
    assert (tmp_path / "doc.kv").read_bytes() == b"k" * 1024 * 3
    assert kvstate.restore(plain, tmp_path / "doc.json", [1, 2, 3]) == 0
    assert kvstate.reprocess_count(plain, [1, 2, 3, 4]) == 1


@pytest.mark.asyncio
async def test_the_app_takes_the_opened_models_notes_and_preset_and_measures_off_the_ui_thread(tmp_path):
    from test_tui import settle
    from tui_fakes import RecordingApp, measured

    from talesmith.tui.app import AppConfig

    class Recording(TakesBackend):
        threads: list[threading.Thread] = []
        """The threads that tokenized."""

        def tokenize(self, text, *, add_bos=True, special=False):
            self.threads.append(threading.current_thread())
            return super().tokenize(text, add_bos=add_bos, special=special)

    backend = Recording([" x"], n_ctx=512, meta=ModelMetadata(preset="lit-6b"))
    opened = loading.OpenedModel(ModelRef("tiny", tmp_path / "tiny.gguf"), backend, ("a note for the user",))
    app = RecordingApp(lambda: opened, AppConfig(data_dir=tmp_path / "data", model_name="tiny"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert [(n.message, n.severity) for n in app.notified] == [("a note for the user", "warning")]
        await pilot.press(*"Once")
        await measured(pilot)
        assert app.screen.preset == "lit-6b" and app.model.metadata == ModelMetadata(preset="lit-6b")
        assert backend.threads and threading.main_thread() not in backend.threads
