"""The streaming ONNX builder: weights written in slices (same bytes whatever the slice), kept outside
model.onnx, LoRA merged into GPT-J's and Falcon's fused/permuted projections, rows of one shared KV cache, the memory
estimate and the one-line refusal before anything is written."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

from tiny_models import SAMPLE_TEXTS, make_lora, make_model  # noqa: E402

from talesmith.convert import onnx_graph, onnx_memory  # noqa: E402
from talesmith.convert.pipeline import ConvertRequest, convert  # noqa: E402
from talesmith.runtime.engine.ort_session import RowCache  # noqa: E402
from talesmith.runtime.errors import ConversionError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-build")
    return {kind: make_model(kind, root / kind) for kind in ("gptj", "llama", "falcon-7b")}


def to_onnx(folder, out, quants, **kw):
    return {
        o.kind: o
        for o in convert(
            ConvertRequest(str(folder), out, targets=("onnx",), onnx_quants=quants, name=kw.pop("name", "m"), **kw),
            lock=out / "models.lock",
        )
    }


def test_slices_write_the_same_bytes_as_whole_tensors(tiny, tmp_path, monkeypatch):
    whole = to_onnx(tiny["gptj"], tmp_path / "whole", ("fp32", "int4"))
    monkeypatch.setattr(onnx_graph, "CHUNK_BYTES", 512)  # many slices per tensor, rows and columns
    sliced = to_onnx(tiny["gptj"], tmp_path / "sliced", ("fp32", "int4"))
    for kind in ("ONNX-FP32", "ONNX-INT4"):
        a = (whole[kind].path / "model.onnx_data").read_bytes()
        b = (sliced[kind].path / "model.onnx_data").read_bytes()
        assert len(a) > 100_000 and a == b


def test_weights_live_in_the_data_file_aligned(tiny, tmp_path):
    import onnx

    outs = to_onnx(tiny["llama"], tmp_path, ("int8", "int4"))
    out = outs["ONNX-INT4"]
    model = onnx.load(str(out.path / "model.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inline = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    # weights and scales: 5 projections (Q, K, V as one) x 2 layers, the head, the embeddings
    assert len(external) >= 2 * 5 * 2 + 2
    assert all(len(t.raw_data) <= onnx_graph.INLINE_BYTES for t in inline)
    offsets = [int(next(e.value for e in t.external_data if e.key == "offset")) for t in external]
    assert all(o % onnx_graph.ALIGN == 0 for o in offsets) and len(set(offsets)) == len(offsets)
    embed = next(t for t in external if t.name == "embed_tokens_Q4")  # 4-bit rows for GatherBlockQuantized
    assert embed.data_type == onnx.TensorProto.UINT8 and embed.dims[1] == 64 // 2  # hidden 64, two values a byte
    int8 = onnx.load(str(outs["ONNX-INT8"].path / "model.onnx"), load_external_data=False)
    assert next(t for t in int8.graph.initializer if t.name == "embed_tokens").data_type == onnx.TensorProto.FLOAT16
    assert (out.path / "model.onnx").stat().st_size < 100_000


def test_larger_int4_blocks_are_fewer_scales_and_a_little_less_exact(tiny, tmp_path):
    """int4-b64 and int4-b128 quantize blocks of 64 and 128 weights (int4: 32), in every MatMulNBits and the
    4-bit embedding rows where the hidden size divides into them: fewer scales."""
    import onnx

    outs = to_onnx(tiny["llama"], tmp_path, ("fp32", "int4", "int4-b64", "int4-b128"))
    ids = transformers.AutoTokenizer.from_pretrained(tiny["llama"])(SAMPLE_TEXTS["english"])["input_ids"]
    fp32 = _run(outs["ONNX-FP32"].path, ids)
    scales = {}
    for quant, block in (("int4", 32), ("int4-b64", 64), ("int4-b128", 128)):
        out = outs[f"ONNX-{quant.upper()}"]
        assert f"MatMulNBits (4-bit, blocks of {block})" in out.detail
        model = onnx.load(str(out.path / "model.onnx"), load_external_data=False)
        blocks = {(node.op_type, a.i) for node in model.graph.node for a in node.attribute if a.name == "block_size"}
        gather = {("GatherBlockQuantized", block)} if 64 % block == 0 else set()  # hidden size 64
        assert blocks == {("MatMulNBits", block)} | gather, quant
        scales[quant] = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.name.endswith("_scales"))
        logits = _run(out.path, ids)
        assert (logits.argmax(1) == fp32.argmax(1)).mean() >= 0.6, quant
    assert scales["int4"] > scales["int4-b64"] > scales["int4-b128"]
    with pytest.raises(ConversionError, match="unknown ONNX quantization 'int4-b256'"):
        to_onnx(tiny["llama"], tmp_path / "bad", ("int4-b256",))


def test_larger_int4_blocks_multiply_a_little_less_exactly(tmp_path):
    """One projection (1024 inputs, 256 outputs) through ONNX Runtime: the larger the block, the further its
    products from the float32 ones (every 4-bit step is a larger block's largest weight / 7)."""
    import onnx
    from onnx import TensorProto

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((256, 1024)).astype(np.float32)
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    exact = x @ weight.T
    errors = {}
    for quant in ("int4", "int4-b64", "int4-b128", "int8"):
        data = onnx_graph.DataFile(tmp_path / f"{quant}.onnx_data")
        g = onnx_graph.Graph(data)
        y = onnx_graph.linear(g, g.input("x", TensorProto.FLOAT, [8, 1024]), weight, None, name="w", quant=quant)
        g.output(y, TensorProto.FLOAT, [8, 256])
        data.close()
        onnx.save_model(g.model(), str(tmp_path / f"{quant}.onnx"))
        session = ort.InferenceSession(str(tmp_path / f"{quant}.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x})[0]
        errors[quant] = float(np.sqrt(((got - exact) ** 2).mean() / (exact**2).mean()))
    assert errors["int8"] < errors["int4"] < errors["int4-b64"] < errors["int4-b128"] < 0.2, errors


@pytest.mark.parametrize(
    "kind,targets", [("gptj", ["q_proj", "v_proj", "fc_in"]), ("falcon-7b", ["query_key_value", "dense_4h_to_h"])]
)
def test_lora_merged_into_permuted_and_fused_projections_equals_peft(kind, targets, tiny, tmp_path):
    from peft import PeftModel

    adapter = make_lora(kind, tiny[kind], tmp_path / "lora", seed=5, targets=targets)
    out = to_onnx(tiny[kind], tmp_path / "out", ("fp32", "int4"), loras=((adapter, 1.0),))
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny[kind])
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
    ids = transformers.AutoTokenizer.from_pretrained(tiny[kind])(SAMPLE_TEXTS["english"])["input_ids"]
    with torch.no_grad():
        ref = merged(torch.tensor([ids])).logits[0].numpy()
    got = _run(out["ONNX-FP32"].path, ids)
    assert np.abs(got - ref).max() < 1e-4
    assert "MatMulNBits (4-bit, blocks of 32)" in out["ONNX-INT4"].detail


def _run(folder, ids):
    """Logits at every position: the tokens one at a time through the graph's in-place KV cache."""
    cache = RowCache(folder, rows=1, positions=len(ids), device="cpu", threads=2)
    rows = [cache.prefill(0, [token]).copy() for token in ids]
    cache.close()
    return np.stack(rows)


@pytest.mark.parametrize("kind", ["gptj", "llama", "falcon-7b"])
def test_rows_of_different_lengths_in_one_run_match_each_prompt_alone(kind, tiny, tmp_path):
    """The KV cache is one buffer per layer, written in place: each row at its own length, rewound by its length alone,
    and a row between the decoding ones (not decoding) keeps what it holds."""
    folder = to_onnx(tiny[kind], tmp_path, ("fp32",))["ONNX-FP32"].path
    ids = transformers.AutoTokenizer.from_pretrained(tiny[kind])(SAMPLE_TEXTS["english"])["input_ids"]
    alone = _run(folder, ids)
    cache = RowCache(folder, rows=3, positions=len(ids), device="cpu", threads=2)
    assert np.abs(cache.prefill(0, ids[:4]) - alone[3]).max() < 1e-5  # a prompt in one run
    cache.prefill(1, ids[:2])
    cache.prefill(2, ids[:7])
    cache.truncate(2, 5)  # a rewind: row 2 goes back to 5 tokens, nothing else changes
    rows = {0: 4, 2: 5}
    for _ in range(4):
        cache.decode({row: ids[n] for row, n in rows.items()})  # row 1 sits between them, not decoding
        for row, n in rows.items():
            assert np.abs(cache.logits[row, 0] - alone[n]).max() < 1e-5, (row, n)
            rows[row] = n + 1
    assert cache.lengths == [8, 2, 9]
    assert np.abs(cache.prefill(1, ids[2:6]) - alone[5]).max() < 1e-5  # row 1's cache was left as it was
    cache.close()


@pytest.mark.parametrize("kind", ["gptj", "llama", "falcon-7b"])
def test_prompts_of_several_rows_in_one_padded_run_match_each_prompt_alone(kind, tiny, tmp_path):
    """Empty rows evaluate prompts of different lengths in one run, right-padded to the longest: the longest rows
    get their logits, every row's cache holds its own tokens (what it decodes next matches the tokens alone), and
    an empty row in the range that is not listed stays empty. Rows that hold tokens are refused."""
    folder = to_onnx(tiny[kind], tmp_path, ("fp32",))["ONNX-FP32"].path
    ids = transformers.AutoTokenizer.from_pretrained(tiny[kind])(SAMPLE_TEXTS["english"])["input_ids"]
    alone = _run(folder, ids)
    cache = RowCache(folder, rows=4, positions=len(ids), device="cpu", threads=2)
    full = cache.prefill_rows({0: ids[:4], 1: ids[:6], 3: ids[:3]})  # row 2 sits between them
    assert full == [1] and cache.lengths == [4, 6, 0, 3]
    assert np.abs(cache.logits[1, 0] - alone[5]).max() < 1e-5
    rows = {0: 4, 1: 6, 3: 3}
    for _ in range(3):
        cache.decode({row: ids[n] for row, n in rows.items()})
        for row, n in rows.items():
            assert np.abs(cache.logits[row, 0] - alone[n]).max() < 1e-5, (row, n)
            rows[row] = n + 1
    assert np.abs(cache.prefill(2, ids[:5]) - alone[4]).max() < 1e-5
    with pytest.raises(ValueError, match="not all empty"):
        cache.prefill_rows({0: ids[:2], 1: ids[:2]})
    cache.close()


def test_unsupported_variants_are_refused_before_anything_is_written(tiny, tmp_path):
    import json

    for kind, change, message in (
        ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling"),
        ("falcon-7b", {"alibi": True}, "ALiBi"),
        ("falcon-7b", {"apply_residual_connection_post_layernorm": True}, "post_layernorm"),
    ):
        folder = tmp_path / f"{kind}-{message}"
        shutil.copytree(tiny[kind], folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ConversionError, match=message):
            to_onnx(folder, tmp_path / "out", ("int4",))
        assert not list((tmp_path / "out").glob("*onnx*"))


def test_too_little_memory_is_one_line_before_anything_is_written(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_memory, "available_memory", lambda: 300 * 10**6)
    with pytest.raises(ConversionError) as info:
        to_onnx(tiny["llama"], tmp_path / "out", ("int4",), name="small")
    text = str(info.value)
    assert "\n" not in text and "needs about 0.8 GB of memory at its peak but only 0.3 GB is available" in text
    assert not (tmp_path / "out").exists()


def test_estimate_counts_the_largest_tensor_at_its_stored_width():
    shapes = {"wte": (50400, 4096), "q": (4096, 4096), "fc_in": (16384, 4096)}

    def ckpt(dtype):
        return SimpleNamespace(
            config={"torch_dtype": dtype}, names=lambda: list(shapes), shape=shapes.__getitem__, folder=Path("gptj-6b")
        )

    fixed = onnx_memory.BASELINE_BYTES + 3 * onnx_graph.CHUNK_BYTES
    assert onnx_memory.estimate_peak(ckpt("float16")) == fixed + 50400 * 4096 * 2
    assert onnx_memory.estimate_peak(ckpt("bfloat16")) == fixed + 50400 * 4096 * 6  # widened to float32 beside it
    assert onnx_memory.estimate_peak(ckpt("float32")) == fixed + 50400 * 4096 * 4
    # an adapter merged into fc_in: the stored tensor, its float32 copy, the delta and its scaled copy
    assert onnx_memory.estimate_peak(ckpt("float16"), merged={"fc_in"}) == fixed + 16384 * 4096 * 14
    with pytest.raises(ConversionError, match="only 1.0 GB is available"):
        onnx_memory.check_fits(SimpleNamespace(ckpt=ckpt("float16"), merged_names=set()), available=10**9)
    weights = SimpleNamespace(ckpt=ckpt("float16"), merged_names=set())
    assert onnx_memory.check_fits(weights, available=2 * 10**9) == fixed + 50400 * 4096 * 2


@pytest.mark.parametrize("kind", ["gptj", "llama", "falcon-7b"])
def test_source_tensors_are_released_as_the_graph_is_written(kind, tiny, tmp_path, monkeypatch):
    """What keeps memory flat at any size: what is held at once never passes the largest single tensor
    (here the embeddings or the head), while the whole checkpoint is several times that."""
    import weakref

    from talesmith.convert import lora

    live: list = []
    most, total, largest = [0], [0], [0]
    get = lora.MergedWeights.get

    def spy(self, name):
        array = get(self, name)
        live[:] = [(r, n) for r, n in live if r() is not None]
        most[0] = max(most[0], sum(n for _, n in live) + array.nbytes)
        total[0] += array.nbytes
        largest[0] = max(largest[0], array.nbytes)
        live.append((weakref.ref(array), array.nbytes))
        return array

    monkeypatch.setattr(lora.MergedWeights, "get", spy)
    to_onnx(tiny[kind], tmp_path, ("int4",))
    assert most[0] <= largest[0] * 1.1 and total[0] > 4 * largest[0]
