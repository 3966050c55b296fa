"""`talesmith analyze`: compare story sets by sentiment per genre, top opinion words and LDA topics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from talesmith.runtime.analysis.counting import NEGATIVE, POSITIVE, overlap
from talesmith.runtime.analysis.report import SetReport, genres, to_json
from talesmith.runtime.errors import InputError, SettingsError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def analyze_command(
    sets: list[str] = typer.Argument(
        ...,
        metavar="[NAME=]PATH",
        help="Story sets: each a batch output (.csv/.jsonl) or a training CSV "
        "(prompt, response, label); NAME defaults to the file name.",
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="The story column (default: text, else response)."
    ),
    genre_column: str | None = typer.Option(
        None,
        "--genre-column",
        help="The genre column (default: genre, else label, else the genre a genre-format prompt asks for).",
    ),
    sentiment_model: Path | None = typer.Option(
        None,
        "--sentiment-model",
        help="A local Hugging Face text-classification model folder to label the stories instead of VADER.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report here."),
    force: bool = typer.Option(False, "--force", help="Write the --html report over a file that exists."),
) -> None:
    """Sentiment by genre, top opinion words and LDA topics of each story set, side by side.

    Sentiment of each story's last 512 words; the top 30 positive and negative words; 5 topics of 20 words."""
    from talesmith.runtime.analysis.engines import check_extra
    from talesmith.runtime.analysis.records import read_story_sets
    from talesmith.runtime.analysis.run import analyze_set, toolkit

    if html is not None:
        check_report_path(html, force=force)
    check_extra()
    story_sets = read_story_sets(sets, text_column=text_column, genre_column=genre_column)
    for story_set in story_sets:
        for note in story_set.notes:
            err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    kit = toolkit(sentiment_model=sentiment_model)
    reports = []
    for story_set in story_sets:
        with err.status(f"analyzing {escape(story_set.name)} ({len(story_set.texts)} stories)"):
            reports.append(analyze_set(story_set, kit))
    if as_json:
        print(json.dumps(to_json(reports), ensure_ascii=False))
    else:
        show(reports)
    if html is not None:
        write_report(html, reports, force=force)


def check_report_path(html: Path, *, force: bool = False) -> None:
    """Before any work: the report is an .html file, never a folder, nor a file that exists (without --force)."""
    if html.suffix.lower() not in (".html", ".htm"):
        raise SettingsError(f"--html {html}: the report is an HTML file; give a path ending in .html")
    if html.is_dir():
        raise InputError(f"cannot write the report {html} (it is a folder); choose another --html path")
    if not force and (html.exists() or html.is_symlink()):
        raise InputError(
            f"{html} already exists and was left as it is; give --force to replace it, or another --html path"
        )


def write_report(html: Path, reports: Sequence[SetReport], *, force: bool = False) -> None:
    from talesmith.runtime.analysis.html import render
    from talesmith.runtime.files import TargetExistsError, write_atomic

    try:
        write_atomic(html, render(reports), replace=force)
    except TargetExistsError:
        raise InputError(
            f"{html} already exists and was left as it is; give --force to replace it, or another --html path"
        ) from None
    except OSError as e:
        raise InputError(f"cannot write the report {html} ({e.strerror or e}); choose another --html path") from None
    err.print(f"[green]wrote[/] {escape(str(html))}")


def show(reports: Sequence[SetReport]) -> None:
    out.print(sentiment_table(reports))
    for kind in (POSITIVE, NEGATIVE):
        out.print(words_table(reports, kind))
    for report in reports:
        out.print(topics_table(report))


def sentiment_table(reports: Sequence[SetReport]) -> Table:
    table = Table("set", "genre", "positive", "negative", "positive %", title="Sentiment by genre (last 512 words)")
    order = genres(reports)
    for report in reports:
        for genre in order:
            c = report.sentiment.get(genre)
            if c is None:
                continue
            total = c[POSITIVE] + c[NEGATIVE]
            share = f"{100 * c[POSITIVE] / total:.0f}" if total else "-"
            table.add_row(
                Text(report.name),
                Text(genre),
                str(c[POSITIVE]),
                str(c[NEGATIVE]),
                share,
                end_section=genre == order[-1],
            )
    return table


def words_table(reports: Sequence[SetReport], kind: str) -> Table:
    lists = [r.top_positive if kind == POSITIVE else r.top_negative for r in reports]
    table = Table("#", *(Column(header=Text(r.name)) for r in reports), title=f"Top {kind} words")
    for rank in range(max([len(words) for words in lists] + [0])):
        table.add_row(
            str(rank + 1), *(Text(f"{words[rank][0]} {words[rank][1]}") if rank < len(words) else "" for words in lists)
        )
    table.add_section()
    table.add_row("shared", *(f"{overlap(words, lists[0])}/{len(words)}" for words in lists))
    return table


def topics_table(report: SetReport) -> Table:
    table = Table("topic", "top words", title=Text(f"Topics: {report.name}"))
    for i, words in enumerate(report.topics):
        table.add_row(str(i + 1), Text(" ".join(words)))
    return table
