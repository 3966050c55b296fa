"""Parallel sequences on the bundled model: one llama_decode per step, each sequence its own loop, same command same output."""

import json
import subprocess
import sys

import pytest

from talesmith.runtime.batch import OutputFile, RecordSpec, plan_batch, read_rows, run_batch
from talesmith.runtime.batch_output import read_records
from talesmith.runtime.batch_parallel import ParallelExecutor, groups
from talesmith.runtime.engine.generate import collect, stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.engine.parallel import ParallelDecoder, ParallelJob
from talesmith.runtime.settings import SamplingSettings

pytestmark = pytest.mark.model
GREEDY = SamplingSettings(temperature=0, max_new_tokens=12, seed=1)
PROMPT = "The old lighthouse keeper climbed the stairs every night and"
TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]


@pytest.fixture(scope="module")
def small(bundled_path):
    backend = LlamaCppBackend(bundled_path, n_ctx=256)
    yield backend
    backend.close()


def decode(backend, jobs, n_seq):
    decoder = ParallelDecoder(backend, n_seq)
    try:
        return dict(decoder.generate(jobs)), decoder.steps
    finally:
        decoder.close()


def test_samples_of_one_prompt_share_it_and_write_what_one_sequence_writes(small):
    tokens = small.tokenize(PROMPT)
    out, steps = decode(small, [ParallelJob(tokens, GREEDY), ParallelJob(tokens, GREEDY)], 2)
    small.reset()
    alone = collect(stream(small, tokens, GREEDY)).text
    assert out[0].text == out[1].text == alone
    assert out[0].timing.prompt_evaluated == len(tokens)
    assert out[1].timing.prompt_evaluated == 1  # copied from the first sequence; only its last token again
    assert steps <= 2 + 12  # one llama_decode per step for both sequences


def test_each_sequence_keeps_its_own_bans_stops_and_limits(small):
    free = ParallelJob(small.tokenize(PROMPT), GREEDY)
    banned = ParallelJob(small.tokenize(PROMPT), GREEDY.replace(banned=("lighthouse",)))
    stopped = ParallelJob(small.tokenize(PROMPT), GREEDY.replace(stop=("stairs",)))
    short = ParallelJob(small.tokenize("Two cats"), GREEDY.replace(max_new_tokens=3))
    out, _ = decode(small, [free, banned, stopped, short], 4)
    assert "lighthouse" in out[0].text and "lighthouse" not in out[1].text.lower()
    assert out[2].finish_reason == "stop" and out[2].text == out[0].text[: out[0].text.index("stairs")]
    assert (out[3].finish_reason, len(out[3].tokens)) == ("length", 3)


def test_more_jobs_than_sequences_run_to_the_end_and_the_same_jobs_give_the_same_text(small):
    settings = SamplingSettings(max_new_tokens=10)
    jobs = [
        ParallelJob(small.tokenize(p), settings.replace(seed=i))
        for i, p in enumerate(["Once upon a time", "The ship", "In the forest", "My recipe", "Rain fell"] * 2)
    ]
    first, steps = decode(small, jobs, 3)
    again, _ = decode(small, jobs, 3)
    assert sorted(first) == list(range(10))
    assert {i: c.text for i, c in first.items()} == {i: c.text for i, c in again.items()}
    assert steps < sum(len(c.tokens) for c in first.values())  # tokens of several sequences in each step


def test_tasks_are_grouped_by_the_command_alone():
    tasks = list(range(20))
    assert groups(tasks, 2) == [list(range(0, 8)), list(range(8, 16)), list(range(16, 20))]


def test_a_resumed_parallel_batch_writes_the_uninterrupted_records(small, tmp_path):
    rows = tmp_path / "in.csv"
    rows.write_text("prompt\n" + "".join(f"Story {i} begins:\n" for i in range(5)))
    settings = SamplingSettings(max_new_tokens=10, seed=4)

    def run(name):
        with OutputFile(tmp_path / name) as out:
            plan = plan_batch(read_rows(rows, "raw"), 2, out, RecordSpec("raw", {}, settings, "m", "x", n_seq=2))
            run_batch(plan, out, ParallelExecutor(small))

    def texts(name):
        return [(r["id"], r["sample"], r["text"]) for r in read_records(tmp_path / name)]

    run("whole.jsonl")
    lines = (tmp_path / "whole.jsonl").read_bytes().splitlines(keepends=True)
    for cut in (3, 9):  # inside the first group of 8 tasks, and inside the second
        (tmp_path / f"cut{cut}.jsonl").write_bytes(b"".join(lines[:cut]) + lines[cut][:10])
        run(f"cut{cut}.jsonl")
        assert texts(f"cut{cut}.jsonl") == texts("whole.jsonl")
    assert len(texts("whole.jsonl")) == 10


def test_generate_n_in_parallel_is_the_same_every_time(bundled_path):
    def texts():
        result = subprocess.run(
            [
                *TALESMITH,
                "generate",
                "--json",
                "-n",
                "3",
                "--parallel",
                "3",
                "--seed",
                "7",
                "--max-new-tokens",
                "10",
                "--ctx",
                "256",
                "It was late",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return [(json.loads(line)["seed"], json.loads(line)["text"]) for line in result.stdout.splitlines()]

    first = texts()
    assert [seed for seed, _ in first] == [7, 8, 9]
    assert first == texts()
