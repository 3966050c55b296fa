"""models.lock as a file (round trips, atomic writes, clear errors) and the local side of
`talesmith models`: record_model, file_entry, add, remove, verify, list, path."""

import hashlib
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest

from talesmith.runtime.errors import InputError, ModelError
from talesmith.runtime.models import lockfile
from talesmith.runtime.models.lockfile import LockError
from talesmith.runtime.models.manage import rows, verify
from talesmith.runtime.models.pinning import add
from talesmith.runtime.models.resolve import file_entry, record_model, remove_model, resolve

REPO_LOCK = Path(__file__).parent.parent / "models.lock"
CLI = [sys.executable, "-m", "talesmith.cli.main", "models"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "talesmith-cache"))
    monkeypatch.setenv("COLUMNS", "200")


def models_cli(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120)


def one_line_error(result, text):
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: {text}"]


@pytest.fixture
def tiny_gguf(tmp_path):
    import gguf

    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(15)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_repository_lock_round_trips_byte_for_byte():
    text = REPO_LOCK.read_text(encoding="utf-8")
    assert lockfile.dumps(lockfile.parse(text, REPO_LOCK)) == text


def test_every_kind_of_value_round_trips(tmp_path):
    entry = {
        "format": "gguf",
        "architecture": "phi2",
        "quantization": "Q4_K_M",
        "path": 'out/a "b"\\c\n\tä.gguf',
        "source": {"hub": "hakurei/lit-6B", "revision": "v1.0", "commit": "a" * 40},
        "format_fields": {"genre_style": "llama", "x.y": 1},
        "scale": 0.1,
        "big": 2**40,
        "flag": False,
        "adapters": [{"path": "/abs/lora", "scale": 1.0, "sha256": "b" * 64}, {"path": "/abs/two", "scale": -0.5}],
        "files": [{"name": "a.gguf", "sha256": "c" * 64, "size": 0}],
        "tags": ["x", "y\u0001"],
        "empty": {},
    }
    lock = lockfile.Lock(tmp_path / "models.lock", {"lit-6b.v2": entry, "plain": {"format": "hf", "path": "p"}})
    text = lockfile.dumps(lock)
    assert tomllib.loads(text) == {"version": 1, "models": lock.models}
    assert '[models."lit-6b.v2"]' in text
    assert lockfile.dumps(lockfile.parse(text, lock.path)) == text


def test_file_entry_names_hashes_and_sizes_a_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"talesmith")
    assert file_entry(path) == {"name": "x.bin", "sha256": hashlib.sha256(b"talesmith").hexdigest(), "size": 9}


def test_record_model_adds_and_replaces_one_entry_keeping_the_rest(isolated_lock, tiny_gguf):
    original = isolated_lock.read_text()
    entry = {
        "format": "gguf",
        "architecture": "phi2",
        "quantization": "Q4_K_M",
        "prompt_format": "story",
        "preset": "lit-6b",
        "path": Path("models/tiny.gguf"),
        "files": [file_entry(tiny_gguf)],
        "source": {"hub": "hakurei/lit-6B", "commit": "d" * 40},
        "adapters": [{"path": "/abs/lora", "scale": 1.0, "sha256": "e" * 64, "base_model": None}],
    }
    record_model("lit-6b-q4_k_m", entry)
    text = isolated_lock.read_text()
    assert text.startswith(original + "\n[models.lit-6b-q4_k_m]\n")
    saved = tomllib.loads(text)["models"]["lit-6b-q4_k_m"]
    assert saved["path"] == "models/tiny.gguf" and saved["adapters"] == [
        {"path": "/abs/lora", "scale": 1.0, "sha256": "e" * 64}
    ]
    assert resolve("lit-6b-q4_k_m").path == tiny_gguf
    record_model("lit-6b-q4_k_m", {**entry, "quantization": "Q8_0", "path": str(tiny_gguf)})
    replaced = isolated_lock.read_text()
    assert replaced.startswith(original) and replaced.count("[models.lit-6b-q4_k_m]") == 1
    assert tomllib.loads(replaced)["models"]["lit-6b-q4_k_m"]["quantization"] == "Q8_0"
    assert resolve("lit-6b-q4_k_m").path == tiny_gguf


def test_record_model_creates_a_missing_lock_with_the_header(tmp_path):
    lock = tmp_path / "new" / "models.lock"
    record_model("m", {"format": "onnx", "path": "/abs/model.onnx"}, lock=lock)
    assert (
        lock.read_text()
        == lockfile.DEFAULT_HEADER + 'version = 1\n\n[models.m]\nformat = "onnx"\npath = "/abs/model.onnx"\n'
    )


def test_a_failed_write_leaves_the_old_lock_whole(isolated_lock, monkeypatch):
    original = isolated_lock.read_text()

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        record_model("m", {"format": "onnx", "path": "m.onnx"})
    assert isolated_lock.read_text() == original
    assert sorted(p.name for p in isolated_lock.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_concurrent_writers_lose_no_entry(isolated_lock):
    threads = [
        threading.Thread(target=record_model, args=(f"m{i}", {"format": "onnx", "path": f"m{i}.onnx"}))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {f"m{i}" for i in range(8)} <= set(tomllib.loads(isolated_lock.read_text())["models"])


def test_record_model_refuses_a_malformed_entry(isolated_lock):
    original = isolated_lock.read_text()
    with pytest.raises(LockError, match="model 'bad' files #1 sha256 must be 64 lowercase hex digits"):
        record_model(
            "bad", {"format": "gguf", "path": "x.gguf", "files": [{"name": "x.gguf", "sha256": "XY", "size": 1}]}
        )
    with pytest.raises(LockError, match="model name 'a b' is not usable"):
        record_model("a b", {"format": "gguf", "path": "x.gguf"})
    assert isolated_lock.read_text() == original


@pytest.mark.parametrize(
    "text, message",
    [
        ("[models.x\n", "is not valid TOML"),
        ("version = 2\n", "has version 2; this talesmith reads version 1"),
        (
            '[models.x]\nformat = "safetensors"\npath = "a"\n',
            "model 'x' format 'safetensors' must be one of hf, gguf, onnx",
        ),
        (
            '[models.x]\nformat = "hf"\nsource = { hub = "a/b", commit = "main" }\n',
            "model 'x' source.commit 'main' must be a 40-digit commit hash or 'unresolved'",
        ),
        ('[models.x]\nformat = "hf"\n', "model 'x' has neither source nor path"),
    ],
)
def test_a_malformed_lock_is_one_line_naming_the_problem(isolated_lock, text, message):
    isolated_lock.write_text(text)
    with pytest.raises(LockError) as e:
        resolve("x")
    assert message in str(e.value)
    one_line_error(models_cli("list"), str(e.value))


def test_verify_catches_a_single_flipped_byte(isolated_lock, tiny_gguf):
    entry, note = add("tiny", str(tiny_gguf), prompt_format="story")
    assert note is None
    assert entry == {
        "format": "gguf",
        "architecture": "llama",
        "quantization": "Q4_K_M",
        "prompt_format": "story",
        "path": "models/tiny.gguf",
        "files": [file_entry(tiny_gguf)],
    }
    assert [(c.name, c.state) for c in verify("tiny")] == [("tiny.gguf", "ok")]
    assert models_cli("verify", "tiny").returncode == 0
    data = bytearray(tiny_gguf.read_bytes())
    data[200] ^= 0x01
    tiny_gguf.write_bytes(bytes(data))
    assert [r.verified for r in rows() if r.name == "tiny"] == ["not checked"]
    [check] = verify("tiny")
    assert (check.state, check.expected, check.actual) == (
        "mismatch",
        entry["files"][0]["sha256"],
        hashlib.sha256(data).hexdigest(),
    )
    assert [(r.present, r.verified) for r in rows() if r.name == "tiny"] == [("present", "MISMATCH")]
    result = models_cli("verify")
    one_line_error(
        result,
        f"1 of 2 files failed verification (first: tiny.gguf of tiny, mismatch); "
        f"restore {tiny_gguf} or re-add the model with `talesmith models add`",
    )
    assert "MISMATCH  tiny  tiny.gguf" in result.stdout


def test_verify_reports_a_missing_file(isolated_lock, tiny_gguf):
    add("tiny", str(tiny_gguf))
    tiny_gguf.unlink()
    assert [c.state for c in verify("tiny")] == ["missing"]
    assert [r.present for r in rows() if r.name == "tiny"] == ["missing"]
    one_line_error(
        models_cli("verify", "tiny"),
        f"1 of 1 files failed verification (first: tiny.gguf of tiny, "
        f"missing); restore {tiny_gguf} or re-add the model with "
        f"`talesmith models add`",
    )


def test_add_a_local_folder_and_remove_it(isolated_lock, tmp_path):
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 10)
    (folder / "sub" / "extra.txt").write_text("x")
    (folder / ".hidden").write_text("x")
    entry, _ = add("ck", str(folder), prompt_format="tinystories", preset="tinystories")
    assert entry["format"] == "hf" and entry["path"] == "ckpt"
    assert [f["name"] for f in entry["files"]] == ["config.json", "model.safetensors", "sub/extra.txt"]
    assert [c.state for c in verify("ck")] == ["ok", "ok", "ok"]
    with pytest.raises(ModelError, match="'ck' is already in"):
        add("ck", str(folder))
    saved = tomllib.loads(isolated_lock.read_text())["models"]["ck"]
    assert remove_model("ck") == saved == entry
    assert "ck" not in tomllib.loads(isolated_lock.read_text())["models"]
    assert folder.exists()


def test_add_rejects_bad_sources_and_choices(tmp_path):
    with pytest.raises(InputError, match="./nothere.gguf is neither an existing file or folder nor a hub repo id"):
        add("x", "./nothere.gguf")
    with pytest.raises(InputError, match="--preset 'fast' must be one of"):
        add("x", "owner/repo", preset="fast")
    with pytest.raises(InputError, match="--format 'bin' must be one of hf, gguf, onnx"):
        add("x", "owner/repo", fmt="bin")


def test_cli_list_path_remove_and_unknown_names(isolated_lock, tiny_gguf, bundled_path):
    add("tiny", str(tiny_gguf))
    listing = models_cli("list")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line.split()[1:] for line in listing.stdout.splitlines()[1:]}
    assert lines["tiny"] == ["gguf", "Q4_K_M", f"{tiny_gguf.stat().st_size}", "B", "present", "yes"]
    assert lines["gemma3-270m"][:4] == ["gguf", "Q4_K_M", "253.1", "MB"]
    assert lines["lit-6b"] == ["hf", "-", "-", "unpinned", "-"]
    assert models_cli("path", "tiny").stdout == f"{tiny_gguf}\n"
    assert models_cli("path", "gemma3-270m").stdout == f"{bundled_path}\n"
    one_line_error(
        models_cli("path", "lit-6b"), "model 'lit-6b' is not on this machine yet; run `talesmith models pull lit-6b`"
    )
    removed = models_cli("remove", "tiny")
    assert removed.returncode == 0 and removed.stderr == "removed tiny\n"
    one_line_error(
        models_cli("remove", "tiny"),
        f"no model 'tiny' in {isolated_lock} (models there: distilgpt2, "
        "falcon-7b, gemma3-270m, genji-jp, lit-6b, llama-2-7b, pygmalion-6b)",
    )
    one_line_error(
        models_cli("lock", "gemma3-270m"),
        "model 'gemma3-270m' does not come from the hub, so it has no revision to lock",
    )
