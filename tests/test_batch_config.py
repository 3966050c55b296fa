"""`batch --config` with the TinyStories project's own TOML: its model (from the conversion cache) and its output_file.

The model is the cache's converted file, found as `generate --config` finds it (talesmith.cli.seedrun.config_model);
the conversion itself is tested in test_convert_seed.py. A scripted backend stands in for llama.cpp.
"""

import json

import pytest

from talesmith.convert.seed import cache_key
from talesmith.runtime.batch_output import read_records
from talesmith.runtime.files import sha256_file

pytest_plugins = ["cli_fakes"]  # the run_cli and scripted_model fixtures

SEED_TOML = """output_file = "output/stories.csv"
lora_peft = true
model_folder = "lora"
model_name = "base"
quantized = true
device = "cpu"
starter = "<|startoftext|>"
ender = "<|endoftext|>"
[hyper-parameters]
  max_new_tokens = 1096
  temperature = 1.25
  top_k = 250
  top_p = 1.0
  repetition_penalty = 1.0
  bad_words = ["Damn"]
"""


@pytest.fixture
def seed_project(tmp_path, monkeypatch, scripted_model):
    """A TinyStories-style project folder whose model is already in the conversion cache."""
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text('{"r": 4}')
    (tmp_path / "model_inference.toml").write_text(SEED_TOML)
    (tmp_path / "prompts.csv").write_text("prompt\nOnce upon a time\nThe dragon\n")
    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "cache"))
    key = cache_key(tmp_path / "base", tmp_path / "lora", "Q8_0")
    converted = tmp_path / "cache" / "converted" / key[:24] / "tinystories-Q8_0.gguf"
    converted.parent.mkdir(parents=True)
    converted.write_bytes(scripted_model.read_bytes())
    monkeypatch.chdir(tmp_path)
    return converted


def test_batch_uses_the_configs_model_and_appends_to_its_output_file(tmp_path, run_cli, seed_project):
    result = run_cli("batch", "prompts.csv", "--config", "model_inference.toml", "--seed", "876543")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "output" / "stories.csv"
    records = read_records(out)
    assert [(r["id"], r["sample"]) for r in records] == [("1", "0"), ("2", "0")]
    assert {r["model_sha256"] for r in records} == {sha256_file(seed_project)}
    assert records[0]["prompt"] == "<|startoftext|> Once upon a time"
    settings = json.loads(records[0]["settings"])
    assert (settings["temperature"], settings["top_k"], settings["banned"]) == (1.25, 250, ["Damn"])
    room = 512 - len(b"<|startoftext|> Once upon a time")  # the scripted model's context, less the longest row
    assert settings["max_new_tokens"] == room
    assert (
        f"max_new_tokens 1096 is more than the context of 512 tokens leaves after the prompt; generating at most {room}"
        in " ".join(result.stderr.split())
    )
    assert "converting" not in result.stderr  # from the cache
    again = run_cli("batch", "prompts.csv", "--config", "model_inference.toml", "--seed", "876543")
    assert again.returncode == 0 and "(0 new, 2 kept)" in again.stderr


def test_o_wins_over_the_configs_output_file(tmp_path, run_cli, seed_project):
    result = run_cli("batch", "prompts.csv", "--config", "model_inference.toml", "-o", "mine.jsonl")
    assert result.returncode == 0, result.stderr
    assert len(read_records(tmp_path / "mine.jsonl")) == 2
    assert not (tmp_path / "output").exists()


def test_no_output_anywhere_is_one_line(tmp_path, run_cli, scripted_model):
    (tmp_path / "prompts.csv").write_text("prompt\nOnce\n")
    result = run_cli("batch", tmp_path / "prompts.csv", "-m", scripted_model)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "error: batch needs an output file: -o FILE.jsonl (or FILE.csv), or output_file in --config",
    )
