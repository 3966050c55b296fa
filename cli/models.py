"""`talesmith models ...`: a thin typer layer over talesmith.runtime.models.manage."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

models_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="The models pinned in models.lock: list, pull, verify, add, remove, lock, path, quality.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

LockOpt = typer.Option(None, "--lock", help="The models.lock to use (default: ./models.lock or $TALESMITH_LOCK).")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


@models_app.command("list")
def list_models(lock: Path | None = LockOpt) -> None:
    """A table of the models in the lock and whether their files are here and verified."""
    from rich.table import Table

    from talesmith.runtime.models.manage import rows

    table = Table("name", "format", "quant", "size", "here", "verified", box=None, pad_edge=False)
    style = {"present": "green", "missing": "dim", "partial": "yellow", "unpinned": "dim"}
    for r in rows(lock=lock):
        verified = {"yes": "[green]yes[/]", "MISMATCH": "[bold red]MISMATCH[/]"}.get(r.verified, r.verified)
        table.add_row(
            escape(r.name),
            r.format,
            escape(r.quantization),
            _size(r.size),
            f"[{style[r.present]}]{r.present}[/]",
            verified,
        )
    if not table.rows:
        from talesmith.runtime.models.resolve import lock_path

        err.print(f"[dim]no models in {escape(str(lock_path(lock)))}; add one with `talesmith models add`[/]")
        return
    out.print(table)


@models_app.command()
def pull(
    name: str = typer.Argument(..., help="A model name from models.lock."),
    force: bool = typer.Option(False, "--force", help="Download again even when the cache has the files."),
    lock: Path | None = LockOpt,
) -> None:
    """Download a model at its pinned commit (resuming a partial download) and verify every sha256."""
    from talesmith.runtime.models.entry import LockedFile
    from talesmith.runtime.models.manage import pull as pull_model

    def announce(i: int, n: int, f: LockedFile) -> None:
        err.print(f"[dim]{escape(name)}: {escape(f.name)} ({i + 1}/{n}, {_size(f.size)})[/]")

    result = pull_model(name, lock=lock, force=force, on_file=announce)
    for file in result.pinned:
        err.print(f"[yellow]note:[/] pinned the sha256 of {escape(file)}, seen for the first time")
    err.print(f"[green]verified[/] {len(result.files)} files of {escape(name)}")
    print(result.path)


@models_app.command()
def verify(
    name: str | None = typer.Argument(None, help="A model name (default: every model with files here)."),
    lock: Path | None = LockOpt,
) -> None:
    """Re-hash local files against the lock; exit status 2 when any is missing or altered."""
    from talesmith.runtime.models.manage import verify as verify_files
    from talesmith.runtime.models.manage import verify_error

    checks = verify_files(name, lock=lock)
    marks = {
        "ok": "[green]ok[/]",
        "missing": "[yellow]missing[/]",
        "mismatch": "[bold red]MISMATCH[/]",
        "unpinned": "[yellow]unpinned[/]",
    }
    for c in checks:
        out.print(f"{marks[c.state]}  {escape(c.model)}  {escape(c.name)}", soft_wrap=True)
    failure = verify_error(checks, lock=lock)
    if failure:
        raise failure
    if not checks:
        err.print("[dim]no model has files here to verify[/]")


@models_app.command()
def add(
    name: str = typer.Argument(
        ..., help="The name to give the model (optional before owner/repo:QUANT, which names it REPO-QUANT)."
    ),
    source: str | None = typer.Argument(
        None,
        help="A hub repo id (owner/name, or owner/name:QUANT for its GGUF of that quantization), "
        "or a local file or folder.",
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Branch, tag or commit of a hub repo (default: main)."
    ),
    include: list[str] | None = typer.Option(
        None, "--file", help="Only files matching this name or pattern (repeatable), e.g. 'tiny-Q4_K_M.gguf'."
    ),
    fmt: str | None = typer.Option(None, "--format", help="hf, gguf or onnx (default: guessed from the files)."),
    prompt_format: str | None = typer.Option(None, "--prompt-format", help="The prompt format the model expects."),
    preset: str | None = typer.Option(None, "--preset", help="The sampling preset for the model."),
    quantization: str | None = typer.Option(None, "--quantization", help="e.g. Q4_K_M."),
    architecture: str | None = typer.Option(None, "--architecture", help="e.g. LlamaForCausalLM."),
    lock: Path | None = LockOpt,
) -> None:
    """Add a model to the lock, pinned to a commit and to the sha256 of its files.

    `models add owner/repo:Q4_K_M` picks the repo's GGUF of that quantization, as llama.cpp's -hf does.
    """
    from talesmith.runtime.models.entry import ModelEntry
    from talesmith.runtime.models.pinning import add as add_model
    from talesmith.runtime.models.pinning import name_for

    if source is None:  # one argument: the source, named after itself
        source, name = name, name_for(name)
    entry, note = add_model(
        name,
        source,
        revision=revision,
        include=include or (),
        fmt=fmt,
        prompt_format=prompt_format,
        preset=preset,
        quantization=quantization,
        architecture=architecture,
        lock=lock,
    )
    if note:
        err.print(
            f"[yellow]note:[/] left the revision unresolved ({escape(note)}); run `talesmith models lock {name}` "
            f"where the hub is reachable",
            soft_wrap=True,
        )
        err.print(f"[green]added[/] {escape(name)}")
        return
    added = ModelEntry.from_table(name, entry)
    at = f" at {added.source.commit[:12]}" if added.source is not None and added.from_hub else ""
    err.print(f"[green]added[/] {escape(name)}{at} ({len(added.files)} files)")


@models_app.command()
def remove(name: str = typer.Argument(..., help="A model name from models.lock."), lock: Path | None = LockOpt) -> None:
    """Take a model out of the lock (downloaded files stay in the cache)."""
    from talesmith.runtime.models.resolve import remove_model

    remove_model(name, lock=lock)
    err.print(f"[green]removed[/] {name}")


@models_app.command("path")
def path_of(
    name: str = typer.Argument(..., help="A model name from models.lock."), lock: Path | None = LockOpt
) -> None:
    """Print the local path of a model (its GGUF file, or its folder), for scripts."""
    from talesmith.runtime.models.manage import model_path

    print(model_path(name, lock=lock))


@models_app.command("lock")
def lock_cmd(
    name: str = typer.Argument(..., help="A hub model from models.lock."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or commit (default: the entry's)."),
    lock: Path | None = LockOpt,
) -> None:
    """Resolve the model's branch or tag to the commit it points at now, and pin its files there."""
    from talesmith.runtime.models.entry import ModelEntry
    from talesmith.runtime.models.pinning import lock_model

    table, previous = lock_model(name, revision=revision, lock=lock)
    source = ModelEntry.from_table(name, table).source
    assert source is not None  # lock_model pins hub models only
    commit = source.commit
    change = "unchanged" if previous == commit else f"was {previous[:12] if previous != 'unresolved' else previous}"
    err.print(f"[green]locked[/] {name} to {source.revision} = {commit} ({change})")


@models_app.command()
def quality(
    name: str = typer.Argument(..., help="A quantized GGUF model from models.lock."),
    eval_text: Path | None = typer.Option(
        None, "--eval-text", help="Text file to measure on (default: bundled English and Japanese prose)."
    ),
    lock: Path | None = LockOpt,
) -> None:
    """Measure a quantization against its unquantized file: KL divergence, top-1 agreement, perplexity."""
    from rich.table import Table

    from talesmith.convert.quality import rerun

    result, reference = rerun(name, lock=lock, eval_path=eval_text)
    table = Table(
        "model", "against", "KL divergence", "top-1", "perplexity", "reference ppl", "tokens", box=None, pad_edge=False
    )
    table.add_row(
        escape(name),
        escape(reference),
        f"{result.kl_divergence:.5f}",
        f"{result.top1_agreement:.1%}",
        f"{result.perplexity:.3f}",
        f"{result.reference_perplexity:.3f}",
        str(result.tokens),
    )
    out.print(table)
