"""The one atomic writer for files other code writes by name (gguf's writer, llama.cpp's quantizer and state
files) and for whole folders (ONNX outputs): the name shows the old file or the new one, never part of one."""

import os

import pytest

from talesmith.runtime import files


def test_atomic_path_names_the_file_only_once_it_is_complete(tmp_path):
    target = tmp_path / "out" / "model.gguf"
    with files.atomic_path(target, mode=0o600) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.gguf.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"GGUF and the rest")
        assert not target.exists()
    assert target.read_bytes() == b"GGUF and the rest"
    assert (target.stat().st_mode & 0o777, sorted(p.name for p in target.parent.iterdir())) == (0o600, ["model.gguf"])


def test_a_failed_writer_leaves_the_old_file_and_no_temporary_one(tmp_path):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "model.gguf"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError, match="quantizer failed"):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("quantizer failed")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["model.gguf"]
    with files.atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert (target.read_bytes(), target.stat().st_mode & 0o777) == (b"new", 0o640)  # the old file's mode kept


def test_replace_folder_swaps_a_whole_folder(tmp_path):
    tmp_path = tmp_path / "out"
    final = tmp_path / "m-onnx-int4"
    final.mkdir(parents=True)
    (final / "model.onnx").write_bytes(b"old")
    staged = tmp_path / ".staging" / "int4"
    (staged / "genai").mkdir(parents=True)
    (staged / "model.onnx").write_bytes(b"new")
    (staged / "genai" / "config.json").write_text("{}")
    files.replace_folder(staged, final)
    assert (final / "model.onnx").read_bytes() == b"new" and (final / "genai" / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "m-onnx-int4"] and not staged.exists()


def test_saved_state_names_are_built_in_one_place(tmp_path):
    state = files.state_path(tmp_path / "My story.json")
    assert (state.name, files.state_meta_path(state).name) == ("My story.kv", "My story.kv.meta")
