"""Hostile and unlucky models and locks: hand-edited GGUF headers (rope dimensions, huge counts), files that
are not models given to `models quality`, hand-edited, deeply nested or datetime-holding models.lock files and
configs. Each ends in one line and exit status 2, or works."""

import hashlib
import os
import struct
import time

import numpy as np
import pytest
from test_model_inputs import key, raw_gguf, tiny_llama

from talesmith.runtime.errors import ModelError
from talesmith.runtime.models.gguf_header import MAX_ARRAY, MAX_METADATA, load_problem, read_info
from talesmith.runtime.models.resolve import record_model

pytest_plugins = ["cli_fakes"]  # the run_cli fixture


def one_line(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- rope dimensions against the head size (llama.cpp segfaults or aborts on them) ---------------------


@pytest.mark.parametrize(
    "rope, problem",
    [
        (4_000_000_000, "llama.rope.dimension_count is 4000000000, more than the 16 elements of an attention head"),
        (512, "llama.rope.dimension_count is 512, more than the 16 elements of an attention head"),
        (15, "llama.rope.dimension_count is 15; it must be even"),
        (0, "llama.rope.dimension_count is 0; it must be at least 1"),
    ],
)
def test_a_rope_dimension_past_the_head_is_refused_before_llama_cpp(tmp_path, run_cli, rope, problem):
    path = tiny_llama(tmp_path / "rope.gguf", uint32={"llama.rope.dimension_count": rope})
    assert one_line(run_cli("generate", "--model", path, "hi")) == (
        f"error: {path} cannot be loaded: {problem}; download or convert it again"
    )


def test_rope_over_a_key_length_counts_the_key_length_and_a_whole_head_is_fine(tmp_path):
    whole = tiny_llama(tmp_path / "whole.gguf", uint32={"llama.rope.dimension_count": 16})
    part = tiny_llama(tmp_path / "part.gguf", uint32={"llama.rope.dimension_count": 8})
    assert load_problem(read_info(whole)) is None and load_problem(read_info(part)) is None
    keyed = tiny_llama(
        tmp_path / "keyed.gguf", uint32={"llama.attention.key_length": 8, "llama.rope.dimension_count": 16}
    )
    assert load_problem(read_info(keyed)) == (
        "llama.rope.dimension_count is 16, more than the 8 elements of an attention head"
    )


# ---- every command that opens a model checks it first: models quality ------------------------------------


@pytest.fixture
def quality_lock(tmp_path, isolated_lock):
    """A quantized entry and the unquantized one it is measured against; each test writes the files."""
    reference, quantized = tmp_path / "m-f16.gguf", tmp_path / "m-q4_0.gguf"
    source = {"path": str(tmp_path / "checkpoint")}
    record_model("m-f16", {"format": "gguf", "quantization": "F16", "path": str(reference), "source": source})
    record_model("m-q4_0", {"format": "gguf", "quantization": "Q4_0", "path": str(quantized), "source": source})
    return reference, quantized


def _bare(path):
    path.write_bytes(b"GGUF")


def _text(path):
    path.write_text("Once upon a time, this was a story and not a model.\n")


def _random(path):
    path.write_bytes(np.random.default_rng(3).bytes(4096))


def _no_blocks(path):
    tiny_llama(path, block_count=0)


@pytest.mark.parametrize(
    "make, problem",
    [
        (
            _random,
            "is not a GGUF file (no GGUF magic); pass a .gguf model, or convert a checkpoint with `talesmith convert`",
        ),
        (
            _text,
            "is not a GGUF file (no GGUF magic); pass a .gguf model, or convert a checkpoint with `talesmith convert`",
        ),
        (_bare, "is truncated (its header ends early); download or convert it again"),
        (_no_blocks, "cannot be loaded: llama.block_count is 0; it must be at least 1; download or convert it again"),
    ],
    ids=["random-bytes", "text", "bare-magic", "block-count-0"],
)
@pytest.mark.parametrize("which", ["quantized", "reference"])
def test_models_quality_checks_both_files_first(quality_lock, run_cli, make, problem, which):
    reference, quantized = quality_lock
    bad, good = (quantized, reference) if which == "quantized" else (reference, quantized)
    make(bad)
    tiny_llama(good)
    started = time.perf_counter()
    assert one_line(run_cli("models", "quality", "m-q4_0")) == f"error: {bad} {problem}"
    assert time.perf_counter() - started < 10  # refused from the header: llama.cpp never reads the file


# ---- counts in hand-made headers: capped from the file's size and sane limits, refused at once ---------


def _sparse(path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)  # zeros after the header (a hole: nothing written), as a real file of that size


def test_millions_of_metadata_entries_are_refused_at_once(tmp_path, run_cli):
    path = raw_gguf(tmp_path / "keys.gguf", n_kv=3_000_000)
    _sparse(path, 70_000_000)
    started = time.perf_counter()
    assert one_line(run_cli("generate", "--model", path, "hi")) == (
        f"error: {path} is not a valid GGUF file: it declares 3000000 metadata entries, more than the "
        f"{MAX_METADATA} talesmith reads; download or convert it again"
    )
    assert time.perf_counter() - started < 5


def test_a_five_million_token_vocabulary_is_refused_at_once(tmp_path, run_cli):
    array = key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 5_000_000)
    path = raw_gguf(tmp_path / "vocab.gguf", array)
    _sparse(path, 8 * 5_000_000 + 100)
    started = time.perf_counter()
    assert one_line(run_cli("generate", "--model", path, "hi")) == (
        f"error: {path} is not a valid GGUF file: it declares 5000000 items in tokenizer.ggml.tokens, more than "
        f"the {MAX_ARRAY} talesmith reads; download or convert it again"
    )
    assert time.perf_counter() - started < 5


def test_a_count_the_file_cannot_hold_is_truncated_and_a_large_real_vocabulary_reads_quickly(tmp_path):
    tensors = tmp_path / "tensors.gguf"
    tensors.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 10**9, 0) + b"\0" * 1000)
    with pytest.raises(ModelError, match="is truncated \\(its header ends early\\)"):
        read_info(tensors)
    many_dims = raw_gguf(tmp_path / "dims.gguf")
    with many_dims.open("r+b") as f:
        f.seek(8)
        f.write(struct.pack("<Q", 1))  # one tensor
        f.seek(0, os.SEEK_END)
        f.write(key("t") + struct.pack("<I", 4_000_000_000) + b"\0" * 64)
    with pytest.raises(ModelError, match="a tensor has 4000000000 dimensions; ggml tensors have at most 4"):
        read_info(many_dims)
    n = 262_144  # Gemma 3's vocabulary size, as empty strings
    vocab = raw_gguf(tmp_path / "big.gguf", key("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n) + bytes(8 * n))
    started = time.perf_counter()
    assert read_info(vocab).metadata == {"tokenizer.ggml.tokens": n}
    assert time.perf_counter() - started < 2


# ---- models.lock as a person edits it ------------------------------------------------------------------

HAND_EDITED = """\
# talesmith models.lock: the models this project works with, pinned to exact bytes.
# (my own note, right after the header)
version = 1  # do not bump by hand
maintainer = "me@example.com"  # not a key talesmith uses

# the model I write with
[models.mine]
format = "gguf"  # converted last spring
path = "mine.gguf"
created = 1979-05-27T07:32:00Z
tags = ["horror", "short"]  # for me
"""


@pytest.fixture
def gguf_file(tmp_path):
    return tiny_llama(tmp_path / "tiny.gguf")


def test_models_add_and_remove_keep_a_hand_edited_lock(isolated_lock, gguf_file, run_cli):
    isolated_lock.write_text(HAND_EDITED)
    added = run_cli("models", "add", "tiny", gguf_file)
    assert added.returncode == 0, added.stderr
    after = isolated_lock.read_text()
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert after == HAND_EDITED + (
        '\n[models.tiny]\nformat = "gguf"\narchitecture = "llama"\n'
        f'path = "tiny.gguf"\nfiles = [\n  {{ name = "tiny.gguf", sha256 = "{digest}", '
        f"size = {gguf_file.stat().st_size} }},\n]\n"
    )
    removed = run_cli("models", "remove", "tiny")
    assert removed.returncode == 0, removed.stderr
    assert isolated_lock.read_text() == HAND_EDITED


def test_a_datetime_in_an_entry_is_kept_when_the_entry_is_rewritten(isolated_lock, gguf_file):
    import tomllib

    from talesmith.runtime.models.manage import pull

    isolated_lock.write_text(HAND_EDITED.replace('path = "mine.gguf"', f'path = "{gguf_file}"'))
    record_model("other", {"format": "gguf", "path": str(gguf_file)})
    assert pull("mine").pinned == ()  # nothing listed, nothing to pin: the entry stays as written
    text = isolated_lock.read_text()
    table = tomllib.loads(text)["models"]["mine"]
    record_model("mine", {**table, "quantization": "F32"})
    rewritten = isolated_lock.read_text()
    assert "created = 1979-05-27T07:32:00Z\n" in rewritten and 'tags = ["horror", "short"]  # for me\n' in rewritten
    assert 'format = "gguf"  # converted last spring\n' in rewritten
    assert tomllib.loads(rewritten)["models"]["mine"] == {**table, "quantization": "F32"}


@pytest.mark.parametrize("kind", ["arrays", "tables"])
def test_a_lock_or_config_nested_three_thousand_deep_is_one_line(isolated_lock, tmp_path, run_cli, kind):
    deep = "[" * 3000 + "]" * 3000 if kind == "arrays" else "{ a = " * 3000 + "1" + " }" * 3000
    isolated_lock.write_text(f'version = 1\n[models.x]\nformat = "hf"\npath = "p"\ndeep = {deep}\n')
    assert one_line(run_cli("models", "list")) == (
        f"error: {isolated_lock} is not valid TOML (its tables or arrays are nested too deeply); "
        f"fix the file or point --lock elsewhere"
    )
    isolated_lock.write_text("version = 1\n")
    config = tmp_path / "deep.toml"
    config.write_text(f"[fields]\ntitle = {deep}\n")
    assert one_line(run_cli("generate", "--config", config, "hi")) == (
        f"error: config file {config} is not valid TOML (its tables or arrays are nested too deeply); fix the file"
    )


def test_a_writer_waiting_too_long_for_the_lock_says_who_holds_it(isolated_lock, monkeypatch):
    from filelock import FileLock

    from talesmith.runtime.models import lockfile

    monkeypatch.setattr(lockfile, "LOCK_TIMEOUT", 0.2)
    original = isolated_lock.read_text()
    held = isolated_lock.with_name(".models.lock.lock")
    with FileLock(held):  # another talesmith in the middle of its write
        with pytest.raises(lockfile.LockError) as e:
            record_model("m", {"format": "onnx", "path": "m.onnx"})
    assert str(e.value) == (
        f"another talesmith has been writing {isolated_lock} for 0.2 s (it holds {held}); try again once it is done"
    )
    assert isolated_lock.read_text() == original
