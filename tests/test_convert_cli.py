"""`talesmith convert` as a user runs it: from a local folder and from a hub repo (a local stand-in server)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from hub_server import HubServer, Repo  # noqa: E402
from tiny_models import make_lora, make_model  # noqa: E402

from talesmith.runtime.models.resolve import read_lock  # noqa: E402

TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]


def run(*args, env=None):
    return subprocess.run(
        [*TALESMITH, *map(str, args)], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_convert_a_folder_with_a_lora_then_generate_from_the_lock(tmp_path):
    base = make_model("gpt2", tmp_path / "distilgpt2-tiny")
    adapter = make_lora("gpt2", base, tmp_path / "tinystories-lora", seed=1, targets=["c_attn"])
    lock = tmp_path / "models.lock"
    result = run(
        "convert", base, "-o", tmp_path / "out", "--lora", f"{adapter}:0.5", "--quant", "Q8_0,Q4_0", "--lock", lock
    )
    assert result.returncode == 0, result.stderr
    assert "Q4_0" in result.stdout and "bits/w" in result.stdout and "top-1" in result.stdout  # the summary table
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert names == {"distilgpt2-tiny-f16.gguf", "distilgpt2-tiny-Q4_0.gguf", "distilgpt2-tiny-Q8_0.gguf"}
    entry = read_lock(lock)["distilgpt2-tiny-q8_0"]
    assert entry["adapters"][0]["scale"] == 0.5 and entry["adapters"][0]["path"] == str(adapter.resolve())
    assert entry["prompt_format"] == "tinystories" and entry["preset"] == "tinystories"  # guessed from the adapter
    out = run(
        "generate",
        "--lock",
        lock,
        "-m",
        "distilgpt2-tiny-q8_0",
        "--json",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        "Once upon a time",
    )
    sample = json.loads(out.stdout)
    assert sample["prompt"] == "<|startoftext|> Once upon a time"  # the format recorded at conversion
    assert sample["settings"]["top_k"] == 250  # and its preset


def test_convert_errors_are_one_line(tmp_path):
    result = run("convert", tmp_path / "missing", "-o", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing'} does not exist; pass a checkpoint "
        f"folder or a hub repo id (like gpt2 or owner/name)"
    ]
    result = run("convert", tmp_path, "-o", tmp_path / "out", "--quant", "Q3_X")
    assert result.returncode == 2 and "unknown quantization type 'Q3_X'" in result.stderr


def test_convert_from_the_hub_downloads_only_what_it_needs(tmp_path):
    folder = make_model("llama", tmp_path / "src")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["flax_model.msgpack"] = b"\0" * 50_000
    server = HubServer().start()
    try:
        repo = server.add(Repo("acme/tiny-llama", files, lfs={"model.safetensors", "flax_model.msgpack"}))
        env = {
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "HF_HUB_OFFLINE": "0",
        }
        lock = tmp_path / "models.lock"
        result = run(
            "convert",
            "acme/tiny-llama",
            "--revision",
            "main",
            "-o",
            tmp_path / "out",
            "--quant",
            "Q8_0",
            "--lock",
            lock,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert server.gets("model.safetensors") and not server.gets("flax_model.msgpack")
        entry = read_lock(lock)["tiny-llama-q8_0"]
        assert entry["source"] == {"hub": "acme/tiny-llama", "revision": "main", "commit": repo.commit}
        missing = run("convert", "acme/nothing-here", "-o", tmp_path / "out2", "--lock", lock, env=env)
        assert missing.returncode == 2 and "neither a local folder nor a hub repository" in missing.stderr
    finally:
        server.stop()
