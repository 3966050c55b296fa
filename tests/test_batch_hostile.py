"""Hostile and unlucky batch and config inputs: foreign output files, full disks, two writers, odd text.

Every case runs the `talesmith` command in this process (the model is a scripted backend), and checks
the exit status, the one line it prints, and the bytes of every file involved.
"""

import errno
import json
import os
import subprocess
import sys

import pytest
from fakes import ScriptedBackend

import talesmith.cli.options as options
from talesmith.cli.main import main
from talesmith.runtime.batch_output import CSV_HEADER, read_output, read_records
from talesmith.runtime.models.resolve import ModelRef

REAL_OPEN_MODEL = options.open_model


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run `talesmith ARGS` in this process on a scripted model; returns (exit status, stderr lines)."""
    model = tmp_path / "scripted.gguf"
    model.write_bytes(b"scripted model")
    state = {"backend": lambda: ScriptedBackend(" and then")}

    def open_model(*args, **kwargs):
        return ModelRef("scripted", model), state["backend"]()

    monkeypatch.setattr(options, "open_model", open_model)

    def run(*args, backend=None):
        if backend is not None:
            state["backend"] = backend
        monkeypatch.setattr(sys, "argv", ["talesmith", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main()
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        return exit_.value.code or 0, lines

    return run


def one_line(result, expected):
    code, lines = result
    assert code == 2, lines
    assert lines == [f"error: {expected}"]


def rows_file(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def texts(path):
    return read_records(path)


# --- whose file it is --------------------------------------------------------------------------


def test_a_foreign_csv_output_is_refused_and_left_as_it_is(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\nOnce\n")
    mine = tmp_path / "mydata.csv"
    mine.write_bytes(b"name,score\nalice,1\nbob,2,extra\ncarol,3\n")
    one_line(
        cli("batch", rows, "-o", mine),
        f"{mine} is not a talesmith batch output (its first line is not talesmith's header); "
        f"it was left as it is, write to a new file with -o",
    )
    assert mine.read_bytes() == b"name,score\nalice,1\nbob,2,extra\ncarol,3\n"
    assert not (tmp_path / "mydata.csv.lock").exists()


def test_an_output_with_a_bad_line_in_the_middle_is_refused_whole(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\nb\nc\n")
    out = tmp_path / "out.jsonl"
    assert cli("batch", rows, "-o", out)[0] == 0
    lines = out.read_bytes().split(b"\n")
    damaged = b"\n".join([lines[0], b"{oops", *lines[1:]])
    out.write_bytes(damaged)
    one_line(
        cli("batch", rows, "-o", out),
        f"{out} is not a talesmith batch output (line 2 is not JSON); it was left as it is, "
        f"write to a new file with -o",
    )
    assert out.read_bytes() == damaged


def test_json_lines_of_someone_else_are_refused(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\n")
    out = tmp_path / "notes.jsonl"
    out.write_bytes(b'{"id": 1, "note": "mine"}\n{"id": 2, "note": "also mine"}')
    one_line(
        cli("batch", rows, "-o", out),
        f"{out} is not a talesmith batch output (line 1 is not a talesmith record); it was left as it is, "
        f"write to a new file with -o",
    )
    assert out.read_bytes() == b'{"id": 1, "note": "mine"}\n{"id": 2, "note": "also mine"}'


def test_a_csv_record_with_a_wrong_field_count_in_the_middle_is_refused(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\nb\n")
    out = tmp_path / "out.csv"
    assert cli("batch", rows, "-o", out)[0] == 0
    body = out.read_bytes()[len(CSV_HEADER) :]
    damaged = CSV_HEADER + b"1,0,x\n" + body
    out.write_bytes(damaged)
    one_line(
        cli("batch", rows, "-o", out),
        f"{out} is not a talesmith batch output (record 1 has 3 fields, not 11); it was left as it is, "
        f"write to a new file with -o",
    )
    assert out.read_bytes() == damaged


def test_a_torn_header_is_the_only_thing_cut(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\n")
    out = tmp_path / "out.csv"
    out.write_bytes(CSV_HEADER[:20])
    assert cli("batch", rows, "-o", out)[0] == 0
    assert [r["prompt"] for r in read_records(out)] == ["a"]


# --- records read back exactly as written ------------------------------------------------------

ODD = ["line\x0cfeed", "para\u2028graph", "next\x85line", "carriage\rreturn", "crlf\r\ninside", 'quote " and, comma']


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_text_with_every_kind_of_line_break_resumes_without_redoing_anything(tmp_path, cli, name):
    rows = rows_file(tmp_path, "".join(json.dumps({"prompt": p}) + "\n" for p in ODD), "in.jsonl")
    out = tmp_path / name
    assert cli("batch", rows, "-o", out)[0] == 0
    before = out.read_bytes()
    assert cli("batch", rows, "-o", out) == (
        0,
        [f"resuming {out}: 6 of 6 already done", f"done: {out} (0 new, 6 kept)"],
    )
    assert out.read_bytes() == before
    assert [r["prompt"] for r in read_records(out)] == ODD


def test_a_field_of_a_million_characters_in_and_out(tmp_path, cli):
    big = "w" * 1_000_000
    rows = rows_file(tmp_path, f"prompt\n{big}\nsmall\n")
    out = tmp_path / "out.csv"
    assert cli("batch", rows, "-o", out, backend=lambda: ScriptedBackend(" and then", n_ctx=2**21))[0] == 0
    before = out.read_bytes()
    assert cli("batch", rows, "-o", out)[1][-1] == f"done: {out} (0 new, 2 kept)"
    assert out.read_bytes() == before
    assert [len(r["prompt"]) for r in read_records(out)] == [1_000_000, 5]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, cli):
    rows = tmp_path / "in.csv"
    rows.write_bytes(b"\xef\xbb\xbfprompt\nOnce\n")
    out = tmp_path / "out.jsonl"
    assert cli("batch", rows, "-o", out)[0] == 0
    assert [r["prompt"] for r in read_records(out)] == ["Once"]
    rows = tmp_path / "in.jsonl"
    rows.write_bytes(b'\xef\xbb\xbf{"prompt": "Twice"}\n')
    out = tmp_path / "out2.jsonl"
    assert cli("batch", rows, "-o", out)[0] == 0
    assert [r["prompt"] for r in read_records(out)] == ["Twice"]


def test_a_config_with_a_byte_order_mark_is_read(tmp_path, cli):
    config = tmp_path / "c.toml"
    config.write_bytes("\ufeff[sampling]\nmax_new_tokens = 4\n".encode("utf-8"))
    out = tmp_path / "out.jsonl"
    assert cli("batch", rows_file(tmp_path, "prompt\nOnce\n"), "-o", out, "--config", config)[0] == 0
    assert [r["text"] for r in read_records(out)] == [" and"]


def test_a_row_with_more_fields_than_the_header(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\nOnce, upon\n")
    one_line(
        cli("batch", rows, "-o", tmp_path / "o.jsonl"),
        f"{rows} row 1 has more fields than the header names; quote fields holding commas",
    )


# --- a full disk, short writes -----------------------------------------------------------------


def reference(tmp_path, cli, rows, name):
    ref = tmp_path / f"reference-{name}"
    assert cli("batch", rows, "-o", ref)[0] == 0
    return ref


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_short_writes_still_write_every_byte(tmp_path, cli, monkeypatch, name):
    rows = rows_file(tmp_path, "prompt\na\nb\nc\n")
    ref = reference(tmp_path, cli, rows, name)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:7]))
    out = tmp_path / name
    assert cli("batch", rows, "-o", out)[0] == 0
    monkeypatch.setattr(os, "write", real_write)
    assert texts(out) == texts(ref)


@pytest.mark.parametrize("name", ["out.csv", "out.jsonl"])
def test_a_full_disk_stops_with_one_line_at_the_last_whole_record_and_resumes(tmp_path, cli, monkeypatch, name):
    rows = rows_file(tmp_path, "prompt\na\nb\nc\nd\n")
    ref = reference(tmp_path, cli, rows, name)
    out = tmp_path / name
    real_write = os.write
    budget = {"left": len(ref.read_bytes()) // 2}  # room for about half the file

    def full_disk(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith(name) or os.readlink(f"/proc/self/fd/{fd}") == str(ref):
            return real_write(fd, data)
        if budget["left"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data)[: budget["left"]])
        budget["left"] -= n
        return n

    monkeypatch.setattr(os, "write", full_disk)
    code, lines = cli("batch", rows, "-o", out)
    kept = len(read_records(out))
    one_line(
        (code, lines),
        f"{out}: the disk is full; its {kept} whole records are kept, free some space and run "
        f"the same command again to resume",
    )
    assert 1 <= kept < 4
    assert read_output(out, out.suffix[1:])[1] == out.stat().st_size  # ends exactly at a whole record
    assert texts(out) == texts(ref)[:kept]
    monkeypatch.setattr(os, "write", real_write)
    assert cli("batch", rows, "-o", out)[1][-1] == f"done: {out} ({4 - kept} new, {kept} kept)"
    assert texts(out) == texts(ref)


# --- one writer ---------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\n")
    out = tmp_path / "out.jsonl"
    assert cli("batch", rows, "-o", out)[0] == 0
    before = out.read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from talesmith.runtime.batch_output import OutputFile\n"
                f"out = OutputFile(Path({str(out)!r})); print('locked', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        one_line(
            cli("batch", rows, "-o", out),
            f"another talesmith batch (pid {holder.pid}) is writing out.jsonl; wait for it to end or write "
            f"to another file",
        )
    finally:
        holder.kill()
        holder.wait()
    assert out.read_bytes() == before
    assert cli("batch", rows, "-o", out)[1][-1] == f"done: {out} (0 new, 1 kept)"  # a dead holder's lock is free
    assert not (tmp_path / "out.jsonl.lock").exists()


def test_a_record_twice_in_an_output_counts_once(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\nb\n")
    out = tmp_path / "out.jsonl"
    assert cli("batch", rows, "-o", out)[0] == 0
    first = out.read_bytes().split(b"\n")[0] + b"\n"
    out.write_bytes(out.read_bytes() + first)
    assert cli("batch", rows, "-o", out)[1][-1] == f"done: {out} (0 new, 2 kept)"


# --- the output folder is checked before anything is generated ---------------------------------


def test_an_output_under_a_file_fails_before_generating(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\n")
    (tmp_path / "plain").write_text("a file")
    calls = []
    one_line(
        cli("batch", rows, "-o", tmp_path / "plain" / "out.jsonl", backend=lambda: calls.append(1)),
        f"cannot create the output folder {tmp_path / 'plain'} (File exists); choose another -o path",
    )
    assert calls == [] and (tmp_path / "plain").read_text() == "a file"


def test_a_read_only_output_folder_fails_before_generating(tmp_path, cli, monkeypatch):
    rows = rows_file(tmp_path, "prompt\na\n")
    folder = tmp_path / "ro"
    folder.mkdir()
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    calls = []
    one_line(
        cli("batch", rows, "-o", folder / "out.jsonl", backend=lambda: calls.append(1)),
        f"cannot write in {folder} (Permission denied); choose an output folder you can write to",
    )
    assert calls == [] and list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_really_read_only_output_folder(tmp_path, cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", folder / "out.jsonl"),
        f"cannot write in {folder} (Permission denied); choose an output folder you can write to",
    )


# --- a prompt the trimming policy empties -------------------------------------------------------


def test_a_prompt_trimmed_to_nothing_is_an_error_naming_the_row(tmp_path, cli):
    rows = rows_file(tmp_path, json.dumps({"id": "long", "title": "T", "prompt": "x" * 300}) + "\n", "in.jsonl")
    out = tmp_path / "out.jsonl"
    one_line(
        cli(
            "batch",
            rows,
            "-o",
            out,
            "--format",
            "story",
            "--max-new-tokens",
            "8",
            backend=lambda: ScriptedBackend(" and then", n_ctx=64),
        ),
        "row long: all 1 lines of the text had to be left out to fit the context of 64 tokens with 8 new ones; "
        "raise --ctx, lower --max-new-tokens or shorten the text",
    )
    assert not out.exists() or out.read_bytes() == b""


def test_a_prompt_trimmed_in_part_gets_a_note(tmp_path, cli):
    text = "".join(f"line {i}\n" for i in range(20))
    rows = rows_file(tmp_path, json.dumps({"id": "r", "title": "T", "prompt": text}) + "\n", "in.jsonl")
    out = tmp_path / "out.jsonl"
    code, lines = cli(
        "batch",
        rows,
        "-o",
        out,
        "--format",
        "story",
        "--max-new-tokens",
        "8",
        backend=lambda: ScriptedBackend(" and then", n_ctx=80),
    )
    assert code == 0
    assert lines[0].startswith("note: row r: left out its ") and lines[0].endswith(
        " oldest lines to fit the context of 80 tokens (raise --ctx to keep them)"
    )


# --- config files of the wrong shape ------------------------------------------------------------


@pytest.mark.parametrize(
    "toml,message",
    [
        ("sampling = 5\n", "sampling = 5 must be a table, e.g. [sampling] with temperature = 0.8 and the like"),
        ("fields = 5\n", 'fields = 5 must be a table, e.g. [fields] with title = "..." and the like'),
        ("model = 5\n", 'model = 5 must be text, e.g. model = "NAME or PATH"'),
        ('format = ["story"]\n', "format = ['story'] must be text, e.g. format = \"story\""),
        ("preset = true\n", 'preset = True must be text, e.g. preset = "default"'),
        (
            "[sampling]\ntemperature = {a = 1}\n",
            "sampling.temperature = {'a': 1} must be text, a number, true/false or a list of texts",
        ),
    ],
)
def test_config_values_of_the_wrong_type(tmp_path, cli, toml, message):
    config = tmp_path / "c.toml"
    config.write_text(toml)
    out = tmp_path / "o.jsonl"
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", out, "--config", config),
        f"config file {config}: {message}",
    )
    assert not out.exists()


def test_a_lock_entry_with_format_fields_of_the_wrong_type(tmp_path, cli, monkeypatch):
    lock = tmp_path / "models.lock"
    lock.write_text('version = 1\n[models.tiny]\nformat = "gguf"\npath = "tiny.gguf"\nformat_fields = 5\n')
    monkeypatch.setattr(options, "open_model", REAL_OPEN_MODEL)  # the real one: the lock is read first
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", tmp_path / "o.jsonl", "-m", "tiny", "--lock", lock),
        f"{lock}: model 'tiny' format_fields 5 must be a table, e.g. format_fields = {{ genre = \"horror\" }}; "
        f"fix the entry or remove it with `talesmith models remove tiny`",
    )


# --- outputs that are not regular files ----------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/full", "/dev/zero"])
def test_an_output_linking_to_a_device_is_refused_without_reading_it(tmp_path, cli, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    link = tmp_path / "out.jsonl"
    link.symlink_to(device)
    calls = []
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", link, backend=lambda: calls.append(1)),
        f"output {link} is a link to {device}, a character device, not a regular file; pass the path of a "
        f".csv or .jsonl file",
    )
    assert calls == [] and not (tmp_path / "out.jsonl.lock").exists() and link.is_symlink()


def test_a_fifo_as_output_or_input_is_refused_without_opening_it(tmp_path, cli):
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)  # opening it to read would block until a writer came
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", fifo),
        f"output {fifo} is a named pipe, not a regular file; pass the path of a .csv or .jsonl file",
    )
    rows = tmp_path / "in.csv"
    rows.unlink()
    os.mkfifo(rows)
    one_line(
        cli("batch", rows, "-o", tmp_path / "o.jsonl"),
        f"input file {rows} is a named pipe, not a regular file; pass the path of a .csv or .jsonl file",
    )


def test_a_record_longer_than_the_bound_is_refused_without_reading_on(tmp_path, cli, monkeypatch):
    import talesmith.runtime.batch_output as batch_output

    monkeypatch.setattr(batch_output, "MAX_RECORD_BYTES", 1000)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"\0" * 5000)  # /dev/zero copied into a file: no line end at all
    one_line(
        cli("batch", rows_file(tmp_path, "prompt\na\n"), "-o", out),
        f"{out} is not a talesmith batch output (line 1 is longer than 0 MB); it was left as it is, write to a "
        f"new file with -o",
    )


# --- the writer's lock ------------------------------------------------------------------------------


def test_a_full_disk_while_writing_the_pid_is_one_line_and_leaves_no_lock(tmp_path, cli, monkeypatch):
    rows = rows_file(tmp_path, "prompt\na\n")
    out = tmp_path / "out.jsonl"
    lock = tmp_path / "out.jsonl.lock"
    real_write = os.write

    def full(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}") == str(lock):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    calls = []
    one_line(
        cli("batch", rows, "-o", out, backend=lambda: calls.append(1)),
        f"cannot write {lock} (No space left on device); free some space and run the same command again",
    )
    assert calls == [] and not lock.exists() and not out.exists()
    monkeypatch.setattr(os, "write", real_write)
    again = cli("batch", rows, "-o", out, backend=lambda: ScriptedBackend(" and then"))
    assert again[1][-1] == f"done: {out} (1 new, 0 kept)"  # the next run is not blocked


def test_an_empty_lock_left_by_a_crash_does_not_block(tmp_path, cli):
    rows = rows_file(tmp_path, "prompt\na\n")
    (tmp_path / "out.jsonl.lock").write_bytes(b"")
    assert cli("batch", rows, "-o", tmp_path / "out.jsonl")[1][-1] == f"done: {tmp_path / 'out.jsonl'} (1 new, 0 kept)"
    assert not (tmp_path / "out.jsonl.lock").exists()


# --- Ray settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--ray-actors", "0"], "--ray-actors 0 must be at least 1"),
        (["--ray-actors", "-1"], "--ray-actors -1 must be at least 1"),
        (["--ray-cpus", "-1"], "--ray-cpus -1 must be more than 0 (CPUs per actor, e.g. 1 or 0.5)"),
        (["--ray-cpus", "0"], "--ray-cpus 0 must be more than 0 (CPUs per actor, e.g. 1 or 0.5)"),
        (["--ray-gpus", "-0.5"], "--ray-gpus -0.5 must be 0 or more (GPUs per actor, e.g. 1 or 0.5)"),
        (["--ray-cpus", "nan"], "--ray-cpus nan must be more than 0 (CPUs per actor, e.g. 1 or 0.5)"),
    ],
)
def test_bad_ray_settings_are_one_line_before_anything_starts(tmp_path, cli, args, message):
    out = tmp_path / "out.jsonl"
    calls = []
    one_line(
        cli(
            "batch",
            rows_file(tmp_path, "prompt\na\n"),
            "-o",
            out,
            "--ray",
            "local",
            *args,
            backend=lambda: calls.append(1),
        ),
        message,
    )
    assert calls == [] and not out.exists()
