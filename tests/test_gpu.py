"""CUDA paths: llama.cpp layer offload and the LoRA merge on the GPU. Skipped without a CUDA GPU.

torch and a CUDA build of llama.cpp each bring their own CUDA libraries, so nothing CUDA runs in the
test process itself: building, converting, decoding and merging each run in a child process with
faulthandler on, so that a crash fails its test with the child's stack instead of killing pytest
(bench/gpu_check.sh also runs each test in a process of its own).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.gpu
needs_offload = pytest.mark.skipif(
    not llama_cpp.llama_supports_gpu_offload(), reason="llama-cpp-python built without GPU support"
)
TESTS = Path(__file__).parent


def python(code: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=TESTS,
    )
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr[-3000:]}"
    return result.stdout


GREEDY = """
import json, sys
from talesmith.runtime.engine.generate import collect, stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.settings import SamplingSettings
backend = LlamaCppBackend(sys.argv[1], n_ctx=128, gpu_layers=int(sys.argv[2]))
settings = SamplingSettings(temperature=0, max_new_tokens=24, min_new_tokens=24)
print(json.dumps(list(collect(stream(backend, backend.tokenize("The storm had raged"), settings)).tokens)))
if sys.argv[3] == "close":
    backend.close()
"""


@pytest.fixture(scope="module")
def tiny_llama_gguf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    python(
        "import sys; from pathlib import Path; from tiny_models import make_model; "
        "make_model('llama', Path(sys.argv[1]))",
        str(tmp / "llama"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "convert",
            str(tmp / "llama"),
            "-o",
            str(tmp / "out"),
            "--quant",
            "",
            "--outtype",
            "f32",
            "--name",
            "llama",
            "--lock",
            str(tmp / "models.lock"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return tmp / "out" / "llama-f32.gguf"


@needs_offload
def test_offloaded_greedy_text_matches_the_cpu(tiny_llama_gguf):
    cpu = json.loads(python(GREEDY, str(tiny_llama_gguf), "0", "close"))
    gpu = json.loads(python(GREEDY, str(tiny_llama_gguf), "-1", "close"))
    assert len(cpu) == 24 and gpu == cpu


@needs_offload
def test_an_offloaded_model_left_open_exits_cleanly(tiny_llama_gguf):
    """The process ends with the model still loaded: it is freed before Python shuts down."""
    assert len(json.loads(python(GREEDY, str(tiny_llama_gguf), "-1", "leave-open"))) == 24


MERGE = """
import json, sys
from pathlib import Path
import numpy as np, torch
from tiny_models import make_lora, make_model
from talesmith.convert.lora import MergedWeights, read_adapter
from talesmith.convert.source import open_checkpoint
if not torch.cuda.is_available():
    print(json.dumps(None)); sys.exit()
tmp = Path(sys.argv[1])
base = make_model("gpt2", tmp / "gpt2")
adapter = read_adapter(make_lora("gpt2", base, tmp / "lora", seed=1, targets=["c_attn", "c_fc"]), 0.7)
ckpt, _ = open_checkpoint(base)
cpu, cuda = MergedWeights(ckpt, [adapter], device="cpu"), MergedWeights(ckpt, [adapter], device="cuda")
print(json.dumps({n: float(np.abs(cpu.get(n) - cuda.get(n)).max()) for n in cpu.merged_names}))
"""


def test_lora_merge_on_cuda_equals_the_cpu(tmp_path):
    diffs = json.loads(python(MERGE, str(tmp_path)))
    if diffs is None:
        pytest.skip("torch sees no CUDA GPU")
    assert len(diffs) == 4 and max(diffs.values()) < 1e-5
