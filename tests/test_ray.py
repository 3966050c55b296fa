"""Batch on Ray: a local cluster of 2 CPUs and 2 actors on the bundled model."""

import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from talesmith.runtime.batch import RecordSpec, plan_batch, read_rows, run_batch  # noqa: E402
from talesmith.runtime.batch_output import OutputFile, read_records  # noqa: E402
from talesmith.runtime.batch_parallel import local_executor  # noqa: E402
from talesmith.runtime.batch_ray import ModelSource, RayExecutor, RayOptions  # noqa: E402
from talesmith.runtime.engine.llama import LlamaCppBackend  # noqa: E402
from talesmith.runtime.files import sha256_file  # noqa: E402
from talesmith.runtime.settings import SamplingSettings  # noqa: E402

pytestmark = pytest.mark.model
TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]
SETTINGS = SamplingSettings(max_new_tokens=8, seed=4)


def key(path):
    return [(r["id"], int(r["sample"]), int(r["seed"]), r["text"]) for r in read_records(path)]


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("prompt\n" + "".join(f"Story {i} begins:\n" for i in range(10)))
    return path


def test_resume_after_kill_9_of_the_driver(tmp_path, rows):
    common = ["--max-new-tokens", "8", "--seed", "4", "--ctx", "256", "--parallel", "1"]
    reference = tmp_path / "reference.jsonl"
    assert (
        subprocess.run(
            [*TALESMITH, "batch", rows, "-o", reference, *common], capture_output=True, timeout=600
        ).returncode
        == 0
    )
    out = tmp_path / "out.jsonl"
    ray_args = ["--ray", "local", "--ray-actors", "2", "--ray-cpus", "1"]
    proc = subprocess.Popen(
        [*TALESMITH, "batch", str(rows), "-o", str(out), *common, *ray_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local cluster it started
    proc.wait()
    assert 2 <= out.read_text().count("\n") < 10
    result = subprocess.run(
        [*TALESMITH, "batch", rows, "-o", out, *common, *ray_args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert key(out) == key(reference)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def source(bundled_path):
    return ModelSource(None, "", "", sha256_file(bundled_path), n_ctx=256)


def run_ray(tmp_path, rows, name, bundled_path, *, n_seq=1, before=lambda runner: None, on_note=lambda note: None):
    runner = RayExecutor(RayOptions(actors=2, cpus=1), source(bundled_path))
    before(runner)
    try:
        with OutputFile(tmp_path / name) as out:
            spec = RecordSpec("raw", {}, SETTINGS, "m", source(bundled_path).sha256, n_seq=n_seq)
            run_batch(plan_batch(read_rows(rows, "raw"), 1, out, spec), out, runner, on_note=on_note)
    finally:
        runner.close()
    return runner


def one_machine(tmp_path, rows, bundled_path, name, n_seq=1):
    backend = LlamaCppBackend(bundled_path, n_ctx=256)
    with OutputFile(tmp_path / name) as out:
        spec = RecordSpec("raw", {}, SETTINGS, "m", source(bundled_path).sha256, n_seq=n_seq)
        run_batch(plan_batch(read_rows(rows, "raw"), 1, out, spec), out, local_executor(backend, n_seq))
    backend.close()


def test_every_record_once_and_the_same_as_on_one_machine(tmp_path, rows, bundled_path, cluster):
    one_machine(tmp_path, rows, bundled_path, "one.jsonl")
    run_ray(tmp_path, rows, "ray.jsonl", bundled_path)
    assert key(tmp_path / "ray.jsonl") == key(tmp_path / "one.jsonl")
    assert [(r[0], r[1]) for r in key(tmp_path / "ray.jsonl")] == [(str(i), 0) for i in range(1, 11)]


def test_a_dead_actors_rows_go_to_another(tmp_path, rows, bundled_path, cluster):
    # The first group goes to the first actor, which is dead by then: its rows must go to a new one.
    runner = run_ray(tmp_path, rows, "ray.jsonl", bundled_path, before=lambda runner: ray.kill(runner.actors[0]))
    assert runner.restarts == 1
    reference = run_ray(tmp_path, rows, "again.jsonl", bundled_path)
    assert reference.restarts == 0
    assert key(tmp_path / "ray.jsonl") == key(tmp_path / "again.jsonl")
    assert len(key(tmp_path / "ray.jsonl")) == 10


def test_parallel_sequences_on_actors_write_what_one_machine_writes(tmp_path, rows, bundled_path, cluster):
    one_machine(tmp_path, rows, bundled_path, "one.jsonl", n_seq=2)
    run_ray(tmp_path, rows, "ray.jsonl", bundled_path, n_seq=2)  # groups of 8: one per actor
    assert key(tmp_path / "ray.jsonl") == key(tmp_path / "one.jsonl")


def test_notes_of_actors_reach_the_driver(tmp_path, bundled_path, cluster):
    rows = tmp_path / "long.jsonl"
    rows.write_text(
        '{"id": "long", "title": "T", "prompt": "' + "".join(f"Line {i} of the tale.\\n" for i in range(80)) + '"}\n'
    )
    notes = []
    runner = RayExecutor(RayOptions(actors=1, cpus=1), source(bundled_path))
    try:
        with OutputFile(tmp_path / "ray.jsonl") as out:
            spec = RecordSpec("story", {}, SETTINGS, "m", source(bundled_path).sha256)
            run_batch(plan_batch(read_rows(rows, "story"), 1, out, spec), out, runner, on_note=notes.append)
    finally:
        runner.close()
    assert len(notes) == 1 and notes[0].startswith("row long: left out its ")
    assert notes[0].endswith(" oldest lines to fit the context of 256 tokens (raise --ctx to keep them)")
