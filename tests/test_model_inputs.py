"""Hostile and unlucky model inputs: GGUF metadata llama.cpp would abort on, contexts that do not fit,
files that no longer match the lock. Each is one line on stderr and exit status 2 (or a note), never
a traceback or an abort."""

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from talesmith.runtime.engine.memory import context_failed, context_that_fits, context_too_big
from talesmith.runtime.errors import ModelError
from talesmith.runtime.models import integrity
from talesmith.runtime.models.gguf_header import GGUFInfo, load_problem, read_info

TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]
TOKENS = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)] + [b"\xe2\x96\x81a", b"a", b"b"]


def talesmith(*args, cwd=None, env=None):
    return subprocess.run(
        [*TALESMITH, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def error_line(result) -> str:
    """The one line a failed command printed (exit status 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def tiny_llama(path: Path, *, block_count=1, eps=1e-5, alignment=None, context_length=64, uint32=None) -> Path:
    """A tiny llama-shaped GGUF that llama.cpp loads and runs (one block of width 32, two heads of 16);
    `uint32` adds metadata keys of that type (e.g. {"llama.rope.dimension_count": 16})."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    if isinstance(context_length, str):
        w.add_string("llama.context_length", context_length)
    else:
        w.add_context_length(context_length)
    w.add_embedding_length(32)
    w.add_block_count(block_count)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(eps)
    if alignment is not None:
        w.add_uint32("general.alignment", alignment)
    for name, value in (uint32 or {}).items():
        w.add_uint32(name, value)
    w.add_tokenizer_model("llama")
    w.add_token_list(TOKENS)
    w.add_token_scores([0.0] * len(TOKENS))
    w.add_token_types([2, 3, 3] + [6] * 256 + [1, 1, 1])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(TOKENS), 32))
    w.add_tensor("output_norm.weight", np.ones(32, np.float32))
    w.add_tensor("output.weight", t(len(TOKENS), 32))
    for name in ("attn_norm", "ffn_norm"):
        w.add_tensor(f"blk.0.{name}.weight", np.ones(32, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", t(32, 32))
    w.add_tensor("blk.0.ffn_gate.weight", t(64, 32))
    w.add_tensor("blk.0.ffn_up.weight", t(64, 32))
    w.add_tensor("blk.0.ffn_down.weight", t(32, 64))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def raw_gguf(path: Path, *kvs: bytes, n_kv: int | None = None) -> Path:
    """A GGUF v3 header with no tensors and the given raw key/value records."""
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs) if n_kv is None else n_kv) + b"".join(kvs))
    return path


def key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


# ---- metadata llama.cpp aborts on ----------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"block_count": 0}, "cannot be loaded: llama.block_count is 0; it must be at least 1"),
        (
            {"block_count": 1000},
            "cannot be loaded: llama.block_count is 1000 (its tensors hold 1 block); llama.cpp loads at most 512",
        ),
        ({"eps": math.nan}, "cannot be loaded: llama.attention.layer_norm_rms_epsilon is nan, not a finite number"),
        ({"eps": math.inf}, "cannot be loaded: llama.attention.layer_norm_rms_epsilon is inf, not a finite number"),
        ({"context_length": "abc"}, "cannot be loaded: llama.context_length is 'abc', not a whole number"),
        ({"context_length": 0}, "cannot be loaded: llama.context_length is 0; it must be at least 1"),
        ({"alignment": 0}, "is not a valid GGUF file: general.alignment is 0, not a power of two"),
        ({"alignment": 24}, "is not a valid GGUF file: general.alignment is 24, not a power of two"),
    ],
)
def test_metadata_llama_cpp_aborts_on_is_one_line(tmp_path, changes, problem):
    path = tiny_llama(tmp_path / "bad.gguf", **changes)
    assert (
        error_line(talesmith("generate", "--model", path, "hi"))
        == f"error: {path} {problem}; download or convert it again"
    )


def test_the_tiny_model_itself_loads_and_generates(tmp_path):
    path = tiny_llama(tmp_path / "good.gguf")
    result = talesmith("generate", "--model", path, "--max-new-tokens", "2", "--seed", "1", "hi")
    assert result.returncode == 0, result.stderr
    assert load_problem(read_info(path)) is None


def test_a_string_longer_than_the_file_is_truncated_not_a_memory_error(tmp_path):
    path = raw_gguf(tmp_path / "long.gguf", struct.pack("<Q", 2**40) + b"x")
    assert (
        error_line(talesmith("generate", "--model", path, "hi"))
        == f"error: {path} is truncated (its header ends early); download or convert it again"
    )


def test_an_unknown_value_type_is_named(tmp_path):
    path = raw_gguf(tmp_path / "kind.gguf", key("general.name") + struct.pack("<I", 99))
    with pytest.raises(ModelError) as e:
        read_info(path)
    assert str(e.value) == f"{path} is not a valid GGUF file: unknown value type 99; download or convert it again"
    array = raw_gguf(tmp_path / "array.gguf", key("general.tags") + struct.pack("<IIQ", 9, 77, 1))
    with pytest.raises(ModelError, match=r"is not a valid GGUF file: an array of unknown value type 77; "):
        read_info(array)


def test_a_huge_array_or_key_count_is_truncated(tmp_path):
    array = raw_gguf(tmp_path / "array.gguf", key("general.tags") + struct.pack("<IIQ", 9, 4, 2**60))
    keys = raw_gguf(tmp_path / "keys.gguf", n_kv=2**62)
    for path in (array, keys):
        with pytest.raises(ModelError) as e:
            read_info(path)
        assert str(e.value) == f"{path} is truncated (its header ends early); download or convert it again"


def test_an_unsupported_gguf_version_is_named(tmp_path):
    path = tmp_path / "v9.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    with pytest.raises(ModelError) as e:
        read_info(path)
    assert str(e.value) == (
        f"{path} is not a valid GGUF file: GGUF version 9; llama.cpp reads versions 2 and 3; "
        f"download or convert it again"
    )


# ---- context size --------------------------------------------------------------------------------


def test_ctx_below_the_minimum_says_the_minimum_it_accepts(tmp_path):
    path = tiny_llama(tmp_path / "good.gguf")
    assert (
        error_line(talesmith("generate", "--model", path, "--ctx", "4", "hi"))
        == "error: --ctx 4 is too small; use --ctx 16 or more"
    )
    accepted = talesmith("generate", "--model", path, "--ctx", "16", "--max-new-tokens", "1", "hi")
    assert accepted.returncode == 0, accepted.stderr


def gemma_like(**extra) -> GGUFInfo:
    meta = {
        "general.architecture": "gemma3",
        "general.name": "Gemma",
        "gemma3.context_length": 32768,
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        **extra,
    }
    return GGUFInfo(Path("/m/gemma.gguf"), 3, meta, 0)


def test_a_context_that_does_not_fit_in_memory_says_what_does():
    info = gemma_like()  # 18 layers x 1 head x (256 + 256) x 2 bytes = 18,432 bytes a token
    assert context_too_big(info, 100_000_000, available=16 * 2**30) == (
        "--ctx 100000000 does not fit in memory: its KV cache alone needs at least 1716.6 GiB and 16.0 GiB are "
        "free; use --ctx 698880 or less (Gemma was trained on 32768)"
    )
    assert context_too_big(info, 32768, available=16 * 2**30) is None
    assert context_that_fits(info, 2**30) == 43520
    assert context_too_big(gemma_like(**{"gemma3.context_length": 131072}), 100_000, available=2**30) == (
        "--ctx 100000 does not fit in memory: its KV cache alone needs at least 1.7 GiB and 1.0 GiB are free; "
        "use --ctx 43520 or less"
    )
    assert context_too_big(info, 100_000, available=None) is None  # unknown free memory: llama.cpp decides


def test_sliding_window_models_are_refused_only_when_one_full_layer_cannot_fit():
    info = gemma_like(**{"gemma3.attention.sliding_window": 512})
    assert context_too_big(info, 1_000_000, available=2**30) is None  # 1 layer: 0.95 GiB
    assert context_too_big(info, 100_000_000, available=2**30).startswith(
        "--ctx 100000000 does not fit in memory: its KV cache alone needs at least 95.4 GiB and 1.0 GiB are free; "
    )


def test_a_failed_context_is_not_blamed_on_the_file():
    assert context_failed(gemma_like(), 4_000_000, available=16 * 2**30) == (
        "llama.cpp could not create a context of 4000000 tokens for gemma.gguf (its KV cache needs about 68.7 GiB); "
        "use --ctx 698880 or less (Gemma was trained on 32768)"
    )


def test_ctx_past_memory_on_the_command_line(tmp_path):
    path = tiny_llama(tmp_path / "good.gguf")  # 128 bytes of KV cache a token: 10**12 tokens are 116 TiB
    line = error_line(talesmith("generate", "--model", path, "--ctx", str(10**12), "hi"))
    assert line.startswith(
        "error: --ctx 1000000000000 does not fit in memory: its KV cache alone needs at least 119209.3 GiB and "
    )
    assert line.endswith(" or less (tiny was trained on 64)")


# ---- a file that no longer matches the lock ------------------------------------------------------


def lock_with(tmp_path: Path, path: Path, sha256: str) -> Path:
    lock = tmp_path / "models.lock"
    lock.write_text(
        f'version = 1\n\n[models.tiny]\nformat = "gguf"\npath = "{path.name}"\nfiles = [\n'
        f'  {{ name = "{path.name}", sha256 = "{sha256}", size = {path.stat().st_size} }},\n]\n',
        encoding="utf-8",
    )
    return lock


def test_a_changed_model_file_is_run_with_a_note(tmp_path):
    path = tiny_llama(tmp_path / "tiny.gguf")
    lock = lock_with(tmp_path, path, "0" * 64)
    actual = integrity.files.sha256_file(path)
    env = {"TALESMITH_LOCK": str(lock), "TALESMITH_CACHE": str(tmp_path / "cache")}
    result = talesmith("generate", "--model", "tiny", "--max-new-tokens", "1", "hi", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"note: tiny.gguf of model 'tiny' no longer matches {lock} (sha256 {actual[:12]}..., pinned 000000000000...); "
        f"running it anyway: restore it, or re-add the model with `talesmith models add` to pin the new file"
    )
    lock_with(tmp_path, path, actual)
    result = talesmith("generate", "--model", "tiny", "--max-new-tokens", "1", "hi", env=env)
    assert result.returncode == 0 and "note:" not in result.stderr, result.stderr


def test_the_hash_is_read_once_per_size_and_modification_time(tmp_path, monkeypatch):
    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"first")
    reads = []
    real = integrity.files.sha256_file
    monkeypatch.setattr(integrity.files, "sha256_file", lambda p: reads.append(p) or real(p))
    integrity._sha256.cache_clear()
    first = integrity.sha256(path)
    integrity._sha256.cache_clear()  # a new process: only the remembered record is left
    assert integrity.sha256(path) == first and len(reads) == 1
    assert integrity.mismatch(path, first) is None
    path.write_bytes(b"other")
    os.utime(path, ns=(1, 1))
    assert integrity.mismatch(path, first) == integrity.files.sha256_file(path) and len(reads) == 3


def test_models_path_of_a_missing_local_file_says_restore_not_pull(tmp_path):
    path = tiny_llama(tmp_path / "tiny.gguf")
    lock = lock_with(tmp_path, path, "0" * 64)
    path.unlink()
    line = error_line(talesmith("models", "path", "tiny", "--lock", lock))
    assert line == (
        f"error: model 'tiny' in {lock} points at {path}, which does not exist; restore the file or "
        f"remove the entry with `talesmith models remove tiny`"
    )


@pytest.mark.asyncio
async def test_the_app_shows_the_model_notes_once_it_has_loaded(tmp_path):
    from tui_fakes import TakesBackend

    from talesmith.tui.app import AppConfig, TalesmithApp

    backend = TakesBackend([" x"], n_ctx=512)
    backend.warnings = ["tiny.gguf of model 'tiny' no longer matches models.lock"]
    app = TalesmithApp(lambda: backend, AppConfig(data_dir=tmp_path / "data", model_name="tiny"))
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if app.backend is not None:
                break
        await pilot.pause(0.05)
        notes = [(n.message, n.severity) for n in app._notifications]
    assert ("tiny.gguf of model 'tiny' no longer matches models.lock", "warning") in notes


def test_the_bundled_model_is_known_where_no_lock_names_it(tmp_path, bundled_path):
    env = {"TALESMITH_LOCK": str(tmp_path / "none.lock"), "TALESMITH_CACHE": str(tmp_path / "cache")}
    listing = talesmith("models", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].split()[:6] == ["gemma3-270m", "gguf", "Q4_K_M", "253.1", "MB", "present"]
    assert talesmith("models", "path", "gemma3-270m", env=env).stdout == f"{bundled_path}\n"
    verified = talesmith("models", "verify", env=env)
    assert verified.returncode == 0 and "gemma3-270m" in verified.stdout, verified.stderr


REAL_VOCAB = Path("/work/shared/real/llamacpp-vocab")


def test_a_gguf_without_tensors_is_read_and_refused_as_no_model(tmp_path):
    import gguf

    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_token_list(TOKENS)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert read_info(path).n_tensors == 0  # no data section: nothing to pad the header to
    assert (
        error_line(talesmith("generate", "--model", path, "hi"))
        == f"error: {path} cannot be loaded: it holds no tensors (a vocabulary-only file?); pass a model file"
    )


@pytest.mark.skipif(not REAL_VOCAB.is_dir(), reason="the real vocabulary files are not on this machine")
@pytest.mark.parametrize("name", ["ggml-vocab-gpt-2.gguf", "ggml-vocab-falcon.gguf", "ggml-vocab-llama-spm.gguf"])
def test_llama_cpp_vocabulary_files_read_whole(name):
    info = read_info(REAL_VOCAB / name)
    assert info.n_tensors == 0 and load_problem(info) == "it holds no tensors (a vocabulary-only file?)"
