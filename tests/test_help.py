"""Every command's --help reads like a well-kept CLI's at 80 columns: metavars, no type tags."""

import re
import subprocess
import sys

import pytest
import typer
from rich.cells import cell_len
from typer.testing import CliRunner

from talesmith.cli.main import app

TYPE_TAG = re.compile(r"<(str|bool|int|float|path|list\[[^\]]*\]|Path)>")


def command_paths(command=None, prefix=()):
    command = command or typer.main.get_command(app)
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*prefix, name))


COMMANDS = list(command_paths())


def help_text(path) -> str:
    result = CliRunner().invoke(
        app, [*path, "--help"], prog_name="talesmith", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_checked():
    assert {" ".join(p) for p in COMMANDS} >= {
        "",
        "generate",
        "batch",
        "convert",
        "tui",
        "models",
        "models add",
        "models path",
        "models pull",
        "models verify",
    }


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "talesmith")
def test_help_has_metavars_not_type_tags_and_fits_80_columns(path):
    text = help_text(path)
    assert TYPE_TAG.findall(text) == []
    too_wide = [line for line in text.splitlines() if cell_len(line) > 80]
    assert too_wide == []
    help_lines = [line for line in text.splitlines() if "--help" in line and "Show this message" in line]
    assert len(help_lines) == 1
    assert re.fullmatch(r"│ +--help +Show this message and( exit\.)? +│", help_lines[0]), help_lines[0]


def test_shared_options_name_their_values():
    text = help_text(["generate"])
    for option, shown in [
        ("--model", "NAME|PATH"),
        ("--lock", "PATH"),
        ("--ctx", "N"),
        ("--preset", "NAME"),
        ("--format", "NAME"),
        ("--config", "FILE"),
        ("--temperature", "X"),
        ("--stop", "TEXT"),
        ("--backend", "llama|onnx"),
        ("--device", "cpu|cuda"),
    ]:
        row = next(line for line in text.splitlines() if re.search(rf"│ +{re.escape(option)}\b", line))
        assert re.search(rf"\s{re.escape(shown)}\s", row), row
    assert "Usage: talesmith generate [OPTIONS] [PROMPT]" in text


def test_convert_names_its_lists():
    text = help_text(["convert"])
    assert re.search(r"--quant +TYPES ", text) and re.search(r"--to +FORMATS ", text)
    assert re.search(r"--lora +PATH\[:SCALE\] ", text)


def test_the_installed_command_at_80_columns():
    result = subprocess.run(
        [sys.executable, "-m", "talesmith.cli.main", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "80", "PATH": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert TYPE_TAG.findall(result.stdout) == []
    assert max(cell_len(line) for line in result.stdout.splitlines()) <= 80
