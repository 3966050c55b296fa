"""The package's promises: one namespace in site-packages, and a runtime that never imports torch."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_wheel_installs_only_the_talesmith_namespace(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("talesmith-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"talesmith", wheel.name.split("-py3")[0] + ".dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    for part in (
        "cli/main.py",
        "convert/__init__.py",
        "convert/architectures/llama.py",
        "runtime/engine/generate.py",
        "runtime/documents/prompts.py",
        "runtime/models/resolve.py",
        "tui/app.py",
    ):
        assert f"talesmith/{part}" in names, part
    assert "talesmith/tui/__init__.py" in names
    # every package folder of the tree is in the wheel (a subpackage missing from pyproject.toml would not be)
    for init in sorted(p for part in ("runtime", "convert", "cli", "tui") for p in (ROOT / part).rglob("__init__.py")):
        assert f"talesmith/{init.relative_to(ROOT).as_posix()}" in names, init


def test_runtime_and_cli_import_no_heavy_conversion_libraries():
    code = (
        "import sys, talesmith.cli.main, talesmith.runtime.engine.llama, talesmith.runtime.batch; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'optimum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
