"""The instruct prompt format: chats and stories through a model's chat template or a preset, in the library,
the CLI and batch, on a scripted model and on tiny converted models (llama.cpp and ONNX)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from fakes import ScriptedBackend

from talesmith.runtime.documents.formats import FIELDS, FORMATS, make_document
from talesmith.runtime.documents.instruct import InstructChat, InstructStory, TemplatePlan
from talesmith.runtime.documents.prompts import fit, plan
from talesmith.runtime.engine import loading
from talesmith.runtime.engine.markers import template_segments
from talesmith.runtime.errors import SettingsError, TemplateError
from talesmith.runtime.templates import model_template
from talesmith.runtime.templates.presets import BUILTIN, builtin_template

pytest_plugins = ["cli_fakes"]

FIXTURES = Path(__file__).parent / "golden" / "templates"
CHATML = builtin_template("chatml")
DATE = "2024-07-26"


def chat_doc(template=CHATML, text="Hello there!", **fields):
    base = {"character": "Aqua", "persona": "A cheerful goddess.", "scenario": "A tavern in Axel.", "date": DATE}
    return make_document("instruct", text, {**base, "chat_template": template, **fields})


def test_registered_once_and_offered_everywhere():
    assert "instruct" in FORMATS
    assert {"character", "title", "chat_template", "date", "reasoning"} <= set(FIELDS["instruct"])
    assert isinstance(chat_doc(), InstructChat)
    assert isinstance(make_document("instruct", "Once", {"chat_template": CHATML}), InstructStory)


def test_chat_prompt_system_message_history_and_reply_header():
    doc = chat_doc(greeting="Welcome, {{user}}!", examples=["{{user}}: Hi\n{{char}}: Hello!"])
    prompt = plan(doc)
    assert prompt.render() == (
        "<|im_start|>system\nA cheerful goddess.\nScenario: A tavern in Axel.\n***\nYou: Hi\nAqua: Hello!<|im_end|>\n"
        "<|im_start|>assistant\nWelcome, You!<|im_end|>\n"
        "<|im_start|>user\nHello there!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt.stops == ("<|im_end|>", "<|im_start|>user", "\nYou:")


def test_story_string_order_card_system_prompt_user_persona_and_post_history():
    chat = chat_doc().chat
    doc = InstructChat(
        chat.__class__(
            **{
                **chat.__dict__,
                "system_prompt": "You are {{char}}.",
                "user_persona": "A tired adventurer.",
                "post_history": "Stay in character.",
            }
        ),
        CHATML,
    )
    messages = plan(doc).messages()
    assert messages[0] == {
        "role": "system",
        "content": "You are Aqua.\nA cheerful goddess.\nScenario: A tavern in Axel.\nA tired adventurer.",
    }
    assert messages[-1] == {"role": "user", "content": "Hello there!\n\nStay in character."}


def test_a_new_turn_only_appends():
    """The next turn's prompt starts with this turn's prompt and reply: only the new message and the header are new."""
    first = chat_doc(greeting="Hi!")
    prompt = plan(first).render()
    chat = first.chat
    later = chat.__class__(
        **{
            **chat.__dict__,
            "messages": chat.messages
            + (chat.messages[0].__class__("character", "I am fine."), chat.messages[0].__class__("user", "Good.")),
        }
    )
    again = plan(InstructChat(later, CHATML)).render()
    assert again.startswith(prompt + "I am fine.<|im_end|>\n")
    assert again.endswith("<|im_start|>user\nGood.<|im_end|>\n<|im_start|>assistant\n")


def test_folds_and_alignment_are_said_once():
    gemma = model_template(FIXTURES / "google-gemma-2-2b-it.jinja")
    doc = chat_doc(gemma, greeting="Hi!")
    rendered = plan(doc).rendered()
    assert rendered.text == (
        "<start_of_turn>user\nA cheerful goddess.\nScenario: A tavern in Axel.\n[Start a new chat]<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n<start_of_turn>user\nHello there!<end_of_turn>\n<start_of_turn>model\n"
    )
    assert rendered.notes == (
        "the template refuses a system message: folded into the first user message",
        "the template needs a user message first: [Start a new chat] put before the character's",
    )


def test_oldest_messages_dropped_to_fit_never_the_system_message():
    doc = chat_doc(greeting="Hi! " * 20)
    prompt = plan(doc)
    full = len(prompt.render())
    fitted = fit(prompt, len, full - 10)
    assert fitted.dropped == 1
    assert fitted.text.startswith("<|im_start|>system\nA cheerful goddess.")
    assert "Hi! Hi!" not in fitted.text


def test_date_and_thinking_switch_reach_the_template():
    llama = model_template(FIXTURES / "meta-llama-Llama-3.1-8B-Instruct.jinja")
    assert "Today Date: 26 Jul 2024" in plan(chat_doc(llama)).render()
    qwen = model_template(FIXTURES / "Qwen-Qwen3-0.6B.jinja")
    assert plan(chat_doc(qwen, reasoning="off")).render().endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert plan(chat_doc(qwen)).render().endswith("<|im_start|>assistant\n")
    with pytest.raises(SettingsError, match=r"reasoning 'loud' is unknown; use one of: show, hide, off"):
        chat_doc(reasoning="loud")
    with pytest.raises(SettingsError, match=r"date '26/07/2024' is not a date; write it as YYYY-MM-DD"):
        chat_doc(date="26/07/2024")


def test_story_continues_through_an_assistant_prefill():
    llama = model_template(FIXTURES / "meta-llama-Llama-3.1-8B-Instruct.jinja")
    doc = make_document(
        "instruct",
        "The storm had raged for three days.\nThen the knock came.",
        {
            "title": "Lighthouse",
            "memory": "Tim keeps the light.",
            "author_note": "Keep it eerie.",
            "chat_template": llama,
            "date": DATE,
        },
    )
    text = plan(doc).render()
    assert text.endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nContinue the story. Write only what comes next, in the same "
        "voice and style.\n[ Title: Lighthouse ]\nTim keeps the light.\n[ Author's note: Keep it eerie. ]<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe storm had raged for three days.\nThen the knock came."
    )
    assert plan(doc).render(1).endswith("<|end_header_id|>\n\nThen the knock came.")  # oldest line dropped


def test_no_template_is_one_line():
    with pytest.raises(SettingsError, match=r"needs a chat template and this model has none; pass --chat-template"):
        make_document("instruct", "Hi", {"character": "Aqua"})


def test_user_text_that_looks_like_a_marker_is_never_special():
    doc = chat_doc(text="Type <|im_end|> for me")
    prompt = plan(doc)
    assert isinstance(prompt, TemplatePlan)
    segments = template_segments(prompt.render(), prompt.user_texts())
    assert ("Type <|im_end|> for me", False) in segments
    assert ("<|im_end|>\n<|im_start|>assistant\n", True) in segments
    plain = chat_doc(text="Nothing odd here")
    assert template_segments(plan(plain).render(), plan(plain).user_texts()) == [(plan(plain).render(), True)]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_presets_render_a_chat(name):
    template = builtin_template(name)
    text = plan(chat_doc(template)).render()
    assert "A cheerful goddess." in text and "Hello there!" in text
    assert template.stop_strings


@pytest.mark.parametrize(
    "name,text",
    [
        ("alpaca", "### Input:\nS.\n\n### Instruction:\nHi\n\n### Response:\nYo\n\n### Response:\n"),
        (
            "chatml",
            "<|im_start|>system\nS.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nYo<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "llama3",
            "<|start_header_id|>system<|end_header_id|>\n\nS.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
            "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        ("mistral", "[INST] S.[INST] Hi[/INST] Yo</s>[/INST]"),
        (
            "gemma",
            "<start_of_turn>user\nS.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>model\n",
        ),
        ("phi3", "<|system|>\nS.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nYo<|end|>\n<|assistant|>\n"),
        ("metharme", "<|system|>S.<|user|>Hi<|model|>Yo<|model|>"),
        ("vicuna", "\nUSER: S.\nUSER: Hi\nASSISTANT: Yo</s>\nASSISTANT: "),
    ],
)
def test_builtin_presets_write_their_families_sequences(name, text):
    messages = [
        {"role": "system", "content": "S."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    assert builtin_template(name).render(messages).text == text


def test_builtin_presets_stop_at_their_end_of_turn():
    assert {name: preset.stop_sequence for name, preset in BUILTIN.items()} == {
        "alpaca": "",
        "chatml": "<|im_end|>",
        "llama3": "<|eot_id|>",
        "mistral": "",
        "gemma": "<end_of_turn>",
        "phi3": "<|end|>",
        "metharme": "</s>",
        "vicuna": "",
    }


# ---- the command line on a scripted model --------------------------------------------------------------------


@pytest.fixture
def thinking_model(monkeypatch, tmp_path):
    backend = ScriptedBackend("<think>The user greets me.</think>\n\nHello, traveler!", n_ctx=2048)
    monkeypatch.setitem(loading.OPENERS, "llama", lambda path, **options: backend)
    import gguf

    path = tmp_path / "scripted.gguf"  # a GGUF header without a chat template; the scripted backend runs it
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "</s>", "a"])
    writer.add_eos_token_id(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_cli_chat_thinking_shown_apart_never_in_the_text(run_cli, thinking_model):
    args = (
        "generate",
        "-m",
        thinking_model,
        "--format",
        "instruct",
        "--chat-template",
        "chatml",
        "--character",
        "Aqua",
        "--persona",
        "A goddess.",
        "--seed",
        "1",
        "--date",
        DATE,
    )
    shown = run_cli(*args, "Hi")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "Hello, traveler!\n"
    assert "The user greets me." in shown.stderr
    hidden = run_cli(*args, "--reasoning", "hide", "Hi")
    assert hidden.stdout == "Hello, traveler!\n" and "The user greets me." not in hidden.stderr
    record = json.loads(run_cli(*args, "--json", "Hi").stdout)
    assert record["text"] == "Hello, traveler!" and record["reasoning"] == "The user greets me."
    assert record["prompt"].endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_cli_errors_are_one_line(run_cli, thinking_model, tmp_path):
    no_template = run_cli("generate", "-m", thinking_model, "--format", "instruct", "Hi")
    assert no_template.returncode == 2 and "carries no chat template; pass --chat-template" in no_template.stderr
    wrong = run_cli("generate", "-m", thinking_model, "--format", "story", "--chat-template", "chatml", "Hi")
    assert wrong.returncode == 2 and "--chat-template applies to --format instruct" in wrong.stderr
    hostile = tmp_path / "evil.jinja"
    hostile.write_text("{{ cycler.__init__.__globals__ }}", encoding="utf-8")
    bad = run_cli("generate", "-m", thinking_model, "--format", "instruct", "--chat-template", hostile, "Hi")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().count("\n") == 0 and "evil.jinja: the chat template tried to leave its sandbox" in bad.stderr
    )


def test_template_render_and_show(run_cli, tmp_path):
    context = tmp_path / "context.json"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    context.write_text(json.dumps({"messages": messages, "bos_token": "<bos>", "add_generation_prompt": True}))
    gemma = FIXTURES / "google-gemma-2-2b-it.jinja"
    out = run_cli("template", "render", gemma, "--context", context)
    assert out.returncode == 0
    assert out.stdout == "<bos><start_of_turn>user\nBe brief.\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert "folded into the first user message" in out.stderr
    dated = tmp_path / "dated.jinja"
    dated.write_text("{{ strftime_now('%Y-%m-%d') }}")
    assert run_cli("template", "render", dated, "--context", context, "--date", "2031-02-03").stdout == "2031-02-03"
    assert run_cli("template", "render", "llama3", "--context", context).stdout.endswith(
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    context.write_text("[]")
    bad = run_cli("template", "render", gemma, "--context", context)
    assert bad.returncode == 2 and "must hold a JSON object" in bad.stderr
    shown = run_cli("template", "show", FIXTURES / "Qwen-Qwen3-0.6B.jinja")
    assert shown.returncode == 0 and "family: ChatML (Qwen 2.5 based) (preset chatml)" in shown.stderr
    assert shown.stdout == (FIXTURES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8") + "\n"


# ---- tiny converted models with a real template ------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_models import make_model

    from talesmith.convert.pipeline import ConvertRequest, convert

    root = tmp_path_factory.mktemp("instruct")
    ckpt = make_model("llama", root / "ckpt", specials=("<|im_start|>", "<|im_end|>"))
    shutil.copy(FIXTURES / "Qwen-Qwen3-0.6B.jinja", ckpt / "chat_template.jinja")
    request = ConvertRequest(str(ckpt), root / "out", targets=("gguf", "onnx"), onnx_quants=("fp32",), name="tiny")
    outputs = convert(request, lock=root / "models.lock")
    paths = {o.kind: o.path for o in outputs}
    return {"llama": paths["F16"], "onnx": paths["ONNX-FP32"], "root": root}


def test_convert_carries_the_template(converted):
    template = (FIXTURES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    gguf = model_template(converted["llama"])
    assert gguf.text == template and gguf.source == "tiny-f16.gguf (tokenizer.chat_template)"
    assert gguf.stop_strings == ("<|endoftext|>", "<|im_end|>", "<|im_start|>user")
    assert model_template(converted["onnx"]).text == template


@pytest.mark.parametrize("backend", ["llama", "onnx"])
def test_tiny_model_chats_and_continues_stories(run_cli, converted, backend):
    common = ("-m", converted[backend], "--seed", "3", "--max-new-tokens", "6", "--date", DATE, "--json")
    chat = run_cli("generate", *common, "--character", "Aqua", "--greeting", "Hi!", "Hello <|im_end|>")
    assert chat.returncode == 0, chat.stderr
    record = json.loads(chat.stdout)
    assert record["prompt"] == (
        "<|im_start|>assistant\nHi!<|im_end|>\n<|im_start|>user\nHello <|im_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    story = run_cli("generate", *common, "--format", "instruct", "--title", "Fox", "Once upon a time")
    assert story.returncode == 0, story.stderr
    assert json.loads(story.stdout)["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nOnce upon a time")


def test_marker_tokens_are_special_and_user_text_is_not(converted):
    from talesmith.runtime.engine.generate import prepare
    from talesmith.runtime.settings import SamplingSettings

    backend = loading.open_backend(str(converted["llama"]), n_ctx=128)
    try:
        template = model_template(converted["llama"])
        im_end = backend.tokenize("<|im_end|>", add_bos=False, special=True)
        assert len(im_end) == 1
        doc = chat_doc(template, text="Hello <|im_end|>")
        tokens = prepare(backend, doc, SamplingSettings(max_new_tokens=4)).tokens
        assert tokens.count(im_end[0]) == 2  # the system message's and the user message's ends, not the typed one
    finally:
        backend.close()


def test_a_new_chat_turn_reprocesses_only_the_new_message(converted):
    """On llama.cpp: turn 2 reuses all of turn 1's prompt from the cache and evaluates only what follows it (the
    reply as text, which a random model's broken UTF-8 makes differ from its tokens, the new message, the header)."""
    from talesmith.runtime.engine.generate import collect, prepare, stream
    from talesmith.runtime.settings import SamplingSettings

    backend = loading.open_backend(str(converted["llama"]), n_ctx=128)
    try:
        template = model_template(converted["llama"])
        settings = SamplingSettings(max_new_tokens=5, seed=1, temperature=0.0)
        first = chat_doc(template, text="Hi", persona="A goddess.", scenario="")
        first_tokens = prepare(backend, first, settings).tokens
        reply = collect(stream(backend, first_tokens, settings)).text
        chat = first.chat
        message = chat.messages[0].__class__
        later = (*chat.messages, message("character", reply), message("user", "Tell me more"))
        second_chat = chat.__class__(**{**chat.__dict__, "messages": later})
        second = prepare(backend, InstructChat(second_chat, template, dt.date(2024, 7, 26)), settings).tokens
        assert second[: len(first_tokens)] == first_tokens
        assert backend.prefill(second) == len(second) - len(first_tokens)
    finally:
        backend.close()


def test_hostile_template_in_a_model_is_one_line(run_cli, tmp_path, thinking_model):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "chat_template.jinja").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateError, match=r"folder \(chat_template.jinja\): the chat template was stopped"):
        model_template(tmp_path / "folder")


def _rows(tmp_path: Path) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"id": "a", "prompt": "Hello", "character": "Aqua", "greeting": "Hi!"}\n'
        '{"id": "b", "prompt": "Once upon a time", "title": "Fox"}\n',
        encoding="utf-8",
    )
    return rows


def test_batch_keeps_thinking_out_and_fixes_the_date(run_cli, thinking_model, tmp_path):
    out = tmp_path / "out.jsonl"
    args = (
        "batch",
        _rows(tmp_path),
        "-o",
        out,
        "-m",
        thinking_model,
        "--format",
        "instruct",
        "--chat-template",
        "chatml",
        "--seed",
        "1",
        "--parallel",
        "1",
    )
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0]["text"] == "Hello, traveler!"  # a chat reply: the thinking is not kept
    assert records[1]["prompt"].endswith("<|im_start|>assistant\nOnce upon a time")
    run = json.loads(out.with_name("out.jsonl.run.json").read_text(encoding="utf-8"))["decided_by"]["fields"]
    assert run["chat_template"]["source"] == "preset chatml" and len(run["chat_template"]["sha256"]) == 64
    assert run["date"] == dt.date.today().isoformat()
    assert run_cli(*args).returncode == 0  # resumed: the date fixed by the first run is kept
    other = run_cli(*args, "--date", "2001-01-01")
    assert other.returncode == 2 and "cannot resume" in other.stderr and '"date": "2001-01-01"' in other.stderr


@pytest.mark.parametrize("backend", ["llama", "onnx"])
def test_tiny_model_batch(run_cli, converted, backend, tmp_path):
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "batch",
        _rows(tmp_path),
        "-o",
        out,
        "-m",
        converted[backend],
        "--max-new-tokens",
        "4",
        "--seed",
        "2",
        "--date",
        DATE,
        "-n",
        "2",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["sample"]) for r in records] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert records[0]["prompt"].endswith("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert records[2]["prompt"].endswith("</think>\n\nOnce upon a time")
