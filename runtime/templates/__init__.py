"""Chat templates: the Jinja programs models carry for their prompt format, rendered as transformers renders
them in a sandbox that holds, and the instruct presets for models that carry none.

No I/O in the renderer (render.py); sources.py finds a model's template in its files.
"""

from talesmith.runtime.templates.reasoning import split_reasoning
from talesmith.runtime.templates.render import HostileTemplateError, RenderedChat, render_chat, render_raw
from talesmith.runtime.templates.sources import ChatTemplate, model_template

__all__ = [
    "ChatTemplate",
    "HostileTemplateError",
    "RenderedChat",
    "model_template",
    "render_chat",
    "render_raw",
    "split_reasoning",
]
