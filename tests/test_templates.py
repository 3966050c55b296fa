"""Chat templates: rendered exactly as transformers and llama.cpp render them, found where models keep them,
and held in their sandbox."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from talesmith.runtime.errors import InputError, TemplateError
from talesmith.runtime.templates import (
    ChatTemplate,
    HostileTemplateError,
    model_template,
    render_chat,
    render_raw,
    split_reasoning,
)
from talesmith.runtime.templates import render as render_module
from talesmith.runtime.templates.reasoning import opens_thinking

FIXTURES = Path(__file__).parent / "golden" / "templates"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
COMMUNITY = REAL / "chat-templates" / "community" / "chat_templates"

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]
DATE = dt.date(2024, 7, 26)

LLAMACPP_CASES = json.loads((FIXTURES / "llamacpp_chat_template_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", [c for c in LLAMACPP_CASES if c["jinja"]], ids=lambda c: c["name"][:50])
def test_llamacpp_expected_renders(case):
    """test-chat-template.cpp's fixed conversation, each template's expected Jinja output, byte for byte
    (llama.cpp folds the system message where a template refuses it, so the fold is checked here too)."""
    messages = CONVERSATION + case["extra_messages"]
    rendered = render_chat(case["template"], messages, bos_token=case["bos_token"], eos_token=case["eos_token"])
    assert rendered.text == case["expected"]


def _templates() -> list[Path]:
    found = sorted(FIXTURES.glob("*.jinja"))
    if COMMUNITY.is_dir():
        found += sorted(COMMUNITY.glob("*.jinja"))
    return found


@pytest.fixture(scope="module")
def transformers_render(request):
    ctu = pytest.importorskip("transformers.utils.chat_template_utils")
    fixed = dt.datetime.combine(DATE, dt.time())

    class FixedNow(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return fixed

    mp = pytest.MonkeyPatch()
    mp.setattr(ctu, "datetime", FixedNow)
    request.addfinalizer(mp.undo)

    def render(template, messages, **kwargs):
        return ctu.render_jinja_template([messages], chat_template=template, **kwargs)[0][0]

    return render


@pytest.mark.parametrize("path", _templates(), ids=lambda p: p.stem)
def test_same_as_transformers(path, transformers_render):
    """Every real template renders byte-identical to transformers' apply_chat_template, with and without the
    generation prompt, with and without a system message (where transformers accepts one)."""
    template = path.read_text(encoding="utf-8")
    compared = 0
    for messages in (CONVERSATION[1:], CONVERSATION, CONVERSATION[:2]):
        for add in (True, False):
            kwargs = {"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": add}
            try:
                expected = transformers_render(template, messages, **kwargs)
            except Exception:  # the template refuses this conversation; llama.cpp's fold is tested apart
                continue
            ours = render_chat(template, messages, date=DATE, **kwargs)
            assert ours.notes == ()
            assert ours.text == expected
            compared += 1
    assert compared >= 2


def test_thinking_switch_and_tools_as_transformers(transformers_render):
    template = (FIXTURES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
    messages = CONVERSATION[1:4]
    for extra in ({"enable_thinking": False}, {"enable_thinking": True}):
        expected = transformers_render(template, messages, add_generation_prompt=True, **extra)
        assert render_chat(template, messages, extra=extra).text == expected
    assert render_chat(template, messages, extra={"enable_thinking": False}).text.endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_continue_final_message_as_transformers(transformers_render):
    messages = [{"role": "user", "content": "Go on."}, {"role": "assistant", "content": "Once upon a time "}]
    for path in (FIXTURES / "meta-llama-Llama-3.1-8B-Instruct.jinja", FIXTURES / "google-gemma-2-2b-it.jinja"):
        template = path.read_text(encoding="utf-8")
        expected = transformers_render(template, messages, continue_final_message=True, add_generation_prompt=False)
        ours = render_chat(template, messages, continue_final_message=True, date=DATE)
        assert ours.text == expected
    assert render_chat(CHATML, messages, continue_final_message=True).text.endswith(
        "<|im_start|>assistant\nOnce upon a time "
    )


def test_fold_system_into_first_user_message_once():
    template = (FIXTURES / "google-gemma-2-2b-it.jinja").read_text(encoding="utf-8")
    rendered = render_chat(template, CONVERSATION[:2], bos_token="<bos>")
    assert rendered.text == (
        "<bos><start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n<start_of_turn>model\n"
    )
    assert rendered.notes == ("the template refuses a system message: folded into the first user message",)
    # llama.cpp drops a system message with nothing after it
    assert (
        render_chat(
            CHATML.replace(
                "message['content']", "message['content'] if message['role'] != 'system' else raise_exception('no')"
            ),
            CONVERSATION[:1],
        ).text
        == "<|im_start|>assistant\n"
    )


def test_alternating_roles_merged():
    template = (FIXTURES / "google-gemma-2-2b-it.jinja").read_text(encoding="utf-8")
    messages = [
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Three"},
    ]
    rendered = render_chat(template, messages, add_generation_prompt=False)
    assert rendered.text == ("<start_of_turn>user\nOne\n\nTwo<end_of_turn>\n<start_of_turn>model\nThree<end_of_turn>\n")
    assert rendered.notes == ("the template demands alternating roles: consecutive messages of one role merged",)
    # a template that takes runs of one role gets them as they are
    assert render_chat(CHATML, messages, add_generation_prompt=False).notes == ()


def test_helpers_date_and_generation_block():
    assert render_raw("{{ strftime_now('%d %b %Y') }}", {}, date=DATE) == "26 Jul 2024"
    assert render_raw("{{ x | tojson }}", {"x": {"é": [1, None]}}) == '{"é": [1, null]}'
    assert render_raw("{% generation %}kept{% endgeneration %}", {}) == "kept"
    assert render_raw("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}) == "012"
    assert render_raw("  {% if true %}\nx\n  {% endif %}\n", {}) == "x\n"  # trim_blocks and lstrip_blocks


HOSTILE = {
    "attribute walk": "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
    "class walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mutation": "{% set x = messages.append(1) %}",
    "repeat": "{{ 'x' * 1000000000 }}",
    "doubling": "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "wide filter": "{{ 'a' | center(1000000000) }}",
    "wide format": "{{ '{:>1000000000}'.format(1) }}",
    "wide percent": "{{ '%1000000000s' % 'a' }}",
    "huge output": "{% for i in range(100000) %}{% for j in range(1000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "power": "{{ 2 ** 100000000 }}",
}


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_are_one_line(template, tmp_path):
    marker = tmp_path / "pwned"
    start = time.monotonic()
    with pytest.raises(HostileTemplateError) as e:
        render_chat(template.replace("echo pwned", f"touch {marker}"), [{"role": "user", "content": "Hi"}])
    assert "\n" not in str(e.value) and str(e.value).startswith("the chat template ")
    assert time.monotonic() - start < 2
    assert not marker.exists()


def test_runaway_loop_stops_in_time(monkeypatch):
    monkeypatch.setattr(render_module, "TIME_LIMIT", 0.3)
    start = time.monotonic()
    with pytest.raises(HostileTemplateError, match=r"ran for more than 0.3 s"):
        render_raw("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {})
    assert time.monotonic() - start < 1.5


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% if %}", "the chat template does not parse (line 1: Expected an expression"),
        ("{{ raise_exception('Only user and assistant roles are supported!') }}", "refused the conversation: Only"),
        ("{{ foo.bar }}", "the chat template failed: 'foo' is undefined"),
    ],
)
def test_broken_templates_are_one_line(template, message):
    with pytest.raises(TemplateError) as e:
        render_raw(template, {"messages": []})
    assert message in str(e.value)
    assert not isinstance(e.value, HostileTemplateError)


def test_errors_name_where_the_template_came_from(tmp_path):
    (tmp_path / "bad.jinja").write_text("{{ raise_exception('no') }}", encoding="utf-8")
    template = model_template(tmp_path / "bad.jinja")
    with pytest.raises(TemplateError, match=r"bad.jinja: the chat template refused the conversation: no"):
        template.render([{"role": "user", "content": "x"}])


# ---- where templates come from ----------------------------------------------------------------------------


def _folder(tmp_path: Path, **files: object) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return folder


def test_folder_sources_first_found_wins(tmp_path):
    config = {"chat_template": "config", "bos_token": "<s>", "eos_token": {"content": "</s>", "special": True}}
    folder = _folder(
        tmp_path,
        chat_template__jinja="jinja",
        chat_template__json={"chat_template": "json"},
        tokenizer_config__json=config,
    )
    found = model_template(folder)
    assert (found.text, found.bos_token, found.eos_token) == ("jinja", "<s>", "</s>")
    assert found.source.endswith("(chat_template.jinja)")
    (folder / "chat_template.jinja").unlink()
    assert model_template(folder).text == "json"
    (folder / "chat_template.json").unlink()
    assert model_template(folder).text == "config"
    assert model_template(folder / "tokenizer_config.json").text == "config"


def test_named_templates_in_tokenizer_config(tmp_path):
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": CHATML}]
    folder = _folder(tmp_path, tokenizer_config__json={"chat_template": named})
    found = model_template(folder)
    assert found.text == CHATML and found.variants == ("tool_use",)
    assert found.stop_strings == ("<|im_end|>", "<|im_start|>user")
    assert model_template(folder, name="tool_use").text == "tools"
    with pytest.raises(InputError, match=r"has no chat template named 'rag'; it has: tool_use, default"):
        model_template(folder, name="rag")


def test_folder_without_template(tmp_path):
    assert model_template(_folder(tmp_path, tokenizer_config__json={"eos_token": "</s>"})) is None


def test_gguf_template_variants_and_tokens(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<unk>", "<|begin_of_text|>", "<|end_of_text|>", "hello", "<|eot_id|>"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_eot_token_id(4)
    llama3 = (FIXTURES / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8")
    writer.add_chat_template([{"name": "default", "template": llama3}, {"name": "tool_use", "template": CHATML}])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    found = model_template(path)
    assert found.source == "tiny.gguf (tokenizer.chat_template)"
    assert (found.bos_token, found.eos_token, found.variants) == ("<|begin_of_text|>", "<|end_of_text|>", ("tool_use",))
    assert found.stop_strings == (
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>",
    )
    text = found.render([{"role": "user", "content": "Hi"}], date=DATE).text
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date")
    assert model_template(path, name="tool_use").source == "tiny.gguf (tokenizer.chat_template.tool_use)"


def test_template_from_metadata_mapping():
    metadata = {
        "tokenizer.chat_template": CHATML,
        "tokenizer.ggml.tokens": ["<s>", "</s>", "<|im_end|>"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 2,
    }
    found = model_template(metadata)
    assert isinstance(found, ChatTemplate)
    assert (found.bos_token, found.eos_token, found.stop_strings) == (
        "<s>",
        "<|im_end|>",
        ("<|im_end|>", "<|im_start|>user"),
    )


@pytest.mark.parametrize(
    ("name", "markers"),
    [
        ("google-gemma-2-2b-it.jinja", ("<end_of_turn>", "<start_of_turn>user")),
        ("microsoft-Phi-3.5-mini-instruct.jinja", ("<|end|>", "<|user|>")),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", ("[INST]",)),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", ("<｜end▁of▁sentence｜>", "<｜User｜>")),
        ("google-gemma-4-gguf.jinja", ("<turn|>", "<|turn>user")),
    ],
)
def test_turn_markers(name, markers):
    assert model_template(FIXTURES / name).stop_strings == markers


# ---- thinking -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "started", "expected"),
    [
        ("<think>\nPlan it.\n</think>\n\nHello!", False, ("Plan it.", "Hello!")),
        ("  <think>a</think>b", False, ("a", "b")),
        ("<think>still going", False, ("still going", "")),
        ("Plan it.\n</think>\n\nHello!", False, ("Plan it.", "Hello!")),  # the prompt opened the block
        ("Plan it.", True, ("Plan it.", "")),
        ("Hello, no thinking.", False, ("", "Hello, no thinking.")),
        ("Say <think> later", False, ("", "Say <think> later")),
    ],
)
def test_split_reasoning(text, started, expected):
    assert split_reasoning(text, started=started) == expected


def test_opens_thinking():
    assert opens_thinking("<｜User｜>Hi<｜Assistant｜><think>\n")  # DeepSeek-R1's own template opens the block
    template = (FIXTURES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text(encoding="utf-8")
    assert not opens_thinking(render_chat(template, [{"role": "user", "content": "Hi"}]).text)  # llama.cpp's closes it
    assert not opens_thinking(render_chat(CHATML, [{"role": "user", "content": "Hi"}]).text)
