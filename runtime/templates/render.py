"""Chat templates rendered exactly as transformers' `apply_chat_template` renders them, in a sandbox that holds.

A chat template is a Jinja program inside a model file, and the file may be hostile. It runs in jinja2's
`ImmutableSandboxedEnvironment` (no attribute walks such as `cycler.__init__.__globals__`, no mutation of
the messages), with transformers' settings and helpers (`trim_blocks`, `lstrip_blocks`, loop controls,
`raise_exception`, `strftime_now`, `tojson`, `{% generation %}`), and within bounds: every loop step,
attribute lookup, call and piece of output checks a deadline, and the output, repeated strings and joined
strings are capped in size. A template that breaks, escapes or runs away is one `TemplateError`.

Around the render, the two fixes llama.cpp makes (`common/chat.cpp`): a template that refuses a `system`
message gets it folded into the first user message, and one that demands strictly alternating roles gets
consecutive messages of one role merged. Each fix is said once in `RenderedChat.notes`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from talesmith.runtime.errors import TemplateError

TIME_LIMIT = 5.0
"""Seconds one render may take."""
MAX_OUTPUT = 8 * 1024 * 1024
"""Characters one render may write (a 128k-token prompt is well under 1M)."""
MAX_VALUE = 8 * 1024 * 1024
"""The longest string or list a template may build, and the largest number it may pass to a call."""
MAX_TEMPLATE = 1024 * 1024
"""The longest template source accepted (real ones are under 20k characters)."""


class _Runaway(Exception):
    """Raised inside a render that went past its time or size bounds."""


class HostileTemplateError(TemplateError):
    """A template that tried to leave the sandbox or ran past its bounds (not merely refused a conversation)."""


class _Refused(jinja2.exceptions.TemplateError):
    """`raise_exception(...)` called by the template."""


class _Guard:
    """The bounds of one render: a deadline and the output written so far."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.written = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Runaway(f"it ran for more than {self.seconds:g} s")

    def size(self, value: Any) -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_VALUE:
            raise _Runaway(f"it built a value of {len(value)} items (more than {MAX_VALUE})")
        return value


class _NoGuard(_Guard):
    def __init__(self) -> None:
        super().__init__(TIME_LIMIT)

    def tick(self) -> None:  # compile time: no render is running
        pass


class _GenerationTracker(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: transformers marks assistant text with it; the body renders as is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Callable[[], str]) -> str:
        return caller()


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop's iterable and every `~` join passed through the guard."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not node.recursive:
            bounded = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None)
            bounded.set_lineno(node.lineno)
            node = nodes.For(node.target, bounded, node.body, node.else_, node.test, node.recursive, lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedNamespace(Namespace):
    """`namespace()` whose attributes cannot be grown without bound."""

    def __setitem__(self, name: str, value: Any) -> None:
        _current().size(value)
        super().__setitem__(name, value)


class _Active(threading.local):
    """The guards of the renders running on this thread (a probe may run inside a render's caller)."""

    def __init__(self) -> None:
        self.stack: list[_Guard] = []


_ACTIVE = _Active()


def _current() -> _Guard:
    return _ACTIVE.stack[-1] if _ACTIVE.stack else _NoGuard()


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(("*", "**", "%", "+"))

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _current().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _current().tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        guard = _current()
        guard.tick()
        # "{:>9}".format (jinja wraps it): the format string is the method's owner
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        _check_numbers((owner if isinstance(owner, str) else None, *args, *kwargs.values()))
        return guard.size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        guard = _current()
        guard.tick()
        if operator == "%":
            _check_numbers((left,))
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
            raise _Runaway(f"it raised a number to the power {right}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if len(seq) * times > MAX_VALUE:
                        raise _Runaway(f"it repeated a value {times} times")
        return guard.size(super().call_binop(context, operator, left, right))

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        guard = _current()
        for item in iterable:
            guard.tick()
            yield item

    def bounded_join(self, values: Iterable[Any]) -> str:
        guard = _current()
        guard.tick()
        return guard.size("".join(str(v) for v in values))


_BIG_NUMBER = re.compile(r"\d{" + str(len(str(MAX_VALUE))) + ",}")


def _check_numbers(args: Iterable[Any]) -> None:
    """Refuse a call or filter given a number (or a format width) that would build a huge value."""
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE:
            raise _Runaway(f"it passed the number {value} to a call")
        if isinstance(value, str) and _BIG_NUMBER.search(value):
            for digits in _BIG_NUMBER.findall(value):
                if int(digits) > MAX_VALUE and ("{" in value or "%" in value):
                    raise _Runaway(f"it formatted a value {digits} wide")


def _guarded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard = _current()
        guard.tick()
        _check_numbers((*args, *kwargs.values()))
        return guard.size(function(*args, **kwargs))

    return guarded


def _raise_exception(message: str) -> None:
    raise _Refused(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = _SandboxEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.filters.update({name: _guarded_filter(f) for name, f in env.filters.items()})
    env.globals["raise_exception"] = _raise_exception
    env.globals["namespace"] = _BoundedNamespace
    return env.from_string(template)


@dataclass(frozen=True)
class RenderedChat:
    text: str
    notes: tuple[str, ...] = ()
    """What was changed to fit the template (a system message folded, roles merged), said once each."""


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= 200 else line[:197] + "..."


def render_raw(template: str, variables: Mapping[str, Any], *, date: _dt.date | None = None) -> str:
    """`template` rendered with exactly `variables`, as transformers renders it; TemplateError when it breaks,
    escapes the sandbox or runs past its bounds. `strftime_now` formats `date` (default today) at midnight."""
    if len(template) > MAX_TEMPLATE:
        raise TemplateError(f"the chat template is {len(template)} characters, more than {MAX_TEMPLATE}")
    moment = _dt.datetime.combine(date or _dt.date.today(), _dt.time())
    guard = _Guard(TIME_LIMIT)
    _ACTIVE.stack.append(guard)
    try:
        try:
            compiled = _compile(template)
        except jinja2.TemplateSyntaxError as e:
            where = f"line {e.lineno}: {_one_line(e.message or '')}"
            raise TemplateError(f"the chat template does not parse ({where})") from None
        context = {"strftime_now": lambda fmt: moment.strftime(str(fmt)), **variables}
        pieces: list[str] = []
        for piece in compiled.generate(context):
            guard.written += len(piece)
            if guard.written > MAX_OUTPUT:
                raise _Runaway(f"it wrote more than {MAX_OUTPUT} characters")
            guard.tick()
            pieces.append(piece)
        return "".join(pieces)
    except TemplateError:
        raise
    except _Runaway as e:
        raise HostileTemplateError(f"the chat template was stopped: {e}") from None
    except SecurityError as e:
        raise HostileTemplateError(f"the chat template tried to leave its sandbox: {_one_line(str(e))}") from None
    except _Refused as e:
        raise TemplateError(f"the chat template refused the conversation: {_one_line(str(e))}") from None
    except jinja2.exceptions.TemplateError as e:
        raise TemplateError(f"the chat template failed: {_one_line(str(e))}") from None
    except RecursionError:
        raise HostileTemplateError("the chat template was stopped: it recursed too deeply") from None
    except MemoryError:
        raise HostileTemplateError("the chat template was stopped: it ran out of memory") from None
    except Exception as e:  # any other error inside template code is the template's fault
        raise TemplateError(f"the chat template failed: {type(e).__name__}: {_one_line(str(e))}") from None
    finally:
        _ACTIVE.stack.pop()


# ---- llama.cpp's fixes around the render -------------------------------------------------------------------

_SYSTEM_PROBE = "System message"


def _try(template: str, messages: list[dict[str, Any]], variables: Mapping[str, Any]) -> str | None:
    try:
        return render_raw(template, {**variables, "messages": messages, "add_generation_prompt": True})
    except HostileTemplateError:
        raise
    except TemplateError:
        return None


@lru_cache(maxsize=64)
def _capabilities(template: str, bos_token: str, eos_token: str) -> tuple[bool, bool]:
    """(takes a system message, takes two user messages in a row), probed as llama.cpp's caps.cpp does."""
    base = {"bos_token": bos_token, "eos_token": eos_token}
    system = _try(template, [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "Hey"}], base)
    takes_system = system is not None and _SYSTEM_PROBE in system
    in_a_row = [
        {"role": "user", "content": "Hey"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},
    ]
    return takes_system, _try(template, in_a_row, base) is not None


def fold_system(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """llama.cpp's fold: a leading system message joins the next message (`SYSTEM\\nTEXT`), or is dropped alone."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        first = out.pop(0)
        if out:
            out[0]["content"] = f"{first.get('content') or ''}\n{out[0].get('content') or ''}"
    return out


def merge_roles(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive messages of one role as one message, their texts joined by a blank line."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if out and out[-1].get("role") == m.get("role") and isinstance(m.get("content"), str):
            out[-1]["content"] = f"{out[-1].get('content') or ''}\n\n{m['content']}"
        else:
            out.append(dict(m))
    return out


def _has_run(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(a.get("role") == b.get("role") for a, b in zip(messages, messages[1:], strict=False))


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    date: _dt.date | None = None,
    extra: Mapping[str, Any] | None = None,
    continue_final_message: bool = False,
) -> RenderedChat:
    """The conversation as the template writes it, with llama.cpp's fold and merge where the template needs them.

    Variables as transformers passes them (`messages`, `tools` and `documents` None unless `extra` gives them,
    `add_generation_prompt`, `bos_token`, `eos_token`, then `extra`). `continue_final_message` ends the text
    inside the last message, so the model continues it (transformers' option of that name). TemplateError
    (one line) when the template breaks, escapes or runs away.
    """
    base = {"tools": None, "documents": None, "bos_token": bos_token, "eos_token": eos_token, **(extra or {})}
    notes: list[str] = []
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0].get("role") == "system" or _has_run(msgs):
        takes_system, takes_runs = _capabilities(template, bos_token, eos_token)
        if msgs and msgs[0].get("role") == "system" and not takes_system:
            msgs = fold_system(msgs)
            notes.append("the template refuses a system message: folded into the first user message")
        if _has_run(msgs) and not takes_runs:
            msgs = merge_roles(msgs)
            notes.append("the template demands alternating roles: consecutive messages of one role merged")
    final = ""
    if continue_final_message:
        if not msgs or not isinstance(msgs[-1].get("content"), str):
            raise TemplateError("there is no final message to continue")
        final = msgs[-1]["content"]
        msgs[-1]["content"] = final + _CONTINUE_TAG
    variables = {
        **base,
        "messages": msgs,
        "add_generation_prompt": add_generation_prompt and not continue_final_message,
    }
    text = render_raw(template, variables, date=date)
    if continue_final_message:
        text = _cut_at_final(text, final)
    return RenderedChat(text, tuple(notes))


_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _cut_at_final(text: str, final: str) -> str:
    """transformers' continue_final_message: the text up to where the last message's content ends."""
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise TemplateError("the chat template drops part of the message to continue, so it cannot be continued")
    at = text.rindex(tag)
    if text[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return text[:at]
    return text[:at].rstrip()
