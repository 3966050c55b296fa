"""The TinyStories project's own inference TOML, unchanged: its base model and LoRA converted on first use into a
cache keyed by the sources' hashes, its hyper-parameters as sampling settings, one CSV row per sample."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from hub_server import HubServer, Repo  # noqa: E402
from tiny_models import make_lora, train_tokenizer  # noqa: E402

from talesmith.convert.seed import read_seed_config  # noqa: E402
from talesmith.runtime.errors import InputError, SettingsError  # noqa: E402

SEED_TOML = """output_file = "output/test_gpt-xl_t125.csv"
lora_peft = true
model_folder = "models/finetuned/peft_full"
model_name = "distilgpt2"
quantized = true
device = "cpu"
starter = "<|startoftext|>"
ender = "<|endoftext|>"
[hyper-parameters]
  max_new_tokens = 1096
  temperature = 1.25
  top_k = 250
  top_p =1.0
  repetition_penalty = 1.0
  length_penalty = 1
  bad_words = ["Damn", "Shit", "Fuck"]
"""


def tiny_distilgpt2(folder: Path) -> Path:
    """distilgpt2's shape in miniature, with its context of 1024 positions (less than the seed's 1096 tokens)."""
    import torch
    import transformers

    folder.mkdir(parents=True)
    config = transformers.GPT2Config(
        vocab_size=train_tokenizer(folder),
        n_positions=1024,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_the_seed_toml_maps_onto_talesmith_settings(tmp_path):
    import tomllib

    path = tmp_path / "model_inference.toml"
    seed = read_seed_config(path, tomllib.loads(SEED_TOML))
    assert seed.model.base == "distilgpt2" and seed.model.quant == "Q8_0"
    assert seed.model.adapter == tmp_path / "models/finetuned/peft_full"
    assert (seed.device, seed.format) == ("cpu", "tinystories")
    assert seed.sampling == {
        "max_new_tokens": 1096,
        "temperature": 1.25,
        "top_k": 250,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "banned": ("Damn", "Shit", "Fuck"),
    }
    assert seed.output_file == tmp_path / "output/test_gpt-xl_t125.csv"
    assert seed.notes == ("length_penalty is a beam-search setting; talesmith samples, so it has no effect",)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"quantized": "yes"}, InputError, "quantized = 'yes' must be true or false"),
        ({"starter": "<s>"}, SettingsError, "starter/ender '<s>'/'<|endoftext|>' are not the TinyStories markers"),
        ({"colour": "red"}, InputError, "unknown key 'colour' in a TinyStories-style config"),
        ({"device": "tpu"}, SettingsError, "device = 'tpu' is unknown; use cpu, cuda or auto"),
    ],
)
def test_seed_toml_mistakes_are_one_line(tmp_path, change, error, message):
    import tomllib

    data = {**tomllib.loads(SEED_TOML), **change}
    with pytest.raises(error, match=message.replace("(", r"\(").replace("|", r"\|")):
        read_seed_config(tmp_path / "c.toml", data)


def test_the_seed_command_works_unchanged_and_converts_once(tmp_path):
    base = tiny_distilgpt2(tmp_path / "src" / "distilgpt2")
    adapter = make_lora("gpt2", base, tmp_path / "models" / "finetuned" / "peft_full", seed=1, targets=["c_attn"])
    (tmp_path / "model_inference.toml").write_text(SEED_TOML)
    server = HubServer().start()
    try:
        server.add(Repo("distilgpt2", {p.name: p.read_bytes() for p in base.iterdir()}, lfs={"model.safetensors"}))
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "TALESMITH_CACHE": str(tmp_path / "cache"),
        }

        def run(*args):
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "talesmith.cli.main",
                    "generate",
                    "--config",
                    "model_inference.toml",
                    "-n",
                    "1",
                    "--seed",
                    "876543",
                    *args,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )

        first = run("Once upon a time, there was a dragon")
        assert first.returncode == 0, first.stderr
        converted = list((tmp_path / "cache").glob("converted/*/tinystories-Q8_0.gguf"))
        assert len(converted) == 1 and not list((tmp_path / "cache").glob("converted/*/*f16.gguf"))
        assert "length_penalty is a beam-search setting" in first.stderr
        assert "max_new_tokens 1096 is more than the context of 1024 tokens leaves" in " ".join(first.stderr.split())
        mtime = converted[0].stat().st_mtime_ns
        second = run("-q", "Once upon a time, there was a dragon")
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout  # same seed, same model: the cached file was reused
        assert converted[0].stat().st_mtime_ns == mtime
        assert "converting" not in second.stderr
    finally:
        server.stop()
    with open(tmp_path / "output" / "test_gpt-xl_t125.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["sample"] for r in rows] == ["0", "1"]
    assert rows[0]["prompt"] == "<|startoftext|> Once upon a time, there was a dragon"
    assert rows[0]["text"] == rows[1]["text"] and rows[0]["seed"] == "876543"
    assert '"banned": ["Damn", "Shit", "Fuck"]' in rows[0]["settings"] and '"top_k": 250' in rows[0]["settings"]
    # A changed adapter is a new source: converted again, into another cache entry.
    (adapter / "adapter_config.json").write_text(
        (adapter / "adapter_config.json").read_text().replace('"lora_alpha": 8', '"lora_alpha": 4')
    )
    from talesmith.convert.seed import cache_key

    keys = {p.parent.name for p in converted}
    assert cache_key(base, adapter, "Q8_0")[:24] not in keys
