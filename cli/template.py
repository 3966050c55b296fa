"""`talesmith template`: check how a chat template renders, and which template a model carries."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from talesmith.cli.options import LockOpt, err, option
from talesmith.runtime.errors import InputError, ModelError, SettingsError

template_app = typer.Typer(help="Chat templates: render one, or show a model's.", no_args_is_help=True)

DateOpt = typer.Option(
    None, "--date", metavar="YYYY-MM-DD", help="The date the template's strftime_now sees (default: today)."
)
TEMPLATE_PANEL = "Chat template (--format instruct)"


def _template_option(flag: str, metavar: str, help: str) -> Any:
    return option(typer.Option(None, flag, metavar=metavar, help=help, rich_help_panel=TEMPLATE_PANEL))


@dataclasses.dataclass(frozen=True)
class TemplateOptions:
    """How `generate` and `batch` prompt through a chat template (an option group)."""

    chat_template: str | None = _template_option(
        "--chat-template",
        "FILE|NAME",
        "A .jinja file, a preset (chatml, llama3, mistral, gemma, phi3, alpaca, metharme, vicuna), an imported "
        "format, or one of the model's named templates (default: the model's own).",
    )
    reasoning: str | None = _template_option(
        "--reasoning",
        "show|hide|off",
        "A thinking model's reasoning: shown apart (stderr), hidden, or off where the template can switch it off.",
    )
    date: str | None = _template_option(
        "--date", "YYYY-MM-DD", "The date a chat template sees (strftime_now); default today."
    )


def instruct_fields(
    fmt: str | None, ref: Any, options: TemplateOptions, *, fix_date: bool = False
) -> tuple[str, dict[str, Any]]:
    """The prompt format to use and, for `instruct`, its template, date and reasoning fields.

    With no format asked for, a model that names none of its own is prompted through its chat template when it
    has one. `fix_date` fixes a missing date to today (a batch: once per command)."""
    import datetime as dt

    from talesmith.runtime.documents.instruct import check_reasoning, parse_date
    from talesmith.runtime.files import default_data_dir
    from talesmith.runtime.templates.choose import choose_template

    chat_template, reasoning = options.chat_template, options.reasoning
    if fmt is None and ref.prompt_format is None:
        try:
            template = choose_template(chat_template, model=ref.path, data_dir=default_data_dir())
        except ModelError:  # a file llama.cpp reads another way: no template to default to
            template = None
        fmt = "instruct" if template is not None else "raw"
    elif (fmt or ref.prompt_format) == "instruct":
        template = choose_template(chat_template, model=ref.path, data_dir=default_data_dir())
    else:
        given = [name for name, value in (("--chat-template", chat_template), ("--reasoning", reasoning)) if value]
        if given:
            raise SettingsError(f"{given[0]} applies to --format instruct, not --format {fmt or ref.prompt_format}")
        return str(fmt or ref.prompt_format), {}
    if fmt == "raw":
        return fmt, {}
    if template is None:
        raise SettingsError(
            f"{ref.name} carries no chat template; pass --chat-template with a preset (chatml, llama3, mistral, "
            f"gemma, phi3, alpaca, metharme, vicuna) or a .jinja file"
        )
    day = parse_date(options.date) or (dt.date.today() if fix_date else None)
    return "instruct", {
        "chat_template": template,
        "date": day.isoformat() if day else None,
        "reasoning": check_reasoning(reasoning),
    }


def _context(path: Path) -> dict[str, Any]:
    from talesmith.runtime import files

    raw = files.read_bounded(path, limit=files.MAX_IMPORT, what="a JSON file with the template's variables")
    data = files.parse_json(raw, str(path))
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object of template variables (messages, bos_token, ...)")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InputError(f"{path}: 'messages' must be a list of objects with a role and a content")
    return data


def batch_instruct_fields(
    fmt: str | None, ref: Any, output: Path, options: TemplateOptions
) -> tuple[str, dict[str, Any]]:
    """instruct_fields for a batch: the date is fixed once per command (today, or the date a resumed output was
    started with), and the template is kept as plain data in the output's run file."""
    from talesmith.runtime.batch_output import read_run
    from talesmith.runtime.documents.instruct import TemplateField

    if options.date is None:
        stored = (read_run(output) or {}).get("fields")
        if isinstance(stored, dict) and isinstance(stored.get("date"), str):
            options = dataclasses.replace(options, date=stored["date"])
    fmt, fields = instruct_fields(fmt, ref, options, fix_date=True)
    if "chat_template" in fields:
        fields["chat_template"] = TemplateField(fields["chat_template"])
    return fmt, fields


def template_notes(prepared: Any) -> tuple[str, ...]:
    """What a chat template needed changed in this prompt (a system message folded, roles merged), once each."""
    from talesmith.runtime.documents.instruct import TemplatePlan

    plan = prepared.plan
    return plan.rendered(prepared.fitted.dropped).notes if isinstance(plan, TemplatePlan) else ()


def reasoning_stream(prepared: Any) -> Any:
    """A ReasoningStream for a chat reply through a chat template (None otherwise): the thinking is split off."""
    from talesmith.runtime.documents.instruct import TemplatePlan
    from talesmith.runtime.templates.reasoning import ReasoningStream, opens_thinking

    plan = prepared.plan
    if not isinstance(plan, TemplatePlan) or plan.is_story:
        return None
    return ReasoningStream(started=opens_thinking(prepared.fitted.text))


@template_app.command("render")
def render(
    source: str = typer.Argument(
        ..., help="A .jinja file, a GGUF, an HF/ONNX model folder, a tokenizer_config.json or a preset name."
    ),
    context: Path = typer.Option(
        ..., "--context", help="JSON: messages, bos_token, eos_token, add_generation_prompt, ..."
    ),
    date: str | None = DateOpt,
) -> None:
    """Print exactly what SOURCE's chat template renders for CONTEXT (no newline added)."""
    from talesmith.runtime.documents.instruct import parse_date
    from talesmith.runtime.files import default_data_dir
    from talesmith.runtime.templates.choose import choose_template

    variables = _context(context)
    template = choose_template(source, model=None, data_dir=default_data_dir())
    assert template is not None
    extra = {k: v for k, v in variables.items() if k not in ("messages", "add_generation_prompt")}
    rendered = template.render(
        variables["messages"],
        add_generation_prompt=bool(variables.get("add_generation_prompt", False)),
        date=parse_date(date),
        extra={"bos_token": template.bos_token, "eos_token": template.eos_token, **extra},
    )
    for note in rendered.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    sys.stdout.write(rendered.text)
    sys.stdout.flush()


@template_app.command("show")
def show(
    model: str = typer.Argument(
        ..., metavar="MODEL", help="A .gguf file, an ONNX or HF model folder, or a models.lock name."
    ),
    lock: Path | None = LockOpt,
    name: str | None = typer.Option(None, "--name", help="One of the model's named templates (tool_use, ...)."),
) -> None:
    """Print a model's chat template and the family it was matched to."""
    from talesmith.runtime.models.resolve import resolve
    from talesmith.runtime.templates.choose import describe
    from talesmith.runtime.templates.sources import model_template

    path = Path(model).expanduser()
    target = path if path.exists() else resolve(model, lock=lock).path
    template = model_template(target, name=name)
    if template is None:
        raise SettingsError(
            f"{model} carries no chat template; prompt it with a preset: --chat-template chatml (or llama3, "
            f"mistral, gemma, phi3, alpaca, metharme, vicuna), or a .jinja file"
        )
    info = describe(template)
    family = info["family"] or "no known family (KoboldCpp would use Alpaca)"
    preset = f" (preset {info['preset']})" if info["preset"] else ""
    err.print(f"[bold]{escape(info['source'])}[/]", soft_wrap=True)
    err.print(f"family: {escape(family)}{escape(preset)}", soft_wrap=True)
    err.print(f"bos: {info['bos_token']!r}  eos: {info['eos_token']!r}", soft_wrap=True, markup=False)
    err.print(f"stops at: {', '.join(repr(s) for s in info['stop_strings']) or '-'}", soft_wrap=True, markup=False)
    if info["variants"]:
        err.print(f"other templates: {', '.join(info['variants'])} (--name NAME)", soft_wrap=True, markup=False)
    sys.stdout.write(template.text if template.text.endswith("\n") else template.text + "\n")
