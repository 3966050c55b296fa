"""The `talesmith` command as a user runs it: exit codes, one-line errors, streamed output, batch resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest_plugins = ["cli_fakes"]  # the run_cli and scripted_model fixtures

TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]


def talesmith(*args, cwd=None, timeout=300):
    return subprocess.run([*TALESMITH, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def not_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("just some text, not a model")
    return path


@pytest.fixture
def truncated(tmp_path, bundled_path):
    path = tmp_path / "cut.gguf"
    with open(bundled_path, "rb") as src:
        path.write_bytes(src.read(5_000_000))
    return path


def test_missing_model_file(tmp_path):
    one_line_error(talesmith("generate", "--model", tmp_path / "none.gguf", "hi"), "none.gguf does not exist")


def test_file_that_is_not_gguf(not_gguf, run_cli):
    one_line_error(run_cli("generate", "--model", not_gguf, "hi"), "is not a GGUF file")


def test_truncated_gguf(truncated, run_cli):
    one_line_error(run_cli("generate", "--model", truncated, "hi"), "is truncated")


def test_unknown_model_name(run_cli):
    one_line_error(run_cli("generate", "--model", "nosuchmodel", "hi"), "'nosuchmodel' is neither a file nor a model")


def test_unknown_preset(run_cli, scripted_model):
    one_line_error(
        run_cli("generate", "-m", scripted_model, "--preset", "wild", "hi"), "unknown preset 'wild'", "lit-6b"
    )


def test_invalid_setting(run_cli, scripted_model):
    one_line_error(run_cli("generate", "-m", scripted_model, "--top-p", "1.5", "hi"), "top_p 1.5 is outside (0, 1]")


def test_field_of_another_format(run_cli, scripted_model):
    one_line_error(
        run_cli("generate", "-m", scripted_model, "--format", "raw", "--title", "T", "hi"), "does not take 'title'"
    )


def test_bad_config_file(tmp_path, run_cli, scripted_model):
    config = tmp_path / "c.toml"
    config.write_text("[sampling]\ntop_q = 1\n")
    one_line_error(
        run_cli("generate", "-m", scripted_model, "--config", config, "hi"), "unknown sampling setting 'top_q'"
    )


def test_unreadable_batch_input(tmp_path, run_cli, scripted_model):
    one_line_error(
        run_cli("batch", "-m", scripted_model, tmp_path / "none.csv", "-o", tmp_path / "o.jsonl"),
        "none.csv does not exist",
    )


def test_batch_input_with_wrong_columns(tmp_path, run_cli, scripted_model):
    rows = tmp_path / "in.csv"
    rows.write_text("text\nhello\n")
    one_line_error(run_cli("batch", "-m", scripted_model, rows, "-o", tmp_path / "o.jsonl"), "column 'text'")


def test_generate_json_in_process_on_a_scripted_model(run_cli, scripted_model):
    result = run_cli("generate", "-m", scripted_model, "--format", "raw", "--seed", "3", "--json", "Hi.")
    assert result.returncode == 0 and result.stderr == ""
    sample = json.loads(result.stdout)
    assert sample["text"] == " Once upon a time." and sample["finish_reason"] == "eos"
    assert sample["prompt"] == "Hi." and sample["tokens"] == list(b" Once upon a time.")
    assert sample["model"] == "scripted" and sample["model_path"] == str(scripted_model) and sample["seed"] == 3


@pytest.mark.model
def test_generate_streams_a_story_and_json_is_complete(tmp_path):
    args = [
        "generate",
        "--format",
        "story",
        "--title",
        "The Lighthouse Keeper",
        "--seed",
        "11",
        "--max-new-tokens",
        "24",
        "The storm had raged for three days.",
    ]
    text = talesmith(*args)
    result = talesmith(*args, "--json", "-n", "2")
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    assert text.returncode == 0 and text.stdout == samples[0]["text"] + "\n"  # same seed, same text
    assert len(samples) == 2 and samples[0]["text"].strip()
    assert samples[1]["seed"] == 12 and samples[0]["prompt"].startswith("[ Title: The Lighthouse Keeper ]\n***\n")
    assert samples[0]["model_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert samples[0]["timings"]["generated_tokens"] == 24 and len(samples[0]["tokens"]) == 24
    assert samples[0]["settings"]["seed"] == 11 and samples[0]["finish_reason"] == "length"


@pytest.mark.model
def test_config_file_sets_model_format_and_sampling(tmp_path, bundled_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        f'model = "{bundled_path}"\npreset = "tinystories"\nformat = "tinystories"\n'
        f"[sampling]\nmax_new_tokens = 12\nseed = 4\n"
    )
    result = talesmith("generate", "--config", config, "--json", "Once upon a time")
    sample = json.loads(result.stdout)
    assert sample["prompt"] == "<|startoftext|> Once upon a time"
    assert sample["settings"]["top_k"] == 250 and sample["settings"]["max_new_tokens"] == 12
    assert sample["settings"]["banned"] == ["Damn", "Shit", "Fuck"]


@pytest.mark.model
@pytest.mark.parametrize("parallel,n_rows,group", [(1, 8, 1), (2, 16, 8)])  # --parallel N writes groups of 4N
def test_batch_survives_kill_9_and_resumes_to_the_same_output(tmp_path, parallel, n_rows, group):
    rows = tmp_path / "prompts.csv"
    rows.write_text("prompt\n" + "".join(f"Story number {i} begins:\n" for i in range(n_rows)))
    common = ["--max-new-tokens", "24", "--seed", "5", "--parallel", str(parallel)]
    reference = tmp_path / "reference.jsonl"
    assert talesmith("batch", rows, "-o", reference, *common).returncode == 0

    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [*TALESMITH, "batch", str(rows), "-o", str(out), *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    least = max(2, group)
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < least):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_text().count("\n")
    assert least <= partial < n_rows
    assert talesmith("batch", rows, "-o", out, *common).returncode == 0

    def key(path):
        return [(r["id"], r["sample"], r["seed"], r["text"]) for r in map(json.loads, path.read_text().splitlines())]

    assert key(out) == key(reference)
    assert out.read_bytes() == reference.read_bytes()  # cmp: records hold only what the command decides


def test_error_text_with_brackets_is_printed_as_is(tmp_path, run_cli):
    one_line_error(
        run_cli("generate", "--model", tmp_path / "[x]" / "m[/b].gguf", "hi"), "[x]/m[/b].gguf does not exist"
    )
