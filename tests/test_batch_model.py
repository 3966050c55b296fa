"""Same command, same output, on the bundled model: a record depends only on the command, its row and its sample."""

import json
import subprocess
import sys

import pytest

from talesmith.runtime.batch import RecordSpec, Row, Task, decode_task
from talesmith.runtime.settings import SamplingSettings

pytestmark = pytest.mark.model
SETTINGS = SamplingSettings(max_new_tokens=24, seed=11)
TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]


def record(llama, text, row_id="r", sample=0):
    task = Task(Row(row_id, text, {}, {}), sample)
    out, _ = decode_task(llama, task, RecordSpec("raw", {}, SETTINGS, "m", "x"))
    return out["text"]


def test_a_record_does_not_depend_on_the_record_before_it(llama):
    prompt = "The lighthouse keeper counted the ships, and on the third night"
    alone = record(llama, prompt, "b")
    llama.reset()
    record(llama, prompt + " something else entirely", "a")  # shares a long prefix: its cache would be reused
    assert record(llama, prompt, "b") == alone
    record(llama, "Unrelated words first.", "c")
    assert record(llama, prompt, "b") == alone


def test_generate_n_writes_what_single_runs_with_the_following_seeds_write(bundled_path):
    def texts(*args):
        result = subprocess.run(
            [*TALESMITH, "generate", "--json", "--max-new-tokens", "16", *args, "It was late"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["text"] for line in result.stdout.splitlines()]

    together = texts("-n", "3", "--seed", "7")
    assert together == texts("--seed", "7") + texts("--seed", "8") + texts("--seed", "9")
