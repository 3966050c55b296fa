"""The `talesmith` command: a thin typer layer over the runtime's library functions.

Every sampling setting becomes one option, generated from SamplingSettings so that the
names cannot drift. Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .cli_models import models_app
from .documents import FIELDS, FORMATS, make_document
from .errors import InputError, SettingsError, TalesmithError
from .settings import FIELD_NAMES, PRESETS, SamplingSettings, settings_from

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Local story writing and persona chat with fiction models. "
                       "Without a command, opens the terminal app (the same as `talesmith tui`).")
err = Console(stderr=True, highlight=False)
app.add_typer(models_app, name="models")

_TUPLE_FIELDS = {"stop", "banned", "dry_sequence_breakers"}


def _option_type(f: dataclasses.Field) -> Any:
    if f.name in _TUPLE_FIELDS:
        return Optional[list[str]]
    return Optional[int] if f.type in ("int", "int | None") else Optional[float]


def sampling_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one option per sampling setting; the command receives them as `sampling`."""
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "sampling"]
    for f in dataclasses.fields(SamplingSettings):
        flag = "--" + f.name.replace("_", "-")
        option = typer.Option(None, flag, help=f.metadata["help"], rich_help_panel="Sampling", show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=_option_type(f)))

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        sampling = {}
        for name in FIELD_NAMES:
            value = kwargs.pop(name, None)
            if value is not None and value != []:
                sampling[name] = tuple(value) if name in _TUPLE_FIELDS else value
        return func(sampling=sampling, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


@dataclasses.dataclass(frozen=True)
class Config:
    """The contents of a `--config FILE.toml`: model, preset, format and its fields, and [sampling]."""

    model: str | None = None
    preset: str | None = None
    format: str | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"config file {path} is not valid TOML ({e})") from None
    known = {"model", "preset", "format", "sampling", "fields"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"config file {path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    sampling = data.get("sampling", {})
    bad = sorted(set(sampling) - FIELD_NAMES)
    if bad:
        raise SettingsError(f"config file {path}: unknown sampling setting {bad[0]!r}")
    return Config(data.get("model"), data.get("preset"), data.get("format"), data.get("fields", {}), sampling)


def _load(model: str | None, lock: Path | None, ctx: int | None, gpu_layers: int, threads: int | None,
          backend: str | None = None, device: str = "cpu"):
    from .backends import model_metadata, open_backend
    from .models import resolve

    ref = resolve(model, lock=lock)
    opened = open_backend(ref.path, backend=backend, device=device, n_ctx=ctx, gpu_layers=gpu_layers, threads=threads)
    for warning in opened.warnings:
        err.print(f"[yellow]note:[/] {escape(warning)}")
    # A model converted by talesmith names its prompt format and preset (GGUF metadata, talesmith.json).
    meta = model_metadata(opened)
    # An ONNX model is a folder; its model.onnx is the file that JSON output and batch records hash.
    path = ref.path / "model.onnx" if ref.path.is_dir() and (ref.path / "model.onnx").exists() else ref.path
    ref = dataclasses.replace(ref, path=path, prompt_format=ref.prompt_format or meta.get("prompt_format"),
                              preset=ref.preset or meta.get("preset"))
    return ref, opened


def _settings(preset: str | None, config: Config, ref_preset: str | None, sampling: dict[str, Any]) -> SamplingSettings:
    name = preset or config.preset or ref_preset or "default"
    return settings_from(name, {**config.sampling, **sampling})


def _model_fields(ref: Any, fmt: str) -> dict[str, Any]:
    """The format fields a model's lock entry asks for, when its own format is used."""
    return ref.format_fields if fmt == ref.prompt_format else {}


ModelOpt = typer.Option(None, "--model", "-m", help="A .gguf file, an ONNX model folder or a name from models.lock "
                        "(default: the bundled model).")
LockOpt = typer.Option(None, "--lock", help="The models.lock to read (default: ./models.lock or $TALESMITH_LOCK).")
PresetOpt = typer.Option(None, "--preset", help=f"Sampling preset: {', '.join(PRESETS)}.")
FormatOpt = typer.Option(None, "--format", "-f", help=f"Prompt format: {', '.join(FORMATS)}.")
CtxOpt = typer.Option(None, "--ctx", help="Context size in tokens (default: the model's, at most 4096).")
GpuOpt = typer.Option(0, "--gpu-layers", help="Layers to offload to the GPU (-1: all); needs a CUDA build of llama-cpp-python.")
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads (default: all cores).")
BackendOpt = typer.Option(None, "--backend", help="llama (GGUF) or onnx (default: from the model file).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu or cuda (ONNX Runtime's CUDA provider; with llama, all layers "
                         "on the GPU unless --gpu-layers says otherwise).")
ConfigOpt = typer.Option(None, "--config", help="A TOML file with model, preset, format, \\[fields] and \\[sampling].")
_F = "Format fields"


@app.command()
@sampling_options
def generate(
    prompt: str = typer.Argument("", help="The text to continue (the story so far, your chat message, ...)."),
    model: Optional[str] = ModelOpt,
    lock: Optional[Path] = LockOpt,
    preset: Optional[str] = PresetOpt,
    fmt: Optional[str] = FormatOpt,
    title: Optional[str] = typer.Option(None, help="Story title.", rich_help_panel=_F),
    author: Optional[str] = typer.Option(None, help="Story author.", rich_help_panel=_F),
    genre: Optional[str] = typer.Option(None, help="Story genre (or horror / fairy tale for --format genre).", rich_help_panel=_F),
    tags: Optional[str] = typer.Option(None, help="Story tags, comma-separated.", rich_help_panel=_F),
    style: Optional[str] = typer.Option(None, help="Story style.", rich_help_panel=_F),
    memory: Optional[str] = typer.Option(None, help="Memory: text kept at the top of a story.", rich_help_panel=_F),
    author_note: Optional[str] = typer.Option(None, help="Author's note, inserted near the end of a story.", rich_help_panel=_F),
    author_note_depth: Optional[int] = typer.Option(None, help="Lines from the end where the author's note goes.", rich_help_panel=_F),
    synopsis: Optional[str] = typer.Option(None, help="Synopsis (あらすじ) of a Japanese story.", rich_help_panel=_F),
    character: Optional[str] = typer.Option(None, help="Chat character's name.", rich_help_panel=_F),
    persona: Optional[str] = typer.Option(None, help="Chat character's persona.", rich_help_panel=_F),
    scenario: Optional[str] = typer.Option(None, help="Chat scenario.", rich_help_panel=_F),
    examples: Optional[list[str]] = typer.Option(None, "--example", help="Example dialogue block (repeatable).", rich_help_panel=_F),
    greeting: Optional[str] = typer.Option(None, help="The character's first message.", rich_help_panel=_F),
    genre_style: Optional[str] = typer.Option(None, help="Genre prompt style: falcon or llama.", rich_help_panel=_F),
    count: int = typer.Option(1, "--count", "-n", help="How many samples to generate."),
    ctx: Optional[int] = CtxOpt,
    gpu_layers: int = GpuOpt,
    threads: Optional[int] = ThreadsOpt,
    backend_name: Optional[str] = BackendOpt,
    device: str = DeviceOpt,
    config: Optional[Path] = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per sample instead of text."),
    echo: bool = typer.Option(False, "--echo", help="Print the prompt before the generated text."),
    sampling: dict[str, Any] = {},
) -> None:
    """Generate text from a prompt, streamed to standard output."""
    from .generate import prepare, stream
    from .models import sha256

    cfg = read_config(config)
    fmt = fmt or cfg.format
    fields = {k: v for k, v in dict(
        title=title, author=author, genre=genre, tags=tags, style=style, memory=memory, author_note=author_note,
        author_note_depth=author_note_depth, synopsis=synopsis, character=character, persona=persona,
        scenario=scenario, examples=examples, greeting=greeting, genre_style=genre_style).items()
        if v not in (None, [])}
    if count < 1:
        raise SettingsError(f"--count {count} must be at least 1")
    ref, backend = _load(model or cfg.model, lock, ctx, gpu_layers, threads, backend_name, device)
    fmt = fmt or ref.prompt_format or "raw"
    settings = _settings(preset, cfg, ref.preset, sampling)
    try:
        document = make_document(fmt, prompt, {**_model_fields(ref, fmt), **cfg.fields, **fields})
    except ValueError as e:
        raise SettingsError(str(e)) from None
    prepared = prepare(backend, document, settings)
    if prepared.fitted.dropped:
        err.print(f"[yellow]note:[/] left out the {prepared.fitted.dropped} oldest lines to fit the context of "
                  f"{backend.n_ctx} tokens (raise --ctx to keep them)")
    base_seed = settings.seed
    out = sys.stdout
    for i in range(count):
        run_settings = settings if base_seed is None else settings.replace(seed=(base_seed + i) % 2**32)
        if echo and not as_json:
            out.write(prepared.fitted.text)
        parts: list[str] = []
        tokens: list[int] = []
        for chunk in stream(backend, prepared.tokens, run_settings, stops=prepared.stops):
            parts.append(chunk.text)
            tokens.extend(chunk.tokens)
            if not as_json:
                out.write(chunk.text)
                out.flush()
        if as_json:
            t = chunk.timing
            out.write(json.dumps({
                "text": "".join(parts), "prompt": prepared.fitted.text, "tokens": tokens, "seed": chunk.seed,
                "finish_reason": chunk.finish_reason, "model": ref.name, "model_path": str(ref.path),
                "model_sha256": sha256(ref.path), "settings": run_settings.replace(seed=chunk.seed).to_dict(),
                "timings": {"prompt_tokens": t.prompt_tokens, "prompt_evaluated": t.prompt_evaluated,
                            "prompt_seconds": round(t.prompt_seconds, 4), "generated_tokens": t.generated_tokens,
                            "generate_seconds": round(t.generate_seconds, 4),
                            "first_token_seconds": round(t.first_token_seconds or 0.0, 4),
                            "tokens_per_second": round(t.tokens_per_second, 2)},
            }, ensure_ascii=False) + "\n")
        else:
            out.write("\n" if i == count - 1 else "\n\n---\n\n")
            err.print(f"[dim]{ref.name} · {backend.name} · seed {chunk.seed} · {chunk.timing.generated_tokens} tokens "
                      f"· {chunk.timing.tokens_per_second:.1f} tokens/s · {chunk.finish_reason}[/]")
        out.flush()
    backend.close()


@app.command()
@sampling_options
def batch(
    input: Path = typer.Argument(..., help="A .csv or .jsonl file: a 'prompt' column or the format's fields, "
                                             "optional 'id' and per-row sampling settings."),
    output: Path = typer.Option(..., "--output", "-o", help="A .csv or .jsonl file; rerunning resumes it."),
    samples: int = typer.Option(1, "--count", "-n", help="Samples per row."),
    model: Optional[str] = ModelOpt,
    lock: Optional[Path] = LockOpt,
    preset: Optional[str] = PresetOpt,
    fmt: Optional[str] = FormatOpt,
    ctx: Optional[int] = CtxOpt,
    gpu_layers: int = GpuOpt,
    threads: Optional[int] = ThreadsOpt,
    backend_name: Optional[str] = BackendOpt,
    device: str = DeviceOpt,
    config: Optional[Path] = ConfigOpt,
    sampling: dict[str, Any] = {},
) -> None:
    """Generate for every row of a CSV or JSONL file into a resumable CSV or JSONL file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .batch import OutputFile, plan_batch, read_rows, run_batch
    from .models import sha256

    cfg = read_config(config)
    if output.resolve() == input.resolve():
        raise InputError(f"output {output} is the input file; choose another output path")
    output.parent.mkdir(parents=True, exist_ok=True)
    out = OutputFile(output)
    ref, backend = _load(model or cfg.model, lock, ctx, gpu_layers, threads, backend_name, device)
    fmt = fmt or cfg.format or ref.prompt_format or "raw"
    if fmt not in FORMATS:
        raise SettingsError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    rows = read_rows(input, fmt)
    settings = _settings(preset, cfg, ref.preset, sampling)
    digest = sha256(ref.path)
    plan = plan_batch(rows, samples, out, model_sha256=digest)
    if plan.skipped:
        err.print(f"[dim]resuming {output}: {plan.skipped} of {plan.skipped + len(plan.tasks)} already done[/]")
    tokens = {"n": 0, "s": 0.0}
    with Progress(TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]} tokens/s"), TimeRemainingColumn(), console=err) as progress:
        bar = progress.add_task("rows", total=len(plan.tasks) + plan.skipped, completed=plan.skipped, rate="-")

        def advance(record: dict[str, Any]) -> None:
            tokens["n"] += record["completion_tokens"]
            tokens["s"] += record["seconds"]
            progress.update(bar, advance=1, rate=f"{tokens['n'] / tokens['s']:.1f}" if tokens["s"] else "-")

        try:
            run_batch(backend, plan, out, fmt=fmt, fields={**_model_fields(ref, fmt), **cfg.fields}, settings=settings, model=ref.name,
                      model_sha256=digest, on_record=advance)
        finally:
            out.close()
    err.print(f"[green]done:[/] {output} ({len(plan.tasks)} new, {plan.skipped} kept)")
    backend.close()


@app.callback(invoke_without_command=True)
def _no_command(ctx: typer.Context) -> None:
    """Without a command, open the terminal app."""
    if ctx.invoked_subcommand is None:
        tui(model=None, lock=None, ctx=None, gpu_layers=0, threads=None, data_dir=None, chat=False)


@app.command()
def tui(
    model: Optional[str] = ModelOpt,
    lock: Optional[Path] = LockOpt,
    ctx: Optional[int] = CtxOpt,
    gpu_layers: int = GpuOpt,
    threads: Optional[int] = ThreadsOpt,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder for stories, chats and characters "
                                            "(default: $TALESMITH_HOME or ~/.local/share/talesmith)."),
    chat: bool = typer.Option(False, "--chat", help="Open on the chat screen instead of the story screen."),
) -> None:
    """Open the terminal app: story writing and persona chat."""
    from talesmith.tui.launch import run

    run(model=model, lock=lock, ctx=ctx, gpu_layers=gpu_layers, threads=threads, data_dir=data_dir,
        mode="chat" if chat else "story")


from talesmith.convert.cli import convert_command  # noqa: E402  (light: heavy imports happen inside)

app.command("convert")(convert_command)


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
