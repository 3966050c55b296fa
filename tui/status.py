"""The status line under each screen: one reactive attribute per thing it shows, set by its screen."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static


class StatusLine(Static):
    """model · backend · ctx N/M · re N · tok/s · extra · generating/unsaved, all plain text."""

    model_name = reactive("")
    backend_name = reactive("")
    """Empty while the model loads or when it failed."""
    failed = reactive(False)
    n_ctx = reactive(0)
    n_tokens: reactive[int | None] = reactive(None)
    """Tokens of the next prompt (None: not measured yet)."""
    reprocess: reactive[int | None] = reactive(None)
    """Of those, how many must be evaluated again (None: not shown, e.g. while generating)."""
    too_long = reactive(False)
    tokens_per_second: reactive[float | None] = reactive(None)
    extra = reactive("")
    generating = reactive(False)
    unsaved = reactive(False)

    def parts(self) -> list[str | tuple[str, str]]:
        parts: list[str | tuple[str, str]] = [self.model_name]
        if self.backend_name:
            parts.append(self.backend_name)
            if self.too_long:
                parts.append("too long for the context")
            elif self.n_tokens is not None:
                parts.append(f"ctx {self.n_tokens}/{self.n_ctx}")
                if self.reprocess is not None:
                    parts.append(f"re {self.reprocess}")
        elif self.failed:
            parts.append(("model failed", "bold red"))
        else:
            parts.append("loading…")
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:.1f} tok/s")
        if self.extra:
            parts.append(self.extra)
        if self.generating:
            parts.append(("generating… esc stops", "bold"))
        elif self.unsaved:
            parts.append("unsaved")
        return parts

    def render(self) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        for i, part in enumerate(self.parts()):
            line.append(" · " if i else "")
            line.append(*((part,) if isinstance(part, str) else part))
        return line
