"""`talesmith import FILE` and `talesmith export FILE -o OUT`: files of SillyTavern, KoboldAI and NovelAI
recognised by their content and saved into the library the app uses, and written back.

Nothing the user has is written over unless they say so: an import whose name is taken asks on a terminal
(replace, or keep both, as the app's F7 does) and keeps both otherwise; an export refuses an existing file
without `--force`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from talesmith.cli.options import err
from talesmith.runtime.errors import InputError

DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="The app's folder for stories, chats, characters, lorebooks and presets (default: $TALESMITH_HOME "
    "or the platform's data folder, ~/.local/share/talesmith on Linux).",
)


def interactive() -> bool:
    """Whether a person can answer a question (stdin and stderr are a terminal)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask_replace(kind: str, name: str, existing: Path) -> bool:
    """The app's F7 question on the terminal: replace the kept file (r), or keep both (k, the default)."""
    while True:
        answer = typer.prompt(
            f"A {kind} {name!r} is already kept in {existing}. Replace it (r) or keep both (k)?", default="k", err=True
        )
        if answer.strip().lower() in ("r", "replace"):
            return True
        if answer.strip().lower() in ("k", "keep", "keep both"):
            return False


def import_command(
    file: Path = typer.Argument(
        ...,
        help="The file: a SillyTavern chat (.jsonl), textgen or kobold preset, World Info, a NovelAI "
        "scenario, lorebook or preset, a KoboldAI story save, or a card (.png / .json).",
    ),
    data_dir: Path | None = DataDirOpt,
    replace: bool = typer.Option(
        False, "--replace", help="A character, lorebook or preset of the same name already kept is replaced."
    ),
    keep_both: bool = typer.Option(
        False,
        "--keep-both",
        help="Keep the one already there and save this one beside it (what happens without a terminal).",
    ),
) -> None:
    """Bring a file from SillyTavern, KoboldAI or NovelAI into talesmith; nothing kept is replaced unless asked.

    Nothing is written unless all of the file reads."""
    from talesmith.runtime.documents.importers import clash, read_import, saved_import
    from talesmith.runtime.files import default_data_dir

    if replace and keep_both:
        raise InputError("--replace and --keep-both contradict each other; give one of them")
    root = data_dir or default_data_dir()
    try:
        imported = read_import(file, characters=root / "characters")
        existing = clash(imported, root)
        if existing is not None and not replace and not keep_both and interactive():
            replace = ask_replace(imported.kind, imported.name, existing)
        saved, path = saved_import(imported, root, replace=replace)
        if saved.kind == "character":  # a PNG card's picture is kept beside it, for the app's export
            from talesmith.runtime.documents.characters import keep_avatar

            keep_avatar(file, path)
    except OSError as e:  # anything the library did not name itself
        raise InputError(f"cannot import {file} into {root} ({e.strerror or e})") from None
    err.print(
        f"[green]imported[/] {saved.kind} {escape(repr(saved.name))} from {escape(str(file))} -> {escape(str(path))}",
        soft_wrap=True,
    )
    if existing is not None:
        what = f"replaced {existing}" if replace else f"{existing} was kept as it is, the import saved beside it"
        err.print(f"[yellow]note:[/] a {saved.kind} of that name was already kept: {escape(what)}", soft_wrap=True)
    for note in imported.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def _user_name(root: Path) -> str | None:
    """The app's user name (F8), for a chat that sets none of its own; None when it cannot be read."""
    from talesmith.tui.preferences import load

    try:
        return load(root).user.name
    except InputError:
        return None


def export_command(
    file: Path = typer.Argument(..., help="A saved chat or story (the app's .json) or a lorebook."),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="A chat to .jsonl (SillyTavern), a story to .json "
        "(KoboldAI Client), a lorebook to .json (SillyTavern World Info).",
    ),
    force: bool = typer.Option(False, "--force", help="Write over OUTPUT when it exists."),
    data_dir: Path | None = DataDirOpt,
) -> None:
    """Write a chat, story or lorebook back in SillyTavern's or KoboldAI's format, never over a file without --force."""
    from talesmith.runtime import files
    from talesmith.runtime.documents.importers import export_text

    fix = "give --force to replace it, or another -o path"
    files.check_target(output, force=force, fix=fix)
    text = export_text(file, output, user_name=_user_name(data_dir or files.default_data_dir()))
    try:
        files.write_atomic(output, text, replace=force)
    except files.TargetExistsError:
        raise InputError(f"{output} already exists and was left as it is; {fix}") from None
    except OSError as e:
        raise InputError(f"cannot write {output} ({files.reason(e)}); choose another -o path") from None
    err.print(f"[green]exported[/] {escape(str(file))} -> {escape(str(output))}", soft_wrap=True)
