"""`talesmith convert`: a thin command over talesmith.convert.pipeline, with progress and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from talesmith.convert.architectures import TensorPlan
    from talesmith.convert.pipeline import Output

err = Console(stderr=True, highlight=False)
GGUF_DEFAULT = "Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0"
ONNX_DEFAULT = "fp32,int8,int4"


def split_quants(quant: str | None, targets: tuple[str, ...]) -> tuple[str, str]:
    """One --quant list for both formats: ONNX names (fp32, fp16, int8, int4, int4-b128, ...) go to ONNX, the
    rest to GGUF."""
    from talesmith.convert.onnx import ONNX_QUANTS

    if quant is None:
        return GGUF_DEFAULT, ONNX_DEFAULT
    items = [q.strip() for q in quant.split(",") if q.strip()]
    onnx = [q for q in items if q.lower() in ONNX_QUANTS]
    gguf = [q for q in items if q.lower() not in ONNX_QUANTS]
    if "gguf" not in targets and gguf:
        onnx += gguf  # reported as unknown ONNX quantizations
        gguf = []
    if "onnx" not in targets and onnx:
        from talesmith.runtime.errors import ConversionError

        raise ConversionError(f"--quant {onnx[0]} is an ONNX quantization; add --to onnx (or --to gguf,onnx)")
    return ",".join(gguf), ",".join(onnx) if onnx or "gguf" not in targets else ONNX_DEFAULT


def convert_command(
    source: str = typer.Argument(..., help="A checkpoint folder, or a hub repo id (owner/name, or gpt2 style)."),
    outdir: Path = typer.Option(..., "--output", "-o", help="Folder for the GGUF files and ONNX folders."),
    to: str = typer.Option("gguf", "--to", help="Output formats: gguf, onnx, or gguf,onnx (both from one merge)."),
    revision: str | None = typer.Option(None, "--revision", help="Hub branch, tag or commit (default: main)."),
    lora: list[str] | None = typer.Option(
        None, "--lora", help="A PEFT adapter folder, optionally PATH:SCALE (repeatable)."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="Quantization types, comma-separated: GGUF "
        f"({GGUF_DEFAULT} by default, '' for none) and ONNX ({ONNX_DEFAULT} by "
        "default; fp32, fp16, int8, int4, and int4-b64, int4-b128: larger blocks, faster with several sequences at "
        "once, less exact).",
    ),
    outtype: str = typer.Option("f16", "--outtype", help="Type of the unquantized file: f16, f32 or bf16."),
    name: str | None = typer.Option(None, "--name", help="Base name of the files and lock entries."),
    device: str = typer.Option("cpu", "--device", help="Where the LoRA merge and the ONNX export run: cpu or cuda."),
    prompt_format: str | None = typer.Option(
        None, "--format", help="Prompt format to record (default: guessed from the name)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Sampling preset to record (default: guessed from the name)."
    ),
    tokenizer: str | None = typer.Option(
        None,
        "--tokenizer",
        help="Use the tokenizer of this folder or hub repo "
        "(for checkpoints that ship none, like Genji-JP: EleutherAI/gpt-j-6B).",
    ),
    lock: Path | None = typer.Option(None, "--lock", help="The models.lock to record the outputs in."),
    quality: bool | None = typer.Option(
        None,
        "--quality/--no-quality",
        help="Measure each GGUF quantization against the unquantized file on a 128-token sample: KL divergence, "
        "top-1 agreement, perplexity (default: when the unquantized file is at most 2 GiB).",
    ),
    eval_text: Path | None = typer.Option(
        None, "--eval-text", help="Text file the quality is measured on (default: bundled English and Japanese prose)."
    ),
) -> None:
    """Convert a Hugging Face checkpoint (with LoRA adapters merged) to GGUF files and/or ONNX, and quantize them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from talesmith.convert.lora import parse_spec
    from talesmith.convert.onnx import parse_onnx_quants
    from talesmith.convert.pipeline import ConvertRequest, convert
    from talesmith.convert.pipeline import Progress as Hooks
    from talesmith.convert.quantize import parse_quants

    targets = tuple(t.strip().lower() for t in to.split(",") if t.strip())
    gguf_quants, onnx_quants = split_quants(quant, targets)
    request = ConvertRequest(
        source,
        outdir,
        revision=revision,
        loras=tuple(parse_spec(s) for s in lora or []),
        quants=tuple(parse_quants(gguf_quants)) if "gguf" in targets else (),
        outtype=outtype,
        name=name,
        device=device,
        prompt_format=prompt_format,
        preset=preset,
        tokenizer=tokenizer,
        targets=targets,
        onnx_quants=parse_onnx_quants(onnx_quants) if "onnx" in targets else (),
        quality=quality,
        eval_text=eval_text,
    )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def on_file_start(kind: str, path: Path) -> None:
            if kind == "QUALITY":
                n = len(request.quants)
                tasks[kind] = bars.add_task(f"quality against {path.name}", total=n, completed=0)
                return
            tasks[kind] = bars.add_task(path.name, total=None)

        def on_quality(output: Output) -> None:
            bars.advance(tasks["QUALITY"])

        def on_tensor(plan: TensorPlan, done: int, total: int) -> None:
            bars.update(tasks[request.outtype.upper()], total=total, completed=done, description=plan.name)

        def on_file_done(output: Output) -> None:
            bars.update(tasks[output.kind], total=1, completed=1, description=output.path.name)

        def on_note(text: str) -> None:
            bars.console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True)

        outputs = convert(
            request,
            Hooks(
                on_tensor=on_tensor,
                on_file_start=on_file_start,
                on_file_done=on_file_done,
                on_note=on_note,
                on_quality=on_quality,
            ),
            lock=lock,
        )
    print_summary(outputs, outdir, quality=quality)


def shown_path(path: Path, outdir: Path) -> str:
    """A file's name relative to the output folder (printed once above the table)."""
    try:
        return path.resolve().relative_to(outdir.resolve()).as_posix()
    except ValueError:
        return str(path)


def quality_caption(outputs: list[Output], *, quality: bool | None) -> str | None:
    """What the summary says about the quality report: on how much it was measured, or why it was not,
    and the command that measures it (on more of the text)."""
    from talesmith.convert.quality import AUTO_LIMIT, FULL_TOKENS

    ggufs = [o for o in outputs if o.format == "gguf"]
    if len(ggufs) < 2:
        return None
    base, first = ggufs[0], ggufs[1]
    command = f"`talesmith models quality {first.path.stem.lower()}`"
    measured = next((o.quality for o in ggufs if o.quality), None)
    if measured is None:
        why = (
            "--no-quality"
            if quality is False
            else f"{base.kind} is over {AUTO_LIMIT / 2**30:.0f} GiB; --quality measures it while converting"
        )
        return f"quality not measured ({why}); {command} measures a quantization"
    return (
        f"KL divergence and top-1 agreement against {base.kind}, perplexity on a sample of {measured.tokens} "
        f"tokens ({base.kind}: {measured.reference_perplexity:.2f}); {command} measures on up to "
        f"{FULL_TOKENS} tokens, --eval-text FILE on your own text"
    )


def percent(share: float) -> str:
    """A share as the table shows it: one decimal, and full agreement as 100% (one column narrower at 80)."""
    return "100%" if share == 1 else f"{share:.1%}"


def print_summary(outputs: list[Output], outdir: Path, *, quality: bool | None = None) -> None:
    console = Console(highlight=False)
    console.print(f"in {escape(str(outdir.resolve()))}:", soft_wrap=True)
    table = Table(title="talesmith convert")
    columns = ["file", "type", "size", "bits/w", "sec"]
    ref = next((o.quality for o in outputs if o.quality), None)
    measured = ref is not None
    detailed = any(o.format == "onnx" for o in outputs)
    columns += ["KL", "top-1", "ppl"] if measured else []
    columns += ["quantized"] if detailed else []
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("file", "quantized") else "right",
            overflow="fold",
            min_width=len(column) if column != "file" else 12,
        )
    for o in outputs:
        row = [
            escape(shown_path(o.path, outdir)),
            o.kind,
            f"{o.size / 2**20:,.1f} MiB",
            f"{o.bits_per_weight:.2f}",
            f"{o.seconds:.1f}",
        ]
        if measured:
            q = o.quality
            row += [f"{q.kl_divergence:.4f}", percent(q.top1_agreement), f"{q.perplexity:.2f}"] if q else ["", "", ""]
        if detailed:
            unchanged = o.format == "onnx" and o.kind in ("ONNX-INT8", "ONNX-INT4")
            row.append(o.detail or ("none: the size is unchanged" if unchanged else ""))
        table.add_row(*row)
    caption = quality_caption(outputs, quality=quality)
    if caption:
        table.caption = escape(caption)
    console.print(table)
