"""`generate --config` and `batch --config` with the TinyStories project's own TOML: its model converted on first
use (with a progress bar), its device, and its output_file of one CSV row per sample (batch output's columns)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from talesmith.cli.options import Config, ModelOptions, err, resolve_settings


def with_config(options: ModelOptions, config: Config) -> ModelOptions:
    """`options` with the config's model and format where they give none: a TinyStories TOML's model
    (converted on first use, with a progress bar) and its device."""
    model, device = config_model(config, options.model, options.device, err)
    return dataclasses.replace(options, model=model or config.model, device=device, fmt=options.fmt or config.format)


def config_model(config: Any, model: str | None, device: str, err: Console) -> tuple[str | None, str]:
    """The model and device to use: `--model` when given, else a TinyStories-style config's model (converted on
    first use, from the cache afterwards) and device, else `model` as it is (the config's own `model` key or None)."""
    if config.seed is None or model:
        return model, device
    return seed_model(config.seed, device, err)


def seed_model(seed: Any, device: str, err: Console) -> tuple[str, str]:
    """The converted model's path (converting it first when the cache lacks it) and the device to use."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from talesmith.convert.pipeline import Progress as Hooks
    from talesmith.convert.seed import converted_model

    for note in seed.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if seed.device == "cuda" and device == "cpu":
        from talesmith.runtime.engine.llama import gpu_offload_supported

        if gpu_offload_supported():
            device = "cuda"
        else:
            err.print(
                '[yellow]note:[/] device = "cuda" in the config, but this llama-cpp-python has no GPU '
                "support; running on the CPU",
                soft_wrap=True,
            )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bars:
        tasks: dict[str, Any] = {}

        def on_file_start(kind: str, path: Path) -> None:
            tasks[kind] = bars.add_task(f"converting {seed.model.base} ({kind})", total=None)

        def on_tensor(plan, done: int, total: int) -> None:
            bars.update(tasks["F16"], total=total, completed=done)

        hooks = Hooks(
            on_tensor=on_tensor,
            on_file_start=on_file_start,
            on_note=lambda text: bars.console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True),
        )
        path = converted_model(seed.model, device=device, progress=hooks)
    return str(path), device


class SampleRows:
    """The config's output_file: one row per sample, appended, with batch output's columns."""

    def __init__(self, path: Path, prompt: str):
        from talesmith.runtime.batch_output import OutputFile

        self.output = OutputFile(path)
        self.id = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]
        self.first = 1 + max((sample for id_, sample in self.output.done if id_ == self.id), default=-1)

    def add(self, i: int, *, prompt: str, text: str, chunk: Any, settings: Any, model: str, sha: str) -> None:
        t = chunk.timing
        self.output.append(
            {
                "id": self.id,
                "sample": self.first + i,
                "prompt": prompt,
                "text": text,
                "seed": chunk.seed,
                "finish_reason": chunk.finish_reason,
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.generated_tokens,
                "model": model,
                "model_sha256": sha,
                "settings": settings.replace(seed=chunk.seed).to_json(),
            }
        )

    def close(self) -> None:
        self.output.close()


def command_settings(
    preset: str | None, cfg: Any, ref: Any, sampling: dict[str, Any], backend: Any, prompts: Sequence[str], err: Console
) -> Any:
    """The sampling settings of `generate` or `batch` (preset, --config, options); with the TinyStories TOML and no
    --max-new-tokens, its max_new_tokens fitted to what the context leaves after the longest of the prompts."""
    settings = resolve_settings(preset, cfg, ref.preset, sampling)
    if cfg.seed is None or "max_new_tokens" in sampling:
        return settings
    longest = prompts[0] if len(prompts) == 1 else max(prompts, key=lambda text: len(backend.tokenize(text)))
    return fit_new_tokens(settings, backend, longest, err)


def fit_new_tokens(settings: Any, backend: Any, prompt: str, err: Console) -> Any:
    """The seed's max_new_tokens, lowered to what the model's context leaves after the prompt (the seed's
    1096 is more than distilgpt2's whole context of 1024; transformers stops at the end of text first)."""
    from talesmith.runtime.documents.formats import TinyStory
    from talesmith.runtime.documents.prompts import render

    room = backend.n_ctx - len(backend.tokenize(render(TinyStory(prompt))))
    if settings.max_new_tokens <= room or room < 1:
        return settings
    err.print(
        f"[yellow]note:[/] max_new_tokens {settings.max_new_tokens} is more than the context of "
        f"{backend.n_ctx} tokens leaves after the prompt; generating at most {room}",
        soft_wrap=True,
    )
    return settings.replace(max_new_tokens=room)
