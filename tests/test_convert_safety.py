"""Hostile and broken conversion inputs: no checkpoint code runs, and each case is one line and exit status 2."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from tiny_models import make_lora, make_model  # noqa: E402

from talesmith.convert.lora import read_adapter  # noqa: E402
from talesmith.convert.pipeline import ConvertRequest, Progress, convert  # noqa: E402
from talesmith.runtime.errors import ConversionError  # noqa: E402

TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]
EVIL_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n\nclass EvilConfig:\n    pass\n"


def run(*args, stdin=subprocess.DEVNULL):
    return subprocess.run(
        [*TALESMITH, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=stdin,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_model("gpt2", tmp_path_factory.mktemp("base") / "tiny-gpt2")


def copy_model(base, folder):
    folder.mkdir(parents=True)
    for f in base.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def evil_folder(base, tmp_path, *, where: str, model_type: str = "evilgpt"):
    """The checkpoint with a code file that writes a marker, asked for by config.json or tokenizer_config.json."""
    folder = copy_model(base, tmp_path / f"evil-{where}")
    marker = tmp_path / "MARKER"
    (folder / "configuration_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    (folder / "tokenization_evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    if where == "config":
        config = json.loads((folder / "config.json").read_text())
        config.update(
            model_type=model_type,
            architectures=["EvilForCausalLM"],
            auto_map={
                "AutoConfig": "configuration_evil.EvilConfig",
                "AutoModelForCausalLM": "configuration_evil.EvilConfig",
            },
        )
        (folder / "config.json").write_text(json.dumps(config))
    else:
        tok = json.loads((folder / "tokenizer_config.json").read_text())
        tok.update(
            tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
        )
        (folder / "tokenizer_config.json").write_text(json.dumps(tok))
    return folder, marker


@pytest.mark.parametrize("target", ["gguf", "onnx"])
@pytest.mark.parametrize("where", ["config", "tokenizer"])
def test_checkpoint_code_is_refused_in_one_line_without_a_prompt(base, tmp_path, where, target):
    folder, marker = evil_folder(base, tmp_path, where=where)
    for stdin in (subprocess.DEVNULL, None):  # closed stdin, and an open one that would answer a prompt
        result = run(
            "convert", folder, "-o", tmp_path / "out", "--to", target, "--lock", tmp_path / "models.lock", stdin=stdin
        )
        line = one_line_error(result)
        assert "never runs" in line and ("evilgpt" in line if where == "config" else "EvilTokenizer" in line)
        assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_config_messages_name_the_code_and_the_fix(base, tmp_path):
    folder, _ = evil_folder(base, tmp_path, where="config")
    with pytest.raises(ConversionError) as e:
        convert(ConvertRequest(str(folder), tmp_path / "out", targets=("gguf",)))
    assert str(e.value) == (
        f"{folder}/config.json asks for model_type 'evilgpt' (auto_map AutoConfig -> "
        f"configuration_evil.EvilConfig), which only the checkpoint's own code implements; "
        f"talesmith never runs checkpoint code: convert a supported architecture (GPT-2, GPT-J, "
        f"Llama, Falcon)"
    )


def test_an_auto_map_beside_a_known_model_type_is_ignored_with_a_note(base, tmp_path):
    """Falcon-7B-instruct's own config has an auto_map: the library's Falcon is used, its code never runs."""
    folder, marker = evil_folder(base, tmp_path, where="config", model_type="gpt2")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(config))
    progress = Progress()
    outputs = convert(
        ConvertRequest(str(folder), tmp_path / "out", quants=(), name="fine"), progress, lock=tmp_path / "models.lock"
    )
    assert [o.kind for o in outputs] == ["F16"] and not marker.exists()
    assert progress.notes == [
        "evil-config/config.json asks for its own code (auto_map AutoConfig -> "
        "configuration_evil.EvilConfig); ignored: talesmith uses the library's own gpt2 and "
        "never runs a checkpoint's code"
    ]


def test_onnx_export_of_a_known_type_with_an_auto_map_runs_no_code(base, tmp_path):
    pytest.importorskip("optimum.exporters.onnx")
    folder, marker = evil_folder(base, tmp_path, where="config", model_type="gpt2")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (folder / "config.json").write_text(json.dumps(config))
    outputs = convert(
        ConvertRequest(str(folder), tmp_path / "out", targets=("onnx",), onnx_quants=("fp32",), name="fine"),
        lock=tmp_path / "models.lock",
    )
    assert [o.kind for o in outputs] == ["ONNX-FP32"] and not marker.exists()


def test_falcon_old_layout_is_refused_for_onnx_only(tmp_path):
    folder = make_model("falcon-7b", tmp_path / "rw")
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="RefinedWebModel",
        architectures=["RWForCausalLM"],
        auto_map={"AutoConfig": "configuration_RW.RWConfig"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="RefinedWebModel.*convert to GGUF"):
        convert(ConvertRequest(str(folder), tmp_path / "out", targets=("onnx",)))


def write_safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


HOSTILE_HEADERS = {
    "a list": ([1, 2, 3], "corrupt header (a JSON list, not an object)"),
    "a string": ("weights", "corrupt header (a JSON str, not an object)"),
    "no data_offsets": ({"w": {"dtype": "F32", "shape": [2]}}, "tensor 'w' lacks a valid dtype, shape or data_offsets"),
    "a non-object entry": ({"w": [0, 8]}, "tensor 'w' lacks a valid dtype, shape or data_offsets"),
    "offsets past the end": (
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}},
        "is truncated: 'w' ends at byte 800 of its data but the file holds 8",
    ),
    "negative shape": ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "lacks a valid dtype"),
}


@pytest.mark.parametrize("case", HOSTILE_HEADERS)
def test_hostile_safetensors_headers(base, tmp_path, case):
    folder = copy_model(base, tmp_path / "ckpt")
    header, expected = HOSTILE_HEADERS[case]
    write_safetensors(folder / "model.safetensors", header, b"\0" * 8)
    before = (folder / "model.safetensors").read_bytes()
    line = one_line_error(run("convert", folder, "-o", tmp_path / "out", "--lock", tmp_path / "models.lock"))
    assert expected in line and str(folder / "model.safetensors") in line
    assert (folder / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[1, 2]", "config.json holds a JSON list, not an object"),
        ('"gpt2"', "config.json holds a JSON str, not an object"),
        ("{not json", "config.json is not valid JSON"),
    ],
)
def test_config_that_is_not_an_object(base, tmp_path, content, expected):
    folder = copy_model(base, tmp_path / "ckpt")
    (folder / "config.json").write_text(content)
    assert expected in one_line_error(run("convert", folder, "-o", tmp_path / "out"))


def test_random_bytes_as_pytorch_model_bin_never_traceback(base, tmp_path):
    import random

    folder = copy_model(base, tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    rng = random.Random(7)
    for _i in range(40):
        (folder / "pytorch_model.bin").write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))))
        with pytest.raises(ConversionError) as e:
            convert(ConvertRequest(str(folder), tmp_path / "out"))
        assert "pytorch_model.bin" in str(e.value) and "\n" not in str(e.value)
        assert "full unpickling" not in str(e.value)


def test_a_pickle_that_needs_code_is_still_named_as_such(base, tmp_path):
    folder = copy_model(base, tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2), "extra": ValueError("runs code")}, folder / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="needs full unpickling"):
        convert(ConvertRequest(str(folder), tmp_path / "out"))


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    return make_lora("gpt2", base, tmp_path_factory.mktemp("lora") / "lora", seed=1, targets=["c_attn"])


def broken_adapter(adapter, tmp_path, *, config=None, tensors=None, raw_bin=None):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    folder.mkdir()
    data = json.loads((adapter / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config(data) if config else data))
    state = load_file(adapter / "adapter_model.safetensors")
    if raw_bin is not None:
        (folder / "adapter_model.bin").write_bytes(raw_bin)
    else:
        save_file(tensors(state) if tensors else state, folder / "adapter_model.safetensors")
    return folder


def _lora_keys(state, letter):
    return [k for k in state if f"lora_{letter}" in k]


def _first_a_1d(state):
    key = _lora_keys(state, "A")[0]
    return {**state, key: state[key][0].contiguous()}


def _rank_mismatch(state):
    key = _lora_keys(state, "B")[0]
    return {**state, key: state[key][:, :2].contiguous()}


ADAPTER_CASES = {
    "r 0": (dict(config=lambda c: {**c, "r": 0}), "adapter_config.json: r is 0; it must be a whole number above 0"),
    "string r": (dict(config=lambda c: {**c, "r": "4"}), "r is '4'; it must be a whole number above 0"),
    "string alpha": (dict(config=lambda c: {**c, "lora_alpha": "8"}), "lora_alpha is '8'; it must be a number"),
    "list config": (dict(config=lambda c: [c]), "adapter_config.json holds a JSON list, not an object"),
    "1-D tensor": (dict(tensors=_first_a_1d), "LoRA weights are matrices (2-D)"),
    "A/B rank mismatch": (dict(tensors=_rank_mismatch), "has lora_A of rank 4 but lora_B of rank 2"),
    "truncated .bin": (dict(raw_bin=b"PK\x03\x04" + b"\0" * 20), "could not be read as PyTorch adapter"),
    "random .bin": (dict(raw_bin=bytes(range(256)) * 3), "not a PyTorch adapter file"),
}


@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_broken_adapters(adapter, tmp_path, case):
    kwargs, expected = ADAPTER_CASES[case]
    folder = broken_adapter(adapter, tmp_path, **kwargs)
    with pytest.raises(ConversionError) as e:
        read_adapter(folder)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_broken_adapter_through_the_cli(base, adapter, tmp_path):
    folder = broken_adapter(adapter, tmp_path, config=lambda c: {**c, "r": 0})
    line = one_line_error(run("convert", base, "-o", tmp_path / "out", "--lora", folder))
    assert (
        line == f"error: {folder}/adapter_config.json: r is 0; it must be a whole number above 0 (fix the file "
        f"or train the adapter again)"
    )


def test_an_adapter_of_another_base_is_merged_with_a_warning_naming_both(base, adapter, tmp_path):
    folder = broken_adapter(adapter, tmp_path, config=lambda c: {**c, "base_model_name_or_path": "gpt2-medium"})
    result = run(
        "convert", base, "-o", tmp_path / "out", "--lora", folder, "--quant", "", "--lock", tmp_path / "models.lock"
    )
    assert result.returncode == 0, result.stderr
    assert f"note: adapter broken was trained on 'gpt2-medium' but is merged into '{base}'" in " ".join(
        result.stderr.split()
    )


def test_a_tokenizer_folder_asking_for_code_is_refused_too(base, tmp_path):
    folder, marker = evil_folder(base, tmp_path, where="config")
    with pytest.raises(ConversionError, match="asks for model_type 'evilgpt'"):
        convert(ConvertRequest(str(base), tmp_path / "out", tokenizer=str(folder), targets=("onnx",)))
    assert not marker.exists()
