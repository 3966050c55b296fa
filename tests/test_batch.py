import json

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.batch import (
    OutputFile,
    RecordSpec,
    SequentialExecutor,
    plan_batch,
    read_rows,
    row_seed,
    run_batch,
)
from talesmith.runtime.batch_output import read_records
from talesmith.runtime.errors import InputError
from talesmith.runtime.settings import SamplingSettings

SETTINGS = SamplingSettings(temperature=0, max_new_tokens=16, seed=3)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def run(tmp_path, rows_path, out_name, *, samples=1, fmt="raw"):
    out = OutputFile(tmp_path / out_name)
    rows = read_rows(rows_path, fmt)
    plan = plan_batch(rows, samples, out, RecordSpec(fmt, {}, SETTINGS, "scripted", "abc"))
    written = run_batch(plan, out, SequentialExecutor(ScriptedBackend(" and then")))
    out.close()
    return plan, written


def test_csv_rows_to_jsonl_with_every_record_field(tmp_path):
    rows = write(tmp_path / "in.csv", "prompt,temperature\nOnce,\nTwice,0.5\n")
    run(tmp_path, rows, "out.jsonl", samples=2)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in records] == [("1", 0), ("1", 1), ("2", 0), ("2", 1)]
    assert records[0]["text"] == " and then" and records[0]["prompt"] == "Once"
    assert records[0]["seed"] == row_seed(3, "1", 0) and records[1]["seed"] == row_seed(3, "1", 1)
    assert json.loads(records[2]["settings"])["temperature"] == 0.5
    assert set(records[0]) == {
        "id",
        "sample",
        "prompt",
        "text",
        "seed",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "model",
        "model_sha256",
        "settings",
    }


def test_jsonl_rows_with_format_fields_to_csv(tmp_path):
    rows = write(tmp_path / "in.jsonl", json.dumps({"id": "a", "title": "T", "prompt": "It began"}) + "\n")
    run(tmp_path, rows, "out.csv", fmt="story")
    records = read_records(tmp_path / "out.csv")
    assert records[0]["prompt"] == "[ Title: T ]\n***\nIt began" and records[0]["id"] == "a"


def test_rerun_resumes_without_duplicates(tmp_path):
    rows = write(tmp_path / "in.csv", "prompt\na\nb\nc\n")
    run(tmp_path, rows, "out.csv")
    plan, written = run(tmp_path, rows, "out.csv")
    assert (plan.skipped, written) == (3, 0)
    assert len(read_records(tmp_path / "out.csv")) == 3


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_a_record_torn_by_a_crash_is_removed_and_redone(tmp_path, name):
    rows = write(tmp_path / "in.csv", "prompt\na\nb\nc\n")
    run(tmp_path, rows, name)
    whole = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(whole[:-7])  # the last record cut mid-write
    plan, written = run(tmp_path, rows, name)
    assert (plan.skipped, written) == (2, 1)
    assert (tmp_path / name).read_bytes() == whole  # records hold no timings: byte for byte the same


def test_csv_text_with_newlines_and_quotes_survives(tmp_path):
    out = OutputFile(tmp_path / "o.csv")
    record = {
        k: ""
        for k in (
            "id",
            "sample",
            "prompt",
            "seed",
            "finish_reason",
            "prompt_tokens",
            "completion_tokens",
            "model",
            "model_sha256",
            "settings",
        )
    }
    out.append({**record, "id": "1", "sample": 0, "text": 'She said "no",\nthen left.'})
    out.close()
    assert read_records(tmp_path / "o.csv")[0]["text"] == 'She said "no",\nthen left.'


def test_output_from_another_model_is_refused(tmp_path):
    rows = write(tmp_path / "in.csv", "prompt\na\n")
    run(tmp_path, rows, "out.jsonl")
    with OutputFile(tmp_path / "out.jsonl") as out, pytest.raises(InputError, match="written with another model"):
        plan_batch(read_rows(rows, "raw"), 1, out, RecordSpec("raw", {}, SETTINGS, "scripted", "other"))


@pytest.mark.parametrize(
    "content,name,message",
    [
        ("text\nhello\n", "in.csv", "column 'text' that format 'raw' does not use"),
        ("prompt,top_p\nx,1.5\n", "in.csv", None),
        ("prompt,top_k\nx,lots\n", "in.csv", "row 1: top_k value 'lots' is not a whole number"),
        ("{not json\n", "in.jsonl", "line 1 is not JSON"),
        ("", "in.csv", "has no rows"),
        ("id,prompt\n1,a\n1,b\n", "in.csv", "id '1' appears more than once"),
        ("prompt\nx\n", "in.txt", "unknown file type .txt"),
    ],
)
def test_bad_input_files_name_the_problem(tmp_path, content, name, message):
    path = write(tmp_path / name, content)
    if message is None:  # a bad setting is caught when its row runs, naming the row
        with pytest.raises(InputError, match="row 1: top_p 1.5 is outside"):
            run(tmp_path, path, "out.jsonl")
        return
    with pytest.raises(InputError, match=message):
        read_rows(path, "raw")


def test_missing_input_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_rows(tmp_path / "nope.csv", "raw")


def test_row_seeds_are_stable():
    assert row_seed(0, "1", 0) == row_seed(0, "1", 0) != row_seed(0, "1", 1)
    assert row_seed(0, "1", 0) == 2085219357  # fixed forever: same command, same output


def test_a_ray_actor_sends_its_notes_back_with_its_records(tmp_path):
    from talesmith.runtime.batch_ray import BatchWorker

    text = "".join(f"line {i}\n" for i in range(20))
    rows = write(tmp_path / "in.jsonl", json.dumps({"id": "r", "title": "T", "prompt": text}) + "\n")
    spec = RecordSpec("story", {}, SETTINGS.replace(max_new_tokens=8), "scripted", "abc")
    with OutputFile(tmp_path / "out.jsonl") as out:
        plan = plan_batch(read_rows(rows, "story"), 2, out, spec)
    worker = BatchWorker.__new__(BatchWorker)  # the actor's body, without Ray and without opening a model
    worker.backend = ScriptedBackend(" and then", n_ctx=80)
    finished, notes = worker.run(plan.groups()[0], spec)
    assert [(f.number, f.record["sample"]) for f in finished] == [(0, 0), (1, 1)]
    assert len(notes) == 1  # once per row, not per sample
    assert notes[0].startswith("row r: left out its ") and notes[0].endswith(
        " oldest lines to fit the context of 80 tokens (raise --ctx to keep them)"
    )


def test_groups_are_cut_from_every_task_and_only_those_with_work_left_are_decoded():
    from talesmith.runtime.batch import BatchPlan, Row, Task

    rows = [Row(i, i, {}, {}) for i in "abc"]
    every = [Task(r, s) for r in rows for s in range(2)]
    spec = RecordSpec("raw", {}, SETTINGS, "m", "x", n_seq=1)  # groups of 4 tasks
    plan = BatchPlan(spec, every, frozenset({1, 5}))
    assert [(g.start, len(g.tasks), sorted(g.todo)) for g in plan.groups()] == [(0, 4, [1]), (4, 2, [5])]
    assert (plan.skipped, [(t.row.id, t.sample) for t in plan.tasks]) == (4, [("a", 1), ("c", 1)])
    later = BatchPlan(spec, every, frozenset({4}))
    assert [(g.start, sorted(g.todo)) for g in later.groups()] == [(4, [4])]
    wide = BatchPlan(RecordSpec("raw", {}, SETTINGS, "m", "x", n_seq=2), every, frozenset(range(6)))
    assert [(g.start, len(g.tasks)) for g in wide.groups()] == [(0, 6)]  # 4 x 2 tasks a group
