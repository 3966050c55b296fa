"""The `talesmith` command: a thin typer front-end over the runtime and convert libraries.

Each command lives in its own module and is registered here. Errors a user can cause print one line
and exit with status 2.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from talesmith.cli.analyze import analyze_command
from talesmith.cli.batch import batch
from talesmith.cli.convert import convert_command
from talesmith.cli.generate import generate
from talesmith.cli.help import TidyGroup
from talesmith.cli.importing import export_command, import_command
from talesmith.cli.models import models_app
from talesmith.cli.options import CtxOpt, GpuOpt, LockOpt, ModelOpt, SpinOpt, ThreadsOpt, err
from talesmith.cli.serve.command import serve as serve_command
from talesmith.cli.template import template_app
from talesmith.runtime.errors import TalesmithError

app = typer.Typer(
    cls=TidyGroup,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Local story writing and persona chat with fiction models. "
    "Without a command, opens the terminal app (the same as `talesmith tui`).",
)
app.command("generate")(generate)
app.command("batch")(batch)
app.command("import")(import_command)
app.command("export")(export_command)
app.add_typer(models_app, name="models")
app.command("convert")(convert_command)
app.command("analyze")(analyze_command)
app.command("serve")(serve_command)
app.add_typer(template_app, name="template")


DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="Folder for stories, chats and characters (default: $TALESMITH_HOME or ~/.local/share/talesmith).",
)
ChatOpt = typer.Option(False, "--chat", help="Open on the chat screen instead of the story screen.")


@app.command()
def tui(
    model: str | None = ModelOpt,
    lock: Path | None = LockOpt,
    ctx: int | None = CtxOpt,
    gpu_layers: int = GpuOpt,
    threads: int | None = ThreadsOpt,
    spin: bool = SpinOpt,
    data_dir: Path | None = DataDirOpt,
    chat: bool = ChatOpt,
) -> None:
    """Open the terminal app: story writing and persona chat."""
    from talesmith.tui.launch import run

    run(
        model=model,
        lock=lock,
        ctx=ctx,
        gpu_layers=gpu_layers,
        threads=threads,
        spin=spin,
        data_dir=data_dir,
        mode="chat" if chat else "",  # the screen shown last, else story
    )


def _no_command(context: typer.Context, **options: Any) -> None:
    """Without a command, open the terminal app (it takes every option of `talesmith tui`)."""
    if context.invoked_subcommand is None:
        tui(**options)


_no_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *inspect.signature(tui, eval_str=True).parameters.values(),
    ]
)
app.callback(invoke_without_command=True)(_no_command)


def main() -> None:
    try:
        app()
    except TalesmithError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
