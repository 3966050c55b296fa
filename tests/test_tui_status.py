"""The status line: what each of its attributes shows, exactly."""

from __future__ import annotations

from talesmith.tui.status import StatusLine


def line(**attributes) -> str:
    status = StatusLine()
    for name, value in attributes.items():
        setattr(status, name, value)
    return str(status.render())


def test_loading_then_failed():
    assert line(model_name="gemma") == "gemma · loading…"
    assert line(model_name="gemma", failed=True, unsaved=True) == "gemma · model failed · unsaved"


def test_a_measured_prompt_with_speed_and_extras():
    assert (
        line(
            model_name="gemma",
            backend_name="llama.cpp",
            n_ctx=4096,
            n_tokens=120,
            reprocess=3,
            tokens_per_second=12.46,
            extra="alt 2/3",
            unsaved=True,
        )
        == "gemma · llama.cpp · ctx 120/4096 · re 3 · 12.5 tok/s · alt 2/3 · unsaved"
    )


def test_while_generating_no_reprocess_count_and_no_unsaved():
    assert (
        line(model_name="[b]m[/]", backend_name="scripted", n_ctx=512, n_tokens=7, generating=True, unsaved=True)
        == "[b]m[/] · scripted · ctx 7/512 · generating… esc stops"
    )


def test_too_long_for_the_context():
    assert (
        line(model_name="m", backend_name="onnxruntime", too_long=True, n_tokens=0)
        == "m · onnxruntime · too long for the context"
    )
