"""What the `talesmith` commands share: the sampling options generated from SamplingSettings,
the common model options, `--config` files, and opening a model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

import typer
from pydantic import ConfigDict
from rich.console import Console
from rich.markup import escape

from talesmith.runtime.documents.formats import FORMATS
from talesmith.runtime.errors import SettingsError
from talesmith.runtime.schema import Model, validate
from talesmith.runtime.settings import FIELD_NAMES, LIST_FIELDS, PRESETS, SamplingSettings, parse_value, settings_from

err = Console(stderr=True, highlight=False)


def _option_type(f: dataclasses.Field) -> Any:
    if f.name in LIST_FIELDS:
        return list[str] | None
    return int | None if f.type in ("int", "int | None") else float | None


def sampling_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one option per sampling setting; the command receives them as `sampling`."""
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "sampling"]
    for f in dataclasses.fields(SamplingSettings):
        flag = "--" + f.name.replace("_", "-")
        option = typer.Option(None, flag, help=f.metadata["help"], rich_help_panel="Sampling", show_default=False)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_option_type(f))
        )

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        sampling = {}
        for name in FIELD_NAMES:
            value = kwargs.pop(name, None)
            if value is not None and value != []:
                sampling[name] = tuple(value) if name in LIST_FIELDS else value
        return func(sampling=sampling, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


def option(info: Any) -> Any:
    """A field of an option group (see option_groups): its typer Option, and the Option's default."""
    return dataclasses.field(default=info.default, metadata={"option": info})


def option_groups(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the options of each option group it takes (a dataclass of `option` fields): one option per
    field, in the field order, where the group's parameter stands; the command receives the group."""
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(func, eval_str=True).parameters.values():
        if not dataclasses.is_dataclass(p.annotation):
            params.append(p)
            continue
        groups[p.name] = p.annotation
        hints = get_type_hints(p.annotation)
        for f in dataclasses.fields(p.annotation):
            params.append(inspect.Parameter(f.name, p.kind, default=f.metadata["option"], annotation=hints[f.name]))

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(group)})
        return func(**kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}  # where typer reads the types
    return wrapper


@dataclasses.dataclass(frozen=True)
class Config:
    """The contents of a `--config FILE.toml`: model, preset, format and its fields, and [sampling]."""

    model: str | None = None
    preset: str | None = None
    format: str | None = None
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    lorebooks: tuple[Path, ...] = ()
    """Lorebook files (relative to the config file's folder); `--lorebook` adds more."""
    seed: Any = None
    """The TinyStories project's own TOML (talesmith.convert.seed.SeedConfig): its model is converted on use."""


def read_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    from talesmith.runtime.files import read_text

    data = read_text(
        path,
        tomllib.loads,
        encoding="utf-8-sig",
        errors=(tomllib.TOMLDecodeError,),
        missing=f"config file {path} does not exist",
        unreadable=lambda e: f"config file {path} is not valid TOML ({e})",
        nesting=f"config file {path} is not valid TOML (its tables or arrays are nested too deeply); fix the file",
    )
    from talesmith.convert.seed import is_seed_config, read_seed_config

    if is_seed_config(data):  # the TinyStories seed's own config, read as it is
        seed = read_seed_config(path, data)
        return Config(format=seed.format, preset="tinystories", sampling=seed.sampling, seed=seed)
    file = validate(ConfigFile, data, f"config file {path}")
    bad = sorted(set(file.sampling) - FIELD_NAMES)
    if bad:
        raise SettingsError(f"config file {path}: unknown sampling setting {bad[0]!r}")
    return Config(
        file.model,
        file.preset,
        file.format,
        dict(file.fields),
        dict(file.sampling),
        tuple(path.parent / Path(b).expanduser() for b in file.lorebooks),
    )


ConfigValue = str | int | float | bool | list[str]


class ConfigFile(Model):
    """The shape of a `--config` TOML file (read as written: no value is converted)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    MESSAGES = {
        "model": '{field} = {value} must be text, e.g. model = "NAME or PATH"',
        "preset": '{field} = {value} must be text, e.g. preset = "default"',
        "format": '{field} = {value} must be text, e.g. format = "story"',
        "fields": '{field} = {value} must be a table, e.g. [fields] with title = "..." and the like',
        "sampling": "{field} = {value} must be a table, e.g. [sampling] with temperature = 0.8 and the like",
        "fields.*": "{field} = {value} must be text, a number, true/false or a list of texts",
        "sampling.*": "{field} = {value} must be text, a number, true/false or a list of texts",
        "lorebooks*": '{field} = {value} must be a list of paths, e.g. lorebooks = ["world.json"]',
        "*:extra": "unknown key {field!r}; known keys: fields, format, lorebooks, model, preset, sampling",
    }

    model: str | None = None
    preset: str | None = None
    format: str | None = None
    fields: dict[str, ConfigValue] = {}
    sampling: dict[str, ConfigValue] = {}
    lorebooks: list[str] = []


def open_model(
    model: str | None,
    lock: Path | None,
    *,
    ctx: int | None,
    gpu_layers: int,
    threads: int | None,
    backend: str | None = None,
    device: str = "cpu",
    spin: bool = True,
):
    """The library's one way of opening a model (talesmith.runtime.engine.loading.open_model), its notes printed."""
    from talesmith.runtime.engine import loading

    opened = loading.open_model(
        model,
        lock=lock,
        backend=backend,
        device=device,
        n_ctx=ctx,
        gpu_layers=gpu_layers,
        threads=threads,
        spin=spin,
    )
    for note in opened.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    return opened.ref, opened.backend


def resolve_settings(
    preset: str | None, config: Config, ref_preset: str | None, sampling: dict[str, Any]
) -> SamplingSettings:
    name = preset or config.preset or ref_preset or "default"
    if name not in PRESETS:  # a preset imported with `talesmith import`
        from talesmith.runtime.documents.importers.presets import find_user_preset
        from talesmith.runtime.files import default_data_dir

        user = find_user_preset(default_data_dir(), name)
        if user is not None:
            return user.settings.replace(**{k: parse_value(k, v) for k, v in {**config.sampling, **sampling}.items()})
    return settings_from(name, {**config.sampling, **sampling})


def model_fields(ref: Any, fmt: str) -> dict[str, Any]:
    """The format fields a model's lock entry asks for, when its own format is used."""
    return ref.format_fields if fmt == ref.prompt_format else {}


ModelOpt = typer.Option(
    None,
    "--model",
    "-m",
    metavar="NAME|PATH",
    help="A .gguf file, an ONNX model folder or a name from models.lock (default: the bundled model).",
)
LockOpt = typer.Option(None, "--lock", help="The models.lock to read (default: ./models.lock or $TALESMITH_LOCK).")
PresetOpt = typer.Option(None, "--preset", metavar="NAME", help=f"Sampling preset: {', '.join(PRESETS)}.")
FormatOpt = typer.Option(None, "--format", "-f", metavar="NAME", help=f"Prompt format: {', '.join(FORMATS)}.")
CtxOpt = typer.Option(None, "--ctx", help="Context size in tokens (default: the model's, at most 4096).")
GpuOpt = typer.Option(
    0, "--gpu-layers", help="Layers to offload to the GPU (-1: all); needs a CUDA build of llama-cpp-python."
)
ThreadsOpt = typer.Option(None, "--threads", help="CPU threads (default: all cores).")
SpinOpt = typer.Option(
    True,
    "--spin/--no-spin",
    help="ONNX: idle CPU threads wait for the next step spinning (faster on cores nothing else uses; "
    "--no-spin where other programs need the cores).",
)
BackendOpt = typer.Option(
    None, "--backend", metavar="llama|onnx", help="llama (GGUF) or onnx (default: from the model file)."
)
DeviceOpt = typer.Option(
    "cpu",
    "--device",
    metavar="cpu|cuda",
    help="cpu or cuda (ONNX Runtime's CUDA provider; with llama, all layers "
    "on the GPU unless --gpu-layers says otherwise).",
)
ConfigOpt = typer.Option(
    None, "--config", metavar="FILE", help="A TOML file with model, preset, format, \\[fields] and \\[sampling]."
)
FIELDS_PANEL = "Format fields"
LorebookOpt = typer.Option(
    None,
    "--lorebook",
    help="A lorebook: SillyTavern World Info JSON, a card with a "
    "character_book, or a KoboldAI story (repeatable; adds to lorebooks in --config).",
)


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The options `generate` and `batch` share (an option group): the model and how it is opened, the sampling
    preset, the prompt format, and a --config file with more lorebooks."""

    model: str | None = option(ModelOpt)
    lock: Path | None = option(LockOpt)
    preset: str | None = option(PresetOpt)
    fmt: str | None = option(FormatOpt)
    ctx: int | None = option(CtxOpt)
    gpu_layers: int = option(GpuOpt)
    threads: int | None = option(ThreadsOpt)
    spin: bool = option(SpinOpt)
    backend: str | None = option(BackendOpt)
    device: str = option(DeviceOpt)
    config: Path | None = option(ConfigOpt)
    lorebook: list[Path] | None = option(LorebookOpt)

    def read_config(self) -> Config:
        """The --config file's contents, its lorebooks followed by --lorebook's."""
        config = read_config(self.config)
        return dataclasses.replace(config, lorebooks=config.lorebooks + tuple(self.lorebook or ()))

    def open(self) -> tuple[Any, Any]:
        """The model's lock entry (or file) and its backend, opened with these options; notes printed."""
        return open_model(
            self.model,
            self.lock,
            ctx=self.ctx,
            gpu_layers=self.gpu_layers,
            threads=self.threads,
            backend=self.backend,
            device=self.device,
            spin=self.spin,
        )
