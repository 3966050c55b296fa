"""Resuming a batch: a resumed file is byte for byte the uninterrupted one, and a resume with other flags is refused.

Records hold only what the command decides (timings go to OUT.timings.jsonl with --timings), and what decided
them is kept beside the output in OUT.run.json. Every case runs `talesmith batch` in this process on a scripted
model and checks the exit status, the lines printed and the bytes of the files.
"""

import json

import pytest

from talesmith.runtime.batch import resume_differences
from talesmith.runtime.batch_output import read_records

pytest_plugins = ["cli_fakes"]  # the run_cli and scripted_model fixtures


@pytest.fixture
def batch(run_cli, scripted_model, tmp_path):
    rows = tmp_path / "in.csv"
    rows.write_text("id,prompt,temperature\na,Once,\nb,Twice,0.5\nc,Thrice,\n", encoding="utf-8")

    def run(out, *args):
        result = run_cli("batch", rows, "-o", out, "-m", scripted_model, "--max-new-tokens", "6", *args)
        return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]

    return run


def refused(result, expected):
    code, lines = result
    assert (code, lines) == (2, [f"error: {expected}"])


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv"])
def test_cmp_of_a_resumed_run_and_an_uninterrupted_one_succeeds(tmp_path, batch, name):
    whole = tmp_path / f"whole-{name}"
    assert batch(whole, "-n", "2", "--seed", "7")[0] == 0
    expected = whole.read_bytes()
    out = tmp_path / name
    for cut in (0.3, 0.7):  # killed mid-record, twice, at different points
        assert batch(out, "-n", "2", "--seed", "7")[0] == 0
        data = out.read_bytes()
        out.write_bytes(data[: int(len(data) * cut)])
        code, lines = batch(out, "-n", "2", "--seed", "7")
        assert code == 0 and lines[-1].startswith(f"done: {out} (")
        assert out.read_bytes() == expected
        out.unlink()


def test_timings_go_to_their_own_file_and_leave_the_records_alone(tmp_path, batch):
    plain, timed = tmp_path / "plain.jsonl", tmp_path / "timed.jsonl"
    assert batch(plain, "--seed", "7")[0] == 0
    assert batch(timed, "--seed", "7", "--timings")[0] == 0
    assert timed.read_bytes() == plain.read_bytes()
    assert not (tmp_path / "plain.jsonl.timings.jsonl").exists()
    lines = [json.loads(line) for line in (tmp_path / "timed.jsonl.timings.jsonl").read_text().splitlines()]
    assert [(t["id"], t["sample"]) for t in lines] == [("a", 0), ("b", 0), ("c", 0)]
    assert set(lines[0]) == {
        "id",
        "sample",
        "prompt_tokens",
        "prompt_evaluated",
        "prompt_seconds",
        "generated_tokens",
        "generate_seconds",
        "first_token_seconds",
        "tokens_per_second",
    }
    assert [t["generated_tokens"] for t in lines] == [r["completion_tokens"] for r in read_records(timed)]


def test_what_decided_the_records_is_kept_beside_them(tmp_path, batch, scripted_model):
    out = tmp_path / "out.jsonl"
    assert batch(out, "-n", "2", "--seed", "7", "--temperature", "0.6")[0] == 0
    run = json.loads((tmp_path / "out.jsonl.run.json").read_text())["decided_by"]
    assert {k: run[k] for k in ("format", "parallel", "samples", "fields", "lorebooks")} == {
        "format": "raw",
        "parallel": 1,
        "samples": 2,
        "fields": {},
        "lorebooks": [],
    }
    assert (run["sampling"]["seed"], run["sampling"]["temperature"], run["sampling"]["max_new_tokens"]) == (7, 0.6, 6)
    assert run["model_sha256"] == read_records(out)[0]["model_sha256"]


@pytest.mark.parametrize(
    "first,then,difference",
    [
        (["--seed", "7"], ["--seed", "8"], "--seed 7, not --seed 8"),
        ([], ["--seed", "8"], "--seed 0, not --seed 8"),
        (["--max-new-tokens", "6"], ["--max-new-tokens", "5"], "--max-new-tokens 6, not --max-new-tokens 5"),
        (
            ["--temperature", "0.6"],
            ["--top-k", "3"],
            "--temperature 0.6, not --temperature 0.8; --top-k 40, not --top-k 3",
        ),
        (["--format", "raw"], ["--format", "story"], "--format raw, not --format story"),
        (["--stop", "x"], [], '--stop ["x"], not --stop []'),
    ],
)
def test_a_resume_with_other_flags_is_refused_naming_the_difference(tmp_path, batch, first, then, difference):
    out = tmp_path / "out.jsonl"
    assert batch(out, *first)[0] == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])  # interrupted
    before = out.read_bytes()
    refused(
        batch(out, *then),
        f"cannot resume {out}: it was written with {difference}; run the command it was written with, "
        f"or write to a new file with -o",
    )
    assert out.read_bytes() == before
    assert batch(out, *first)[0] == 0 and out.read_bytes() == data  # the same flags resume it


def test_another_parallel_is_refused(tmp_path, batch):
    out = tmp_path / "out.jsonl"
    assert batch(out, "-n", "2")[0] == 0
    run = tmp_path / "out.jsonl.run.json"
    stored = json.loads(run.read_text())
    stored["decided_by"]["parallel"] = 4  # as a llama.cpp run with --parallel 4 leaves it
    run.write_text(json.dumps(stored))
    refused(
        batch(out, "-n", "2", "--parallel", "1"),
        f"cannot resume {out}: it was written with --parallel 4, not --parallel 1; run the command it was "
        f"written with, or write to a new file with -o",
    )


def test_another_model_is_refused(tmp_path, batch, run_cli):
    out = tmp_path / "out.jsonl"
    assert batch(out)[0] == 0
    other = tmp_path / "other.gguf"
    other.write_bytes(b"another model's bytes")
    result = run_cli("batch", tmp_path / "in.csv", "-o", out, "-m", other, "--max-new-tokens", "6")
    sha = read_records(out)[0]["model_sha256"]
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"error: {out} was written with another model (sha256 {sha[:12]}...); write to a new output file to use this one",
    )


def test_a_finished_output_with_another_number_of_samples_extends_one_at_a_time(tmp_path, batch):
    out = tmp_path / "out.jsonl"
    assert batch(out, "-n", "1", "--seed", "7")[0] == 0
    code, lines = batch(out, "-n", "2", "--seed", "7")  # with --parallel 1, -n changes no record
    assert code == 0 and lines[-1] == f"done: {out} (3 new, 3 kept)"
    whole = tmp_path / "whole.jsonl"
    assert batch(whole, "-n", "2", "--seed", "7")[0] == 0
    assert sorted(read_records(out), key=lambda r: (r["id"], r["sample"])) == read_records(whole)


def test_an_output_without_its_run_file_is_resumed_with_a_note(tmp_path, batch):
    out = tmp_path / "out.jsonl"
    assert batch(out, "--seed", "7")[0] == 0
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "out.jsonl.run.json").unlink()
    code, lines = batch(out, "--seed", "7")
    assert code == 0 and lines[0] == (
        f"note: {out} has no out.jsonl.run.json: the settings of its 1 records cannot be checked; this "
        f"command's are kept from now on"
    )
    assert out.read_bytes() == whole and (tmp_path / "out.jsonl.run.json").exists()


def test_an_unreadable_run_file_is_one_line(tmp_path, batch):
    out = tmp_path / "out.jsonl"
    assert batch(out)[0] == 0
    (tmp_path / "out.jsonl.run.json").write_text("{torn")
    code, lines = batch(out)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {tmp_path / 'out.jsonl.run.json'} cannot be read (")
    assert lines[0].endswith("it says how out.jsonl was made: restore it, or write to a new file with -o")


def test_an_output_of_an_earlier_talesmith_with_timings_is_left_alone(tmp_path, batch):
    out = tmp_path / "old.jsonl"
    old = {
        "id": "a",
        "sample": 0,
        "prompt": "Once",
        "text": " upon",
        "seed": 1,
        "finish_reason": "length",
        "prompt_tokens": 4,
        "completion_tokens": 5,
        "seconds": 0.1,
        "tokens_per_second": 50.0,
        "model": "m",
        "model_sha256": "x",
        "settings": "{}",
    }
    out.write_text(json.dumps(old) + "\n")
    refused(
        batch(out),
        f"{out} was written by an earlier talesmith, whose records held timings; it was left as it is, "
        f"write to a new file with -o",
    )
    assert json.loads(out.read_text()) == old


def test_differences_are_listed_in_a_fixed_order():
    stored = {"format": "raw", "parallel": 8, "samples": 2, "sampling": {"seed": 1, "top_k": 40}}
    current = {"format": "story", "parallel": 8, "samples": 3, "sampling": {"seed": 2, "top_k": 40}}
    assert resume_differences(stored, current) == [
        "--format raw, not --format story",
        "-n 2, not -n 3",
        "--seed 1, not --seed 2",
    ]
    one_at_a_time = {**stored, "parallel": 1}
    assert resume_differences(one_at_a_time, {**one_at_a_time, "samples": 5}) == []
