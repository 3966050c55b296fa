"""talesmith serve on a scripted model: KoboldCpp and OpenAI shapes, SillyTavern's bodies, errors, keys, CORS."""

import json
import logging
from pathlib import Path

import httpx
import pytest
from serve_fakes import LiveServer, scripted_service

from talesmith.cli.serve.command import check_exposure, urls
from talesmith.cli.serve.requests import RequestError, read_sampling, settings_for
from talesmith.runtime.errors import SettingsError
from talesmith.runtime.settings import WHOLE_CONTEXT, SamplingSettings
from talesmith.runtime.templates import ChatTemplate

FIXTURES = Path(__file__).parent / "serve_fixtures"
SCRIPT = "Once upon a time."


def fixture(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server():
    with LiveServer(scripted_service(SCRIPT)) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def events(raw: str) -> list[dict]:
    """The JSON data of server-sent events (the final [DONE] left out)."""
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


# --- the KoboldCpp API ---------------------------------------------------------------------------------------


def test_kobold_information_routes(client):
    assert client.get("/api/v1/model").json() == {"result": "talesmith/scripted"}
    assert client.get("/api/v1/info/version").json() == {"result": "1.2.5"}
    assert client.get("/api/extra/version").json()["result"] == "KoboldCpp"
    assert client.get("/api/extra/true_max_context_length").json() == {"value": 512}
    assert client.get("/api/v1/config/max_context_length").json() == {"value": 512}
    assert client.get("/api/v1/config/max_length").json() == {"value": 64}


def test_kobold_generate_answers_as_koboldcpp_does(client):
    reply = client.post("/api/v1/generate", json={"prompt": "Tell me:", "max_length": 8}).json()
    assert reply == {
        "results": [
            {
                "text": "Once upo",
                "finish_reason": "length",
                "logprobs": None,
                "prompt_tokens": 8,
                "completion_tokens": 8,
            }
        ]
    }


def test_kobold_stream_sends_message_events_and_ends_with_a_reason(client):
    raw = client.post("/api/extra/generate/stream", json={"prompt": "Go:", "stop_sequence": ["time"]}).text
    assert raw.startswith("event: message\ndata: ")
    data = events(raw)
    assert "".join(d["token"] for d in data) == "Once upon a "
    assert [d["finish_reason"] for d in data][-1] == "stop"
    assert all(d["finish_reason"] is None for d in data[:-1])


def test_token_count(client):
    assert client.post("/api/extra/tokencount", json={"prompt": "abc"}).json() == {"value": 3, "ids": [97, 98, 99]}


def test_check_and_abort_by_genkey_of_a_request_that_is_not_running(client):
    assert client.post("/api/extra/generate/check", json={"genkey": "KCPP1234"}).json() == {"results": [{"text": ""}]}
    assert client.post("/api/extra/abort", json={"genkey": "KCPP1234"}).json() == {"success": "false", "done": "true"}


# --- the OpenAI-compatible API ------------------------------------------------------------------------------


def test_models_props_and_health(client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["scripted"] and models["object"] == "list"
    props = client.get("/props").json()
    assert (props["n_ctx"], props["total_slots"], props["chat_template"]) == (512, 1, "")
    assert client.get("/health").json()["status"] == "ok"


def test_completions_with_n_samples(client):
    reply = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4, "n": 2}).json()
    assert reply["object"] == "text_completion" and reply["model"] == "scripted"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in reply["choices"]] == [
        (0, "Once", "length"),
        (1, "Once", "length"),
    ]
    assert reply["usage"]["prompt_tokens"] == 1 and reply["usage"]["completion_tokens"] == 8


def test_streamed_completion_ends_with_done(client):
    raw = client.post("/v1/completions", json={"prompt": "y", "stream": True}).text
    assert raw.rstrip().endswith("data: [DONE]")
    data = events(raw)
    assert "".join(d["choices"][0]["text"] for d in data) == SCRIPT
    assert data[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_without_a_model_template_is_written_as_chatml(client):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20}
    reply = client.post("/v1/chat/completions", json=body).json()
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": SCRIPT}
    assert reply["usage"]["prompt_tokens"] == len("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


# --- SillyTavern's own request bodies -----------------------------------------------------------------------


def test_sillytavern_text_completion_koboldcpp_body(client, caplog):
    with caplog.at_level(logging.WARNING, logger="talesmith.serve"):
        first = client.post("/v1/completions", json=fixture("st_textgen_koboldcpp.json")).json()
        again = client.post("/v1/completions", json=fixture("st_textgen_koboldcpp.json")).json()
    assert first["choices"][0]["text"] == again["choices"][0]["text"] == SCRIPT
    assert [r.getMessage() for r in caplog.records] == [  # named once, not on every request
        "ignored (talesmith has no such sampler): skew, smoothing_factor, smoothing_curve, max_tokens_second, top_a, "
        "tfs, custom_token_bans, sampler_order, nsigma, top_n_sigma, min_keep, adaptive_target, adaptive_decay, "
        "guidance_scale, negative_prompt, rep_pen_slope"
    ]


def test_sillytavern_kobold_classic_body(client):
    reply = client.post("/api/v1/generate", json=fixture("st_kobold_classic.json")).json()
    assert reply["results"][0]["text"] == SCRIPT


def test_sillytavern_chat_completion_custom_body(client):
    reply = client.post("/v1/chat/completions", json=fixture("st_chat_custom.json")).json()
    assert reply["choices"][0]["message"]["content"] == SCRIPT
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_sillytavern_sampler_fields_map_to_talesmith_settings():
    sampling = read_sampling(fixture("st_textgen_koboldcpp.json"))
    assert sampling.overrides == {
        "max_new_tokens": 40,
        "temperature": 0.7,
        "top_p": 0.5,
        "typical_p": 1.0,
        "seed": 7,
        "min_p": 0.0,
        "repetition_penalty": 1.2,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "top_k": 40,
        "dry_allowed_length": 2,
        "dry_multiplier": 0.0,
        "dry_base": 1.75,
        "dry_sequence_breakers": ("\n", ":", '"', "*"),
        "dry_window": WHOLE_CONTEXT,
        "stop": ("\nYou:",),
        "banned": (),
        "xtc_threshold": 0.1,
        "xtc_probability": 0.0,
        "mirostat": 0,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
        "repetition_window": WHOLE_CONTEXT,
    }
    assert sampling.ignored == (
        "skew",
        "smoothing_factor",
        "smoothing_curve",
        "max_tokens_second",
        "top_a",
        "tfs",
        "custom_token_bans",
        "sampler_order",
        "nsigma",
        "top_n_sigma",
        "min_keep",
        "adaptive_target",
        "adaptive_decay",
        "guidance_scale",
        "negative_prompt",
        "rep_pen_slope",
    )
    kobold = read_sampling(fixture("st_kobold_classic.json"))
    assert kobold.overrides["repetition_window"] == 320 and kobold.overrides["stop"] == ("\nYou:",)
    assert kobold.overrides["typical_p"] == 1.0 and kobold.overrides["seed"] == 7


def test_the_reply_is_capped_by_the_context_and_ban_eos_holds_it_open():
    base = SamplingSettings()
    capped = settings_for(base, read_sampling({"max_length": 900}), room=100)
    assert capped.max_new_tokens == 100
    no_eos = settings_for(base, read_sampling({"max_tokens": 30, "ban_eos_token": True}), room=100)
    assert (no_eos.max_new_tokens, no_eos.min_new_tokens) == (30, 30)
    unlimited = settings_for(base, read_sampling({"n_predict": -1}), room=77)
    assert unlimited.max_new_tokens == 77
    assert settings_for(base, read_sampling({"sampler_seed": -1}), room=10).seed is None


# --- refused requests: one line, the right shape, and the server goes on --------------------------------------


@pytest.mark.parametrize(
    "path,body,status,expected",
    [
        ("/v1/completions", b"{not json", 400, "the request body is not valid JSON"),
        ("/v1/completions", b"[1, 2]", 400, "the request body must be a JSON object, got list"),
        ("/v1/completions", b'{"prompt": 5}', 400, "prompt must be a string (one prompt per request)"),
        ("/v1/completions", b'{"prompt": "x", "top_k": "many"}', 400, 'top_k must be a number, got "many"'),
        ("/v1/completions", b'{"prompt": "x", "top_p": 7}', 400, "top_p 7.0 is outside (0, 1]"),
        ("/v1/completions", b'{"prompt": "x", "n": 99}', 400, "n 99 must be between 1 and 16"),
        ("/v1/chat/completions", b'{"messages": []}', 400, "messages must be a non-empty list"),
        ("/v1/completions", b'{"prompt": "x", "model": "gpt-4o"}', 404, "the model 'gpt-4o' is not served here"),
        ("/v1/completions", b'{"prompt": "' + b"z" * 600 + b'"}', 400, "the prompt is 600 tokens but the context"),
    ],
)
def test_openai_errors(client, path, body, status, expected):
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"].startswith(expected) and "\n" not in error["message"]
    assert client.get("/health").status_code == 200  # still serving


def test_kobold_errors_have_kobold_shape(client):
    response = client.post("/api/v1/generate", json={"prompt": "x", "temperature": "hot"})
    assert response.status_code == 400
    assert response.json() == {"detail": {"msg": 'temperature must be a number, got "hot"', "type": "bad_input"}}
    missing = client.post("/api/v1/generate", json={"max_length": 5})
    assert missing.json()["detail"]["msg"] == "prompt must be a string (missing)"


def test_bodies_are_bounded(client):
    big = b'{"prompt": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    response = client.post("/v1/completions", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "the most accepted is 8388608" in response.json()["error"]["message"]


def test_unknown_routes_are_one_line_404s(client):
    assert client.get("/v2/nothing").status_code == 404
    assert client.get("/api/nothing").json()["detail"]["type"] == "not_found"


# --- keys, addresses, CORS --------------------------------------------------------------------------------------


def test_an_api_key_is_required_as_a_bearer_token():
    with LiveServer(scripted_service(), api_key="s3cret") as live, httpx.Client(base_url=live.url) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/api/v1/model").json()["detail"]["type"] == "unauthorized"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200


def test_cors_is_off_unless_an_origin_is_given(client):
    origin = {"Origin": "http://example.org"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with LiveServer(scripted_service(), cors=("http://example.org",)) as live, httpx.Client(base_url=live.url) as c:
        assert c.get("/v1/models", headers=origin).headers["access-control-allow-origin"] == "http://example.org"


def test_other_addresses_need_a_key_or_the_open_flag():
    check_exposure("127.0.0.1", None, False)
    check_exposure("::1", None, False)
    check_exposure("0.0.0.0", "key", False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(SettingsError) as e:
        check_exposure("0.0.0.0", None, False)
    assert str(e.value) == (
        "--host 0.0.0.0 lets other machines use this server; give --api-key KEY to require a key, "
        "or --open to serve without one"
    )
    assert urls("0.0.0.0", 5001) == ("http://127.0.0.1:5001", "http://127.0.0.1:5001/v1")


def test_request_errors_carry_their_status():
    with pytest.raises(RequestError) as e:
        read_sampling({"ban_eos_token": "yes"})
    assert (e.value.status, str(e.value)) == (400, 'ban_eos_token must be true or false, got "yes"')


# --- chat templates and thinking models ------------------------------------------------------------------------


THINKING = ChatTemplate(
    text=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    ),
    source="test",
    stop_strings=("<|im_end|>",),
)


def test_a_thinking_models_reasoning_goes_to_reasoning_content():
    script = "The user greets me.</think>\nHello there!<|im_end|>"
    with LiveServer(scripted_service(script, template=THINKING)) as live, httpx.Client(base_url=live.url) as c:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}
        reply = c.post("/v1/chat/completions", json=body).json()
        assert reply["choices"][0]["message"] == {
            "role": "assistant",
            "content": "Hello there!",
            "reasoning_content": "The user greets me.",
        }
        data = events(c.post("/v1/chat/completions", json={**body, "stream": True}).text)
        deltas = [d["choices"][0]["delta"] for d in data]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user greets me."
        assert "".join(d.get("content", "") for d in deltas) == "Hello there!"
        assert data[-1]["choices"][0]["finish_reason"] == "stop"
        assert c.get("/props").json()["chat_template"] == THINKING.text


def test_an_unexpected_failure_is_one_line_and_the_server_goes_on(server, client, monkeypatch, caplog):
    def broken(prompt):
        raise RuntimeError("the tokenizer fell over")

    monkeypatch.setattr(server.service, "tokens", broken)
    with caplog.at_level(logging.ERROR, logger="talesmith.serve"):
        response = client.post("/v1/completions", json={"prompt": "x"})
    assert response.status_code == 500
    assert (
        response.json()["error"]["message"]
        == "the server failed on this request: RuntimeError: the tokenizer fell over"
    )
    assert [r.getMessage() for r in caplog.records] == [
        "POST /v1/completions failed: RuntimeError: the tokenizer fell over"
    ]
    monkeypatch.undo()
    assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
