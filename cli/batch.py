"""`talesmith batch`: every row of a CSV or JSONL file into a resumable CSV or JSONL file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from talesmith.cli.options import ModelOptions, err, model_fields, option_groups, sampling_options
from talesmith.cli.parallel import ParallelOpt, RayArgs, parallel_sequences
from talesmith.cli.seedrun import command_settings, with_config
from talesmith.cli.template import TemplateOptions, batch_instruct_fields
from talesmith.runtime.documents.formats import FORMATS
from talesmith.runtime.documents.worldinfo import load_lore
from talesmith.runtime.errors import InputError, SettingsError


@sampling_options
@option_groups
def batch(
    input: Path = typer.Argument(
        ...,
        help="A .csv or .jsonl file: a 'prompt' column or the format's fields, "
        "optional 'id' and per-row sampling settings.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="A .csv or .jsonl file; rerunning resumes it (default: the --config file's output_file).",
    ),
    samples: int = typer.Option(1, "--count", "-n", help="Samples per row."),
    options: ModelOptions = ModelOptions(),
    parallel: int | None = ParallelOpt,
    ray_args: RayArgs = RayArgs(),
    timings: bool = typer.Option(
        False,
        "--timings",
        help="Also write how long each record took, to OUTPUT.timings.jsonl (records hold only what the "
        "command decides, so that runs compare byte for byte).",
    ),
    template: TemplateOptions = TemplateOptions(),
    *,
    sampling: dict[str, Any],
) -> None:
    """Generate for every row of a CSV or JSONL file into a resumable CSV or JSONL file."""
    from talesmith.runtime.batch_output import OutputFile, TimingsFile

    cfg = options.read_config()
    ray_options = ray_args.options()
    if output is None:
        output = cfg.seed.output_file if cfg.seed is not None else None
        if output is None:
            raise InputError("batch needs an output file: -o FILE.jsonl (or FILE.csv), or output_file in --config")
    if output.resolve() == input.resolve():
        raise InputError(f"output {output} is the input file; choose another output path")
    out = OutputFile(output)  # checked (ours, writable, no other writer) before any model is loaded
    times = None
    try:
        times = TimingsFile(output) if timings else None
        options = with_config(options, cfg)  # a TinyStories TOML's model is converted on first use
        _run(
            out,
            input,
            samples=samples,
            options=options,
            cfg=cfg,
            sampling=sampling,
            parallel=parallel,
            ray=ray_options,
            timings=times,
            template=template,
        )
    finally:
        if times is not None:
            times.close()
        out.close()


def _run(
    out: Any,
    input: Path,
    *,
    samples: int,
    options: ModelOptions,
    cfg: Any,
    sampling: dict[str, Any],
    parallel: int | None,
    ray: Any = None,
    timings: Any = None,
    template: TemplateOptions = TemplateOptions(),
) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from talesmith.runtime.batch import RecordSpec, check_resume, decided_by, plan_batch, read_rows, run_batch
    from talesmith.runtime.batch_parallel import local_executor
    from talesmith.runtime.batch_ray import ModelSource, RayExecutor
    from talesmith.runtime.files import sha256_file
    from talesmith.runtime.models.resolve import lock_path, sha256

    ref, backend = options.open()
    fmt, template_fields = batch_instruct_fields(options.fmt, ref, out.path, template)
    if fmt not in FORMATS:
        raise SettingsError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    rows = read_rows(input, fmt)
    settings = command_settings(options.preset, cfg, ref, sampling, backend, [row.text for row in rows], err)
    digest = sha256(ref.path)
    n_seq = parallel_sequences(parallel, backend, tasks=len(rows) * samples)
    spec = RecordSpec(
        fmt,
        {**model_fields(ref, fmt), **cfg.fields, **template_fields},
        settings,
        ref.name,
        digest,
        n_seq=n_seq,
        lore=load_lore(cfg.lorebooks),
    )
    plan = plan_batch(rows, samples, out, spec)
    resumed = check_resume(out, decided_by(spec, samples, [sha256_file(p) for p in cfg.lorebooks]))
    if resumed:
        err.print(f"[yellow]note:[/] {escape(resumed)}", soft_wrap=True)
    if plan.skipped:
        err.print(
            f"[dim]resuming {escape(str(out.path))}: {plan.skipped} of {len(plan.all_tasks)} already done[/]",
            soft_wrap=True,
        )
    tokens = {"n": 0, "start": time.perf_counter()}
    with Progress(
        TextColumn("[bold]batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} tokens/s"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        bar = progress.add_task("rows", total=len(plan.all_tasks), completed=plan.skipped, rate="-")

        def advance(record: dict[str, Any], timing: Any) -> None:
            tokens["n"] += record["completion_tokens"]  # over the wall time: parallel records overlap
            progress.update(bar, advance=1, rate=f"{tokens['n'] / (time.perf_counter() - tokens['start']):.1f}")

        def note(text: str) -> None:
            progress.console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True)

        if ray is None:
            run_batch(plan, out, local_executor(backend, n_seq), on_record=advance, on_note=note, timings=timings)
        else:
            source = ModelSource(
                options.model,
                str(lock_path(options.lock)),
                _text(lock_path(options.lock)),
                digest,
                gpu_layers=options.gpu_layers,
                n_ctx=options.ctx,
                backend=options.backend,
                device=options.device,
            )
            backend.close()  # the actors hold the model
            with RayExecutor(ray, source) as executor:
                run_batch(plan, out, executor, on_record=advance, on_note=note, timings=timings)
    err.print(f"[green]done:[/] {escape(str(out.path))} ({len(plan.todo)} new, {plan.skipped} kept)", soft_wrap=True)
    backend.close()


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""
