"""`talesmith import FILE`: a SillyTavern chat, preset or World Info, a KoboldAI story or a character card,
recognised by its content and saved into the library the app uses."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from talesmith.cli.options import err


def import_command(
    file: Path = typer.Argument(
        ...,
        help="The file: a SillyTavern chat (.jsonl), textgen or kobold preset, World "
        "Info, a KoboldAI story save, or a card (.png / .json).",
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="The app's folder for stories, chats, "
        "characters, lorebooks and presets (default: $TALESMITH_HOME or "
        "~/.local/share/talesmith).",
    ),
) -> None:
    """Bring a file from SillyTavern or KoboldAI into talesmith (nothing is written unless all of it reads)."""
    from talesmith.runtime.documents.importers import read_import, save_import
    from talesmith.tui.launch import default_data_dir

    root = data_dir or default_data_dir()
    imported = read_import(file, characters=root / "characters")
    path = save_import(imported, root)
    err.print(
        f"[green]imported[/] {imported.kind} {escape(repr(imported.name))} from {escape(str(file))} "
        f"-> {escape(str(path))}",
        soft_wrap=True,
    )
    for note in imported.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def export_command(
    file: Path = typer.Argument(..., help="A saved chat or story (the app's .json) or a lorebook."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="A chat to .jsonl (SillyTavern), a story to .json "
        "(KoboldAI Client), a lorebook to .json (SillyTavern World Info).",
    ),
) -> None:
    """Write a chat, story or lorebook back in SillyTavern's or KoboldAI's format."""
    from talesmith.runtime.documents.importers import export_text
    from talesmith.runtime.files import write_atomic

    write_atomic(output, export_text(file, output))
    err.print(f"[green]exported[/] {escape(str(file))} -> {escape(str(output))}", soft_wrap=True)
