"""`talesmith convert`: a thin command over talesmith.convert.pipeline, with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, highlight=False)


def convert_command(
    source: str = typer.Argument(..., help="A checkpoint folder, or a hub repo id (owner/name)."),
    outdir: Path = typer.Option(..., "--output", "-o", help="Folder for the GGUF files."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch, tag or commit (default: main)."),
    lora: Optional[list[str]] = typer.Option(None, "--lora", help="A PEFT adapter folder, optionally PATH:SCALE (repeatable)."),
    quant: str = typer.Option("Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0", "--quant", help="Quantization types, comma-separated ('' for none)."),
    outtype: str = typer.Option("f16", "--outtype", help="Type of the unquantized file: f16, f32 or bf16."),
    name: Optional[str] = typer.Option(None, "--name", help="Base name of the files and lock entries."),
    device: str = typer.Option("cpu", "--device", help="Where the LoRA merge math runs: cpu or cuda."),
    prompt_format: Optional[str] = typer.Option(None, "--format", help="Prompt format to record (default: guessed from the name)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Sampling preset to record (default: guessed from the name)."),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Use the tokenizer of this folder or hub repo "
                                            "(for checkpoints that ship none, like Genji-JP: EleutherAI/gpt-j-6B)."),
    lock: Optional[Path] = typer.Option(None, "--lock", help="The models.lock to record the outputs in."),
) -> None:
    """Convert a Hugging Face checkpoint (with LoRA adapters merged) to GGUF files and quantize them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .lora import parse_spec
    from .pipeline import ConvertRequest, Progress as Hooks, convert
    from .quantize import parse_quants

    request = ConvertRequest(source, outdir, revision=revision, loras=tuple(parse_spec(s) for s in lora or []),
                             quants=tuple(parse_quants(quant)), outtype=outtype, name=name, device=device,
                             prompt_format=prompt_format, preset=preset, tokenizer=tokenizer)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bars:
        tasks: dict[str, int] = {}

        def on_file_start(kind: str, path: Path) -> None:
            tasks[kind] = bars.add_task(path.name, total=None)

        def on_tensor(plan, done: int, total: int) -> None:
            bars.update(tasks[request.outtype.upper()], total=total, completed=done, description=plan.name)

        def on_file_done(output) -> None:
            bars.update(tasks[output.kind], total=1, completed=1, description=output.path.name)

        outputs = convert(request, Hooks(on_tensor=on_tensor, on_file_start=on_file_start, on_file_done=on_file_done),
                          lock=lock)
    table = Table(title="talesmith convert")
    for column in ("file", "type", "size", "bits/weight", "seconds"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for o in outputs:
        table.add_row(str(o.path), o.kind, f"{o.size / 2**20:,.1f} MiB", f"{o.bits_per_weight:.2f}", f"{o.seconds:.1f}")
    Console().print(table)
