"""`talesmith generate`: one prompt, streamed to standard output (or one JSON object per sample)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from talesmith.cli.options import FIELDS_PANEL, ModelOptions, err, model_fields, option_groups, sampling_options
from talesmith.cli.parallel import ParallelOpt, parallel_chunks, parallel_sequences
from talesmith.cli.seedrun import command_settings, with_config
from talesmith.cli.template import (
    TemplateOptions,
    instruct_fields,
    reasoning_stream,
    template_notes,
)
from talesmith.runtime.documents.formats import make_document, with_lore
from talesmith.runtime.documents.lorebook import skipped_notes
from talesmith.runtime.documents.worldinfo import load_lore
from talesmith.runtime.errors import SettingsError

if TYPE_CHECKING:
    from talesmith.runtime.engine.generate import Chunk


@sampling_options
@option_groups
def generate(
    prompt: str = typer.Argument("", help="The text to continue (the story so far, your chat message, ...)."),
    count: int = typer.Option(1, "--count", "-n", help="How many samples to generate."),
    options: ModelOptions = ModelOptions(),
    title: str | None = typer.Option(None, help="Story title.", rich_help_panel=FIELDS_PANEL),
    author: str | None = typer.Option(None, help="Story author.", rich_help_panel=FIELDS_PANEL),
    genre: str | None = typer.Option(
        None, help="Story genre (or horror / fairy tale for --format genre).", rich_help_panel=FIELDS_PANEL
    ),
    tags: str | None = typer.Option(None, help="Story tags, comma-separated.", rich_help_panel=FIELDS_PANEL),
    style: str | None = typer.Option(None, help="Story style.", rich_help_panel=FIELDS_PANEL),
    memory: str | None = typer.Option(
        None, help="Memory: text kept at the top of a story.", rich_help_panel=FIELDS_PANEL
    ),
    author_note: str | None = typer.Option(
        None, help="Author's note, inserted near the end of a story.", rich_help_panel=FIELDS_PANEL
    ),
    author_note_depth: int | None = typer.Option(
        None, help="Lines from the end where the author's note goes.", rich_help_panel=FIELDS_PANEL
    ),
    synopsis: str | None = typer.Option(
        None, help="Synopsis (あらすじ) of a Japanese story.", rich_help_panel=FIELDS_PANEL
    ),
    character: str | None = typer.Option(None, help="Chat character's name.", rich_help_panel=FIELDS_PANEL),
    persona: str | None = typer.Option(None, help="Chat character's persona.", rich_help_panel=FIELDS_PANEL),
    scenario: str | None = typer.Option(None, help="Chat scenario.", rich_help_panel=FIELDS_PANEL),
    examples: list[str] | None = typer.Option(
        None, "--example", help="Example dialogue block (repeatable).", rich_help_panel=FIELDS_PANEL
    ),
    greeting: str | None = typer.Option(None, help="The character's first message.", rich_help_panel=FIELDS_PANEL),
    genre_style: str | None = typer.Option(
        None, help="Genre prompt style: falcon or llama.", rich_help_panel=FIELDS_PANEL
    ),
    action: str | None = typer.Option(
        None,
        help="--format adventure: what you do, say or add to the story, written in as '> You ...'.",
        rich_help_panel=FIELDS_PANEL,
    ),
    action_kind: str | None = typer.Option(
        None, help="--format adventure: do (the default), say or story.", rich_help_panel=FIELDS_PANEL
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per sample instead of text."),
    echo: bool = typer.Option(False, "--echo", help="Print the prompt before the generated text."),
    query: str | None = typer.Option(
        None, "--query", "-q", help="The prompt, as an option (as the TinyStories project's own command takes it)."
    ),
    parallel: int | None = ParallelOpt,
    template: TemplateOptions = TemplateOptions(),
    *,
    sampling: dict[str, Any],
) -> None:
    """Generate text from a prompt, streamed to standard output."""
    from talesmith.runtime.batch import check_trimmed, timing_fields
    from talesmith.runtime.engine.generate import prepare, stream
    from talesmith.runtime.models.resolve import sha256

    cfg = options.read_config()
    prompt = prompt if query is None else query
    options = with_config(options, cfg)  # a TinyStories TOML's model is converted on first use
    fields = {
        k: v
        for k, v in dict(
            title=title,
            author=author,
            genre=genre,
            tags=tags,
            style=style,
            memory=memory,
            author_note=author_note,
            author_note_depth=author_note_depth,
            synopsis=synopsis,
            character=character,
            persona=persona,
            scenario=scenario,
            examples=examples,
            greeting=greeting,
            genre_style=genre_style,
            action=action,
            action_kind=action_kind,
        ).items()
        if v not in (None, [])
    }
    if count < 1:
        raise SettingsError(f"--count {count} must be at least 1")
    ref, backend = options.open()
    fmt, template_fields = instruct_fields(options.fmt, ref, template)
    fields.update(template_fields)
    settings = command_settings(options.preset, cfg, ref, sampling, backend, [prompt], err)
    try:
        document = make_document(fmt, prompt, {**model_fields(ref, fmt), **cfg.fields, **fields})
    except ValueError as e:
        raise SettingsError(str(e)) from None
    prepared = prepare(backend, with_lore(document, load_lore(cfg.lorebooks)), settings)
    check_trimmed(document, prepared, n_ctx=backend.n_ctx, max_new_tokens=settings.max_new_tokens)
    for note in (*template_notes(prepared), *skipped_notes(prepared.lore)):
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if prepared.fitted.dropped:
        err.print(
            f"[yellow]note:[/] left out the {prepared.fitted.dropped} oldest lines to fit the context of "
            f"{backend.n_ctx} tokens (raise --ctx to keep them)"
        )
    rows = None
    if cfg.seed is not None and cfg.seed.output_file is not None:
        from talesmith.cli.seedrun import SampleRows

        rows = SampleRows(cfg.seed.output_file, prepared.fitted.text)
    base_seed = settings.seed
    out = sys.stdout
    n_seq = parallel_sequences(parallel or 1, backend, tasks=count)  # one at a time, streamed, unless asked
    sample_settings = [
        settings if base_seed is None else settings.replace(seed=(base_seed + i) % 2**32) for i in range(count)
    ]
    ordered = (
        parallel_chunks(backend, prepared.tokens, sample_settings, stops=prepared.stops, n_seq=n_seq)
        if n_seq > 1
        else None
    )
    for i in range(count):
        run_settings = settings if base_seed is None else settings.replace(seed=(base_seed + i) % 2**32)
        if echo and not as_json:
            out.write(prepared.fitted.text)
        parts: list[str] = []
        tokens: list[int] = []
        chunks: Iterator[Chunk]
        if ordered is None:
            backend.reset()  # each sample from an empty cache: -n 3 --seed 7 writes what --seed 7, 8, 9 would
            chunks = stream(backend, prepared.tokens, run_settings, stops=prepared.stops)
        else:
            chunks = iter([next(ordered)])  # decoded together with the other samples
        thinking = reasoning_stream(prepared)
        for chunk in chunks:
            tokens.extend(chunk.tokens)
            thought, said = thinking.feed(chunk.text) if thinking else ("", chunk.text)
            if chunk.finish_reason is not None and thinking:
                rest = thinking.finish()
                thought, said = thought + rest[0], said + rest[1]
            parts.append(said)
            if not as_json:
                if thought and (template.reasoning or "show") == "show":
                    err.print(f"[dim]{escape(thought)}[/]", end="", soft_wrap=True)
                out.write(said)
                out.flush()
        if as_json:
            out.write(
                json.dumps(
                    {
                        "text": "".join(parts),
                        **({"reasoning": thinking.reasoning.strip()} if thinking and thinking.reasoning else {}),
                        "prompt": prepared.fitted.text,
                        "tokens": tokens,
                        "seed": chunk.seed,
                        "finish_reason": chunk.finish_reason,
                        "model": ref.name,
                        "model_path": str(ref.path),
                        "model_sha256": sha256(ref.path),
                        "settings": run_settings.replace(seed=chunk.seed).to_dict(),
                        "timings": timing_fields(chunk.timing),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        else:
            out.write("\n" if i == count - 1 else "\n\n---\n\n")
            err.print(
                f"[dim]{ref.name} · {backend.name} · seed {chunk.seed} · {chunk.timing.generated_tokens} tokens "
                f"· {chunk.timing.tokens_per_second:.1f} tokens/s · {chunk.finish_reason}[/]"
            )
        out.flush()
        if rows is not None:
            rows.add(
                i,
                prompt=prepared.fitted.text,
                text="".join(parts),
                chunk=chunk,
                settings=run_settings,
                model=ref.name,
                sha=sha256(ref.path),
            )
    if rows is not None:
        rows.close()
    backend.close()
