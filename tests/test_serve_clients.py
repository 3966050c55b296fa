"""Real clients against talesmith serve on 127.0.0.1: the `openai` package, `koboldapi`, a replayed SillyTavern
chat, and a bounded load test with aborts. A scripted model stands in for a real one."""

import asyncio
import gc
import json
import random
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from serve_fakes import LiveServer, scripted_service

openai = pytest.importorskip("openai")
koboldapi = pytest.importorskip("koboldapi")

SCRIPT = "The dragon slept."
REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "real" / "st-chat-jsonl"


@pytest.fixture(scope="module")
def server():
    with LiveServer(scripted_service(SCRIPT)) as live:
        yield live


def test_openai_completions_streamed_and_not(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    done = client.completions.create(model="scripted", prompt="Once", max_tokens=9)
    assert (done.choices[0].text, done.choices[0].finish_reason) == ("The drago", "length")
    assert done.usage.prompt_tokens == 4 and done.usage.completion_tokens == 9
    parts = list(client.completions.create(model="scripted", prompt="Once", max_tokens=50, stream=True))
    assert "".join(p.choices[0].text for p in parts) == SCRIPT
    assert parts[-1].choices[0].finish_reason == "stop"
    assert [m.id for m in client.models.list()] == ["scripted"]


def test_openai_chat_streamed_and_not(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    done = client.chat.completions.create(model="scripted", messages=messages, max_tokens=60)
    assert done.choices[0].message.content == SCRIPT and done.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="scripted", messages=messages, max_tokens=60, stream=True)
    parts = list(stream)
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == SCRIPT
    assert parts[-1].choices[0].finish_reason == "stop"


def test_openai_errors_reach_the_client_as_its_own_exceptions(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)
    with pytest.raises(openai.NotFoundError, match="the model 'gpt-4o' is not served here"):
        client.completions.create(model="gpt-4o", prompt="x")
    with pytest.raises(openai.BadRequestError, match="temperature must be a number"):
        client.completions.create(model="scripted", prompt="x", extra_body={"temperature": "warm"})


def test_koboldapi_client(server):
    api = koboldapi.KoboldAPI(server.url, generation_params={"sampler_seed": 3})
    assert api.get_model() == "talesmith/scripted"
    assert api.get_max_context_length() == 512
    assert api.get_version()["result"] == "KoboldCpp"
    assert api.count_tokens("abc") == {"count": 3, "tokens": [97, 98, 99]}
    assert api.generate("Once", max_length=10) == "The dragon"
    assert api.generate_sync("Once", max_length=100) == SCRIPT  # streamed through /api/extra/generate/stream


def test_koboldapi_check_and_abort_by_genkey():
    with LiveServer(scripted_service("word " * 200, delay=0.005)) as live:
        api = koboldapi.KoboldAPI(live.url)
        result: list[str] = []
        worker = threading.Thread(target=lambda: result.append(api.generate("Go", max_length=400)))
        worker.start()
        deadline = time.monotonic() + 10
        while not (api.check_generation() or "").startswith("word word"):
            assert time.monotonic() < deadline, "the generation never showed its text"
            time.sleep(0.02)
        assert api.abort_generation() == "true"
        worker.join(10)
        assert result and result[0].startswith("word word") and len(result[0]) < len("word " * 200)
        assert live.service.engine.busy() == 0


def st_turns():
    """The messages of the SillyTavern chats, one after another, as (name, text)."""
    turns = []
    for path in sorted(REAL.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "mes" in record:
                turns.append((record["name"], record["mes"]))
    return turns


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real/st-chat-jsonl is not here")
def test_a_replayed_sillytavern_chat_evaluates_only_each_turns_new_text():
    """Each turn resends the whole chat, as SillyTavern does; the slot's cache keeps the rest."""
    turns = st_turns()
    assert len(turns) >= 3
    with LiveServer(scripted_service("Indeed.", n_ctx=4096)) as live, httpx.Client(base_url=live.url, timeout=10) as c:
        prompt, kept = "[A chat between You and the party.]\n", ""
        for name, text in turns:
            prompt += f"{name}: {text}\nYou: And then?\nAqua:"
            reply = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 40, "stop": ["\nYou:"]}).json()
            usage = reply["usage"]
            evaluated = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
            # one token per byte in the scripted model: what the cache kept is the last prompt and its reply
            assert evaluated == len(prompt.encode()) - len(kept.encode()), name
            assert reply["choices"][0]["text"] == "Indeed."
            kept = prompt + reply["choices"][0]["text"]
            prompt = kept + "\n"


async def _client(url: str, rng: random.Random, requests: int, outcomes: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        for _ in range(requests):
            body = {"prompt": f"Request {rng.random():.6f}:", "max_tokens": 64, "stream": True}
            abort_after = rng.choice([None, None, 1, 3])
            received = []
            async with c.stream("POST", "/v1/completions", json=body) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        break
                    if line.startswith("data: "):
                        received.append(json.loads(line[6:])["choices"][0])
                        if abort_after is not None and len(received) >= abort_after:
                            break  # the client goes away mid-reply
            if abort_after is not None and len(received) >= abort_after and received[-1]["finish_reason"] is None:
                outcomes.append("aborted")
            else:
                assert "".join(r["text"] for r in received) == SCRIPT and received[-1]["finish_reason"] == "stop"
                outcomes.append("full")


def _round(url: str, seed: int, clients: int = 8, requests: int = 20) -> list[str]:
    outcomes: list[str] = []

    async def main():
        rngs = [random.Random(seed * 100 + k) for k in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(_client(url, r, requests, outcomes) for r in rngs)), timeout=120)

    asyncio.run(main())
    return outcomes


def test_load_with_aborts_every_request_ends_cleanly_and_memory_stays_flat():
    with LiveServer(scripted_service(SCRIPT, delay=0.0005)) as live:
        first = _round(live.url, 1)
        assert len(first) == 160 and "aborted" in first and "full" in first
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            second = _round(live.url, 2)
            deadline = time.monotonic() + 5
            while live.service.engine.busy() and time.monotonic() < deadline:
                time.sleep(0.01)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(second) == 160
        assert live.service.engine.busy() == 0 and live.service.running() == 0
        assert all(slot.ticket is None for slot in live.service.engine.decoder.slots)
        assert grown < 1_000_000, f"the server kept {grown} bytes after 160 more requests"
        assert httpx.get(live.url + "/health").json()["status"] == "ok"


def test_a_client_that_gives_up_on_a_whole_answer_frees_its_slot():
    with LiveServer(scripted_service("word " * 400, delay=0.005)) as live:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(live.url + "/api/v1/generate", json={"prompt": "Go", "max_length": 1000}, timeout=0.3)
        deadline = time.monotonic() + 3
        while live.service.engine.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.service.engine.busy() == 0 and live.service.running() == 0
        assert httpx.post(live.url + "/api/v1/generate", json={"prompt": "Go", "max_length": 3}).json()["results"]
