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
    assert calls[0]["mode"] == "story" and calls[0]["model"] is None
    assert calls[1]["mode"] == "chat" and calls[1]["model"] == "x.gguf" and calls[1]["ctx"] == 1024


def test_a_missing_model_is_one_line_before_the_screen_opens(tmp_path):
    out = subprocess.run([sys.executable, "-m", "talesmith.cli.main", "tui", "--model", str(tmp_path / "no.gguf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "no.gguf does not exist" in out.stderr and "Traceback" not in out.stderr


def test_the_cli_imports_no_textual():
    code = "import sys, talesmith.cli.main; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
