"""talesmith serve on the bundled model: slots decoded together, caches kept between requests, aborts."""

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from serve_fakes import LiveServer

from talesmith.cli.serve.command import build
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.settings import SamplingSettings

pytestmark = pytest.mark.model
GREEDY = {"temperature": 0, "seed": 1}
STORY = (
    "The lighthouse keeper climbed the stairs every night. He counted the steps, one hundred and twelve, "
    "and at the top he lit the lamp that the ships had trusted for sixty years."
)


@pytest.fixture(scope="module")
def server(bundled_path):
    backend = LlamaCppBackend(bundled_path, n_ctx=512)
    ref = SimpleNamespace(name="gemma3-270m", path=Path(bundled_path))
    service, _ = build(backend, ref, SamplingSettings(max_new_tokens=16), slots=4)
    with LiveServer(service) as live:
        yield live
    backend.close()


def complete(client, prompt, **extra):
    body = {"prompt": prompt, "max_tokens": 6, **GREEDY, **extra}
    reply = client.post("/v1/completions", json=body).json()
    usage = reply["usage"]
    return reply["choices"], usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]


def test_concurrent_requests_share_decode_steps(server):
    decoder = server.service.engine.decoder
    steps = decoder.steps
    prompts = [STORY[:40], "Once upon a time", "The recipe calls for", "Rain fell on the city"]
    results: dict[int, list] = {}

    def ask(i):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            results[i] = complete(c, prompts[i], max_tokens=8)[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(r[0]["finish_reason"] in ("length", "stop") for r in results.values())
    assert decoder.steps - steps < 4 * 8  # tokens of several requests in one llama_decode


def test_a_resent_prompt_evaluates_only_what_changed(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        first, n_first, _ = complete(c, STORY)
        longer = STORY + first[0]["text"] + " The next morning"
        _, n_second, cached = complete(c, longer)
        assert cached >= n_first  # the prompt and the reply before were kept
        assert n_second - cached <= 8


def test_a_prompt_that_left_out_a_middle_part_shifts_the_cache(server):
    head = "Chapter one. "
    middle = "An old paragraph the client has dropped to make room, long enough to matter here. " * 2
    tail = STORY
    with httpx.Client(base_url=server.url, timeout=60) as c:
        complete(c, head + middle + tail)
        _, n_prompt, cached = complete(c, head + tail)
        assert n_prompt - cached <= 4  # the tail was slid back into place, not evaluated again


def test_n_samples_share_the_prompt_and_differ_by_seed(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        body = {"prompt": STORY, "max_tokens": 8, "n": 3, "temperature": 1.0, "seed": 5}
        reply = c.post("/v1/completions", json=body).json()
    assert [ch["index"] for ch in reply["choices"]] == [0, 1, 2]
    assert len({ch["text"] for ch in reply["choices"]}) > 1


def test_a_client_that_goes_away_frees_its_slot(server):
    engine = server.service.engine
    with httpx.Client(base_url=server.url, timeout=60) as c:
        body = {"prompt": STORY, "max_tokens": 200, "stream": True, "min_tokens": 200, **GREEDY}
        with c.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break
        deadline = time.monotonic() + 2
        while engine.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.busy() == 0
        assert c.get("/health").json()["slots_idle"] == 4
