"""The same GGUF as llama.cpp's own converter: every key it writes (with the same values), bit-identical
tensors; Falcon's old RefinedWeb config; names, hub ids and the summary table a newcomer meets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from tiny_models import make_model, make_spm_llama  # noqa: E402

from talesmith.convert.pipeline import ConvertRequest, convert, usable_name  # noqa: E402
from talesmith.convert.source import is_hub_id  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import reference_convert  # noqa: E402

REAL = ROOT.parent / "shared" / "real"
OURS_ONLY = {
    "talesmith.",
    "general.sampling.",
    "falcon.rope.freq_base",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.unknown_token_id",
}
"""Keys talesmith writes beyond llama.cpp's converter (its own records, the sampling preset, explicit flags)."""


def build(kind: str, folder: Path) -> Path:
    if kind == "llama-spm":
        return make_spm_llama(folder)
    make_model(kind, folder)
    config = json.loads((folder / "config.json").read_text())
    if kind == "gpt2":
        config["n_ctx"] = config["n_positions"]  # llama.cpp's converter needs it; transformers no longer writes it
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.skipif(
    reference_convert.vendor_dir() is None,
    reason="llama.cpp's converter is not unpacked (python bench/reference_convert.py --fetch)",
)
@pytest.mark.parametrize(
    "kind, pre", [("gpt2", "gpt-2"), ("llama-spm", "-"), ("llama", "gpt-2"), ("falcon-new", "gpt-2")]
)
def test_keys_values_and_tensors_equal_llama_cpps_converter(kind, pre, tmp_path):
    folder = build(kind, tmp_path / kind)
    ref_path = tmp_path / "ref.gguf"
    done = subprocess.run(reference_convert.command(pre, folder, ref_path, "f16"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = convert(ConvertRequest(str(folder), tmp_path / "out", quants=(), name=kind), lock=tmp_path / "lock")
    ref, got = gguf.GGUFReader(ref_path), gguf.GGUFReader(ours[0].path)
    ref_keys = set(ref.fields) - {"GGUF.kv_count"}
    our_keys = set(got.fields) - {"GGUF.kv_count"}
    assert ref_keys - our_keys == set()
    assert {k for k in our_keys - ref_keys if not k.startswith(tuple(OURS_ONLY))} == set()
    if pre != "-":
        ref_pre = got.fields["tokenizer.ggml.pre"].contents()
        assert ref_pre == pre  # found by behaviour, the name the reference was told
    for key in sorted(ref_keys - {"general.name", "tokenizer.ggml.pre"}):
        assert got.fields[key].contents() == ref.fields[key].contents(), key
    ref_tensors = {t.name: t for t in ref.tensors}
    got_tensors = {t.name: t for t in got.tensors}
    assert set(ref_tensors) == set(got_tensors)
    for name, t in ref_tensors.items():
        assert t.tensor_type == got_tensors[name].tensor_type, name
        assert np.array_equal(t.data, got_tensors[name].data), name


def falcon_logits(folder: Path, ids: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_falcon_old_refinedweb_config_converts(tmp_path):
    """Falcon-7B's first config: RWForCausalLM, model_type RefinedWebModel, n_head/n_layer, and an auto_map."""
    import llama_cpp

    folder = make_model("falcon-7b", tmp_path / "falcon-7b")
    ids = transformers.AutoTokenizer.from_pretrained(folder)("The storm had raged for three days")["input_ids"]
    reference = falcon_logits(folder, ids)
    config = json.loads((folder / "config.json").read_text())
    real = REAL / "base-falcon-7b-instruct-noweights" / "rw-layout-config" / "config.json"
    rw = (
        json.loads(real.read_text())
        if real.exists()
        else {
            "architectures": ["RWForCausalLM"],
            "model_type": "RefinedWebModel",
            "multi_query": True,
            "parallel_attn": True,
            "bias": False,
            "alibi": False,
            "layer_norm_epsilon": 1e-5,
            "auto_map": {
                "AutoConfig": "configuration_RW.RWConfig",
                "AutoModelForCausalLM": "modelling_RW.RWForCausalLM",
            },
        }
    )
    rw.update(
        hidden_size=config["hidden_size"],
        n_head=config["num_attention_heads"],
        n_layer=config["num_hidden_layers"],
        vocab_size=config["vocab_size"],
        bos_token_id=0,
        eos_token_id=0,
    )
    (folder / "config.json").write_text(json.dumps(rw))
    outputs = convert(
        ConvertRequest(str(folder), tmp_path / "out", quants=(), outtype="f32", name="rw"), lock=tmp_path / "lock"
    )
    llm = llama_cpp.Llama(str(outputs[0].path), n_ctx=64, logits_all=True, verbose=False, type_k=0, type_v=0)
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    llm.close()
    assert np.abs(got - reference).max() < 1e-3
    info = gguf.GGUFReader(outputs[0].path)
    assert info.fields["falcon.attention.head_count_kv"].contents() == 1


@pytest.mark.parametrize(
    "raw, name",
    [
        ("My model-f32", "My-model-f32"),
        ("story (v2) ✨", "story-v2"),
        ("..hidden", "hidden"),
        ("日本語", "model"),
        ("gpt2", "gpt2"),
    ],
)
def test_any_folder_name_gives_a_usable_model_name(raw, name):
    from talesmith.runtime.models.lockfile import check_name

    assert usable_name(raw) == name
    check_name(usable_name(raw))


@pytest.mark.parametrize(
    "spec, hub",
    [
        ("distilgpt2", True),
        ("gpt2", True),
        ("bert-base-uncased", True),
        ("EleutherAI/gpt-j-6B", True),
        ("a/b/c", False),
        ("./x", False),
        ("/abs/path", False),
        ("..", False),
        ("~/models", False),
    ],
)
def test_owner_less_hub_ids(spec, hub):
    assert is_hub_id(spec) is hub


def run_cli(*args, env=None):
    import os

    return subprocess.run(
        [sys.executable, "-m", "talesmith.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {}), "COLUMNS": "80"},
    )


def test_a_folder_with_spaces_converts_and_the_table_shows_file_names_at_80_columns(tmp_path):
    folder = make_model("gpt2", tmp_path / "My model")
    out = tmp_path / ("a-rather-long-output-folder-name-" * 3) / "out"
    result = run_cli("convert", folder, "-o", out, "--quant", "Q8_0", "--lock", tmp_path / "models.lock")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"in {out}:"  # the folder once, whole, so that it can be copied
    assert max(len(line) for line in lines[1:]) <= 80
    assert "My-model-f16.gguf" in result.stdout and "My-model-Q8_0.gguf" in result.stdout


def test_an_owner_less_hub_id_is_fetched_from_the_hub(tmp_path):
    from hub_server import HubServer, Repo

    folder = make_model("gpt2", tmp_path / "src")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    server = HubServer().start()
    try:
        server.add(Repo("distilgpt2", files, lfs={"model.safetensors"}))
        env = {
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "HF_HUB_OFFLINE": "0",
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "talesmith.cli.main",
                "convert",
                "distilgpt2",
                "--revision",
                "main",
                "-o",
                tmp_path / "out",
                "--quant",
                "",
                "--lock",
                tmp_path / "models.lock",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**__import__("os").environ, **env},
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out" / "distilgpt2-f16.gguf").exists()
    finally:
        server.stop()
    unreachable = run_cli(
        "convert",
        "distilgpt2",
        "-o",
        tmp_path / "out2",
        env={
            "HF_ENDPOINT": "http://127.0.0.1:9",
            "HF_HOME": str(tmp_path / "hf2"),
            "HF_HUB_OFFLINE": "0",
            "NO_PROXY": "127.0.0.1,localhost",
        },
    )
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    line = " ".join(unreachable.stderr.split())
    assert line.startswith("error: cannot reach the hub at http://127.0.0.1:9 for distilgpt2")
    assert line.endswith("(there is no local folder named distilgpt2, so it was taken as a hub repo id)")
