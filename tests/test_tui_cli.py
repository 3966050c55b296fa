"""The `talesmith tui` command and `talesmith` with no arguments."""

import subprocess
import sys

from typer.testing import CliRunner

from talesmith.cli import main as cli


def test_no_arguments_and_tui_open_the_app(monkeypatch):
    calls = []
    import talesmith.tui.launch as launch

    monkeypatch.setattr(launch, "run", lambda **kwargs: calls.append(kwargs))
    runner = CliRunner()
    assert runner.invoke(cli.app, []).exit_code == 0
    assert runner.invoke(cli.app, ["tui", "--model", "x.gguf", "--chat", "--ctx", "1024"]).exit_code == 0
    assert calls[0]["mode"] == "" and calls[0]["model"] is None  # the screen shown last (story the first time)
    assert calls[1]["mode"] == "chat" and calls[1]["model"] == "x.gguf" and calls[1]["ctx"] == 1024


def test_a_missing_model_is_one_line_before_the_screen_opens(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "talesmith.cli.main", "tui", "--model", str(tmp_path / "no.gguf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no.gguf does not exist" in out.stderr and "Traceback" not in out.stderr


def test_the_cli_imports_no_textual():
    code = "import sys, talesmith.cli.main; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"


def test_no_command_takes_every_option_of_tui(monkeypatch, tmp_path):
    calls = []
    import talesmith.tui.launch as launch

    monkeypatch.setattr(launch, "run", lambda **kwargs: calls.append(kwargs))
    args = [
        "--model",
        "x.gguf",
        "--lock",
        str(tmp_path / "m.lock"),
        "--ctx",
        "2048",
        "--gpu-layers",
        "-1",
        "--threads",
        "3",
        "--no-spin",
        "--data-dir",
        str(tmp_path / "d"),
        "--chat",
    ]
    for argv in (args, ["tui", *args]):
        result = CliRunner().invoke(cli.app, argv)
        assert result.exit_code == 0, result.output
    assert (
        calls[0]
        == calls[1]
        == dict(
            model="x.gguf",
            lock=tmp_path / "m.lock",
            ctx=2048,
            gpu_layers=-1,
            threads=3,
            spin=False,
            data_dir=tmp_path / "d",
            mode="chat",
        )
    )
