"""Parallel sequences on ONNX Runtime, tested as llama.cpp's are: each row of a batch is its prompt decoded alone
(greedy rows token for token), banned phrases rewind one row only, samples of one prompt share its evaluation,
batch records resume to the uninterrupted bytes, and the server's slots decode ONNX requests together."""

import json
import re

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

from tiny_models import make_model  # noqa: E402

from talesmith.convert.pipeline import ConvertRequest, convert  # noqa: E402
from talesmith.runtime.engine.generate import collect, stream  # noqa: E402
from talesmith.runtime.engine.loading import parallel_decoder  # noqa: E402
from talesmith.runtime.engine.ort import OnnxBackend  # noqa: E402
from talesmith.runtime.engine.ort_parallel import SHORT, OnnxParallelDecoder  # noqa: E402
from talesmith.runtime.engine.slots import ParallelJob, SlotEngine  # noqa: E402
from talesmith.runtime.settings import SamplingSettings  # noqa: E402

pytest_plugins = ["cli_fakes"]  # run_cli

PROMPTS = [
    "Once upon a time",
    "The storm had raged for three days when the knock came",
    "A dragon",
    "When a traveler in north central Massachusetts takes the wrong fork",
    "Tim",
]
GREEDY = SamplingSettings(temperature=0, max_new_tokens=10)
LONGER = [
    "A knight rode out at dawn",
    "My grandmother kept bees",
    "The old mill stood silent",
    "Two foxes met by a river",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-parallel")
    found = {}
    for kind in ("llama", "gpt2"):  # rotary positions; learned positions (a table the positions index)
        outputs = convert(
            ConvertRequest(
                str(make_model(kind, root / kind)), root / "out", targets=("onnx",), onnx_quants=("fp32", "int4")
            ),
            lock=root / "models.lock",
        )
        for o in outputs:
            found[(kind, o.kind.split("-")[1].lower())] = o.path
    return found


def alone(backend, jobs):
    out = []
    for job in jobs:
        backend.reset()
        out.append(collect(stream(backend, job.tokens, job.settings, stops=job.stops)))
    return out


def together(backend, jobs, n_seq):
    decoder = parallel_decoder(backend, n_seq)
    assert isinstance(decoder, OnnxParallelDecoder)
    try:
        done = dict(decoder.generate(jobs))
        return [done[i] for i in range(len(jobs))], decoder.steps
    finally:
        decoder.close()


@pytest.mark.parametrize("kind,quant", [("llama", "fp32"), ("llama", "int4"), ("gpt2", "fp32")])
def test_each_greedy_row_is_its_prompt_decoded_alone(models, kind, quant):
    backend = OnnxBackend(models[(kind, quant)], n_ctx=64)
    tokens = [backend.tokenize(p) for p in PROMPTS]
    jobs = [
        ParallelJob(tokens[0], GREEDY.replace(max_new_tokens=4)),  # finishes first: its slot takes job 3
        ParallelJob(tokens[1], GREEDY),
        ParallelJob(tokens[2], GREEDY.replace(max_new_tokens=14)),
        ParallelJob(tokens[3], GREEDY, stops=("e",)),
        ParallelJob(tokens[4], GREEDY.replace(max_new_tokens=7, min_new_tokens=7)),
    ]
    expected = alone(backend, jobs)
    got, steps = together(backend, jobs, 3)
    assert [c.tokens for c in got] == [c.tokens for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in expected]
    assert steps < sum(len(c.tokens) + 1 for c in expected)  # rows shared their steps
    backend.close()


@pytest.mark.parametrize(
    "kind,quant,texts,runs",
    [
        # four short prompts of close lengths: one padded run (the two shorter ones leave their last token to the
        # single-token run), then one run per token for the four rows; the fifth prompt starts alone
        ("llama", "int4", ["A knight at dawn", "The mill stood", "Bees in June", "Snow on roofs", "Two foxes met"], 2),
        ("gpt2", "fp32", ["A knight at dawn", "The mill stood", "Bees in June", "Snow on roofs", "Two foxes met"], 2),
        # prompts longer than SHORT tokens are evaluated alone (as cheap per token on the CPU)
        ("llama", "fp32", [*LONGER, "Rain fell on the harbour"], 4),
    ],
)
def test_short_prompts_of_empty_rows_are_evaluated_in_one_run_and_match_each_prompt_alone(
    models, kind, quant, texts, runs
):
    """Each greedy row is its prompt decoded alone, whether its prompt ran with others or alone."""
    backend = OnnxBackend(models[(kind, quant)], n_ctx=64)
    prompts = [backend.tokenize(p) for p in texts]
    width = max(len(p) for p in prompts[:4])
    assert len({len(p) for p in prompts[:4]}) > 1 and 4 * width * 3 / 4 <= sum(len(p) for p in prompts[:4])
    assert (width <= SHORT) == (runs == 2)
    k = 6
    jobs = [ParallelJob(p, GREEDY.replace(max_new_tokens=k, min_new_tokens=k)) for p in prompts]
    expected = alone(backend, jobs)
    got, steps = together(backend, jobs, 4)
    assert [c.tokens for c in got] == [c.tokens for c in expected]
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.timing.prompt_evaluated for c in got] == [len(p) for p in prompts]
    assert steps == runs + k + 1 + k  # the four prompts, k runs of four rows; the fifth prompt, k runs
    backend.close()


WORD = re.compile(r"(?<![\w\ufffd])[A-Za-z]{2,}(?![\w\ufffd])")
"""A whole word in a tiny model's text, away from bytes that are not UTF-8 (banned phrases match whole words)."""


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_banned_phrases_rewind_their_own_rows_only(models, kind):
    backend = OnnxBackend(models[(kind, "fp32")], n_ctx=64)
    tokens = [backend.tokenize(p) for p in PROMPTS]
    free = [c.text for c in alone(backend, [ParallelJob(t, GREEDY) for t in tokens])]
    words = [m.group() if (m := WORD.search(text)) else None for text in free]
    assert any(words)
    jobs = [ParallelJob(t, GREEDY.replace(banned=(w,) if w else ())) for t, w in zip(tokens, words, strict=True)]
    expected = alone(backend, jobs)
    got, _ = together(backend, jobs, 2)
    assert [c.tokens for c in got] == [c.tokens for c in expected]
    for completion, word, text in zip(got, words, free, strict=True):
        assert (completion.text != text) if word else (completion.text == text)
        assert not word or word not in WORD.findall(completion.text)
    backend.close()


def test_sampled_rows_are_deterministic_and_follow_their_seeds(models):
    backend = OnnxBackend(models[("llama", "fp32")], n_ctx=64)
    settings = SamplingSettings(temperature=0.9, top_p=0.95, repetition_penalty=1.1, max_new_tokens=12)
    jobs = [ParallelJob(backend.tokenize(p), settings.replace(seed=i)) for i, p in enumerate(PROMPTS)]
    first, _ = together(backend, jobs, 2)
    second, _ = together(backend, jobs, 2)
    assert [c.tokens for c in first] == [c.tokens for c in second]
    assert [c.seed for c in first] == list(range(len(PROMPTS)))
    reseeded, _ = together(backend, [ParallelJob(j.tokens, j.settings.replace(seed=99)) for j in jobs], 2)
    assert [c.tokens for c in reseeded] != [c.tokens for c in first]
    backend.close()


def test_samples_of_one_prompt_evaluate_it_once(models):
    backend = OnnxBackend(models[("llama", "fp32")], n_ctx=64)
    prompt = backend.tokenize(PROMPTS[3])
    assert len(prompt) > 16
    jobs = [ParallelJob(prompt, GREEDY.replace(max_new_tokens=5 + i)) for i in range(3)]
    got, _ = together(backend, jobs, 3)
    assert [c.timing.prompt_evaluated for c in got] == [len(prompt), 1, 1]  # copied from the first row
    assert [c.tokens for c in got] == [c.tokens for c in alone(backend, jobs)]
    backend.close()


def test_batch_parallel_on_onnx_resumes_to_the_uninterrupted_bytes(models, run_cli, tmp_path):
    rows = tmp_path / "in.csv"
    rows.write_text("id,prompt\n" + "".join(f"r{i},{p}\n" for i, p in enumerate(PROMPTS)), encoding="utf-8")
    model = models[("llama", "int4")]
    args = ("-m", model, "-n", "2", "--seed", "7", "--max-new-tokens", "8", "--parallel", "3", "--ctx", "64")
    whole = tmp_path / "whole.jsonl"
    result = run_cli("batch", rows, "-o", whole, *args)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in whole.read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in records] == [(f"r{i}", s) for i in range(5) for s in range(2)]
    out = tmp_path / "out.jsonl"
    for cut in (0.3, 0.7):  # killed mid-record
        assert run_cli("batch", rows, "-o", out, *args).returncode == 0
        data = out.read_bytes()
        out.write_bytes(data[: int(len(data) * cut)])
        assert run_cli("batch", rows, "-o", out, *args).returncode == 0
        assert out.read_bytes() == whole.read_bytes()
        out.unlink()
        (tmp_path / "out.jsonl.run.json").unlink(missing_ok=True)


def test_generate_n_parallel_on_onnx(models, run_cli):
    model = models[("gpt2", "fp32")]
    args = ("generate", "-m", model, "--json", "--temperature", "0", "--max-new-tokens", "6", "--ctx", "64")
    one = run_cli(*args, "Once upon a time")
    assert one.returncode == 0, one.stderr
    three = run_cli(*args, "-n", "3", "--parallel", "3", "Once upon a time")
    assert three.returncode == 0, three.stderr
    samples = [json.loads(line) for line in three.stdout.splitlines()]
    assert len(samples) == 3 and {s["text"] for s in samples} == {json.loads(one.stdout)["text"]}


def test_server_slots_decode_onnx_requests_together_and_keep_their_caches(models):
    backend = OnnxBackend(models[("llama", "fp32")], n_ctx=64)
    tokens = [backend.tokenize(p) for p in PROMPTS[:3]]
    expected = [collect(stream(backend, t, GREEDY)) for t in tokens]
    engine = SlotEngine(OnnxParallelDecoder(backend, 2))
    engine.start()
    try:
        tickets = [engine.submit(t, GREEDY) for t in tokens]  # three requests, two slots
        got = [collect(iter(t)) for t in tickets]
        assert [c.tokens for c in got] == [c.tokens for c in expected]
        again = tokens[1] + list(got[1].tokens)  # the next turn of request 1's conversation
        turn = collect(iter(engine.submit(again, GREEDY)))
        assert turn.timing.prompt_evaluated == 1  # only the last token: the rest was still in its slot
        assert engine.decoder.steps > 0
    finally:
        engine.close()
        backend.close()


def test_a_folder_converted_before_the_shared_kv_buffer_is_refused_in_one_line(models, tmp_path):
    """A graph whose cache grows by concatenation (logits at every position) cannot share one buffer: convert again."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from talesmith.runtime.errors import ModelError

    folder = tmp_path / "old-onnx"
    shutil.copytree(models[("gpt2", "fp32")], folder)
    (folder / "model.onnx_data").unlink()
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    past = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["batch", 1, "past", 2])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 4])
    present = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, ["batch", 1, "total", 2])
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["as_float", "last"], ["column"]),
        helper.make_node("Expand", ["column", "width"], ["logits"]),
        helper.make_node("Concat", ["past_key_values.0.key", "past_key_values.0.key"], ["present.0.key"], axis=2),
    ]
    constants = [
        helper.make_tensor("last", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("width", TensorProto.INT64, [3], [1, 1, 4]),
    ]
    graph = helper.make_graph(nodes, "old", [ids, past], [logits, present], constants)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), folder / "model.onnx"
    )
    with pytest.raises(ModelError) as info:
        OnnxBackend(folder, n_ctx=64)
    assert str(info.value) == (
        f"{folder / 'model.onnx'} was not written by this version of `talesmith convert --to onnx` "
        f"(its KV cache is not one shared buffer); convert the model again"
    )
