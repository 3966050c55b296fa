"""llama.cpp's own converter (convert_hf_to_gguf.py), as shipped in the llama-cpp-python 0.3.36 sdist.

    python bench/reference_convert.py --fetch                 # download and unpack the sdist once
    python bench/reference_convert.py PRE SRC --outfile F --outtype f16

PRE is the `tokenizer.ggml.pre` name to use, or `-` to let the converter find it by its vocabulary
hash (a retrained vocabulary of a tiny test model has no known hash). Used by bench/convert_speed.py
and by the parity tests, which skip when the sdist is not unpacked.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"
CACHE = Path(
    os.environ.get("TALESMITH_LLAMA_CPP_SRC") or Path.home() / ".cache" / "talesmith" / f"llama-cpp-python-{VERSION}"
)


def vendor_dir() -> Path | None:
    """The unpacked vendor/llama.cpp folder, or None when it is not here."""
    for candidate in (CACHE / "vendor" / "llama.cpp", CACHE):
        if (candidate / "convert_hf_to_gguf.py").exists() and (candidate / "gguf-py").exists():
            return candidate
    return None


def fetch() -> Path:
    """Download the sdist with pip and unpack it into the cache."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-q",
                f"llama-cpp-python=={VERSION}",
                "-d",
                tmp,
            ],
            check=True,
        )
        archive = next(Path(tmp).glob("*.tar.gz"))
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(f"{top}/vendor/llama.cpp/")
                and ("/gguf-py/" in m.name or "/conversion/" in m.name or m.name.endswith(".py"))
            ]
            for m in members:
                m.name = m.name[len(top) + 1 :]
            tar.extractall(CACHE, members=members, filter="data")
    found = vendor_dir()
    if found is None:
        raise SystemExit(f"the sdist unpacked into {CACHE} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    return found


def command(pre: str, source: Path, outfile: Path, outtype: str) -> list[str]:
    """The command line that runs the converter on `source` (for timing it in its own process)."""
    return [sys.executable, __file__, pre, str(source), "--outfile", str(outfile), "--outtype", outtype]


def main(argv: list[str]) -> None:
    if argv[:1] == ["--fetch"]:
        print(fetch())
        return
    vendor = vendor_dir()
    if vendor is None:
        raise SystemExit("llama.cpp's converter is not here; run `python bench/reference_convert.py --fetch`")
    pre = argv.pop(0)
    sys.path[:0] = [str(vendor), str(vendor / "gguf-py")]
    if pre != "-":
        from conversion import base  # the converter's own package, from the sdist

        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    sys.argv = [str(vendor / "convert_hf_to_gguf.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
