"""`talesmith template`: check how a chat template renders, and which template a model carries."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from talesmith.cli.options import LockOpt, err
from talesmith.runtime.errors import InputError, SettingsError

template_app = typer.Typer(help="Chat templates: render one, or show a model's.", no_args_is_help=True)

DateOpt = typer.Option(
    None, "--date", metavar="YYYY-MM-DD", help="The date the template's strftime_now sees (default: today)."
)


def _context(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give a JSON file with the template's variables") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path} cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object of template variables (messages, bos_token, ...)")
    messages = data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InputError(f"{path}: 'messages' must be a list of objects with a role and a content")
    return data


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
