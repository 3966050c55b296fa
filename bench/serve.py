"""talesmith serve against llama-cpp-python's own server, same model, same run: streaming clients and a replayed chat.

Both servers run the bundled model on this machine with the same threads (llama_cpp.server queues
concurrent requests and decodes one at a time; its default, which cuts a running request off when the
next arrives, is turned off). For 1, 4, 8 and 16 concurrent streaming clients, each client sends
`--requests` completions of `--tokens` tokens (end-of-text held off: `min_tokens` for talesmith, a logit
bias on the end tokens for llama_cpp.server), with llama_cpp.server's default sampling sent to both; the
levels alternate between the two servers, `--rounds` times over all levels, so that load from elsewhere
falls on both alike. Reported per level, as medians over the rounds: the tokens received (counted by the
model's tokenizer on the texts), aggregate tokens/s (tokens / wall time), the median time to first
token, and talesmith's ratio to the baseline (the median of the ratios within each round). Then a SillyTavern chat (../shared/real/st-chat-jsonl, when present) is
replayed turn by turn against talesmith with the whole prompt each time: tokens evaluated per turn against
the turn's new tokens.

    pip install 'llama-cpp-python[server]==0.3.36'
    python bench/serve.py [--levels 1,4,8,16] [--tokens 24] [--requests 1] [--rounds 3] [--ctx 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from talesmith.runtime.models.resolve import bundled_model_path

REPLAY = Path(__file__).resolve().parent.parent.parent / "shared" / "real" / "st-chat-jsonl"
PROMPTS = [
    "The lighthouse keeper climbed the stairs and",
    "Once upon a time, in a village by the sea,",
    "The recipe for the old queen's cake began with",
    "Rain fell on the city all night, and in the morning",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], url: str) -> subprocess.Popen:
    log = tempfile.TemporaryFile("w+")  # a pipe left unread would fill and stop the server
    process = subprocess.Popen(command, stdout=log, stderr=log, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(f"{command[2]} did not start: {log.read()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"{command} did not answer within 120 s")


async def one_client(url: str, body: dict, requests: int, first_tokens: list[float], texts: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        for _ in range(requests):
            sent = time.perf_counter()
            first = None
            parts = []
            async with c.stream("POST", "/v1/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        parts.append(json.loads(line[6:])["choices"][0]["text"])
                        if first is None and parts[-1]:
                            first = time.perf_counter() - sent
            first_tokens.append(first if first is not None else float("nan"))
            texts.append("".join(parts))


def count_tokens(counter: str, texts: list[str]) -> int:
    """Tokens in the replies, as the model's tokenizer counts them (the same for both servers)."""
    return sum(len(httpx.post(counter, json={"prompt": t}).json()["ids"]) for t in texts)


def level(url: str, clients: int, body_for, requests: int, counter: str) -> dict[str, float]:
    first_tokens: list[float] = []
    texts: list[str] = []

    async def run() -> None:
        await asyncio.gather(*(one_client(url, body_for(i), requests, first_tokens, texts) for i in range(clients)))

    started = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - started
    tokens = count_tokens(counter, texts)
    return {
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "first_token_seconds_median": round(statistics.median(first_tokens), 3),
        "seconds": round(seconds, 2),
    }


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}


def replay(url: str) -> dict[str, object] | None:
    if not REPLAY.is_dir():
        return None
    turns = []
    for path in sorted(REPLAY.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if "mes" in record:
                turns.append((record["name"], record["mes"]))
    rows = []
    prompt, before = "[A chat between You and the party.]\n", 0
    with httpx.Client(base_url=url, timeout=600) as c:
        for name, text in turns:
            prompt += f"{name}: {text}\nYou: Tell me more.\n{name}:"
            body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "stop": ["\nYou:"]}
            reply = c.post("/v1/completions", json=body).json()
            if "usage" not in reply:
                return {"turns": rows, "stopped": reply}
            usage = reply["usage"]
            evaluated = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
            rows.append(
                {"prompt": usage["prompt_tokens"], "new": usage["prompt_tokens"] - before, "evaluated": evaluated}
            )
            prompt += reply["choices"][0]["text"] + "\n"
            before = usage["prompt_tokens"] + usage["completion_tokens"]
    later = rows[1:]  # the first turn has nothing cached
    return {
        "turns": rows,
        "evaluated_over_new": round(sum(r["evaluated"] for r in later) / max(1, sum(r["new"] for r in later)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = str(bundled_model_path())
    ours_url, base_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    ours = start(
        [sys.executable, "-m", "talesmith.cli.main", "serve", "--port", ours_url.rsplit(":", 1)[1], "--ctx",
         str(args.ctx), "--parallel", str(max(levels)), "--threads", str(args.threads)],
        ours_url,
    )  # fmt: skip
    base = None
    try:
        base = start(
            [sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", base_url.rsplit(":", 1)[1],
             "--n_ctx", str(args.ctx), "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
             "--interrupt_requests", "False"],  # queue requests (its default cuts a running one off)
            base_url,
        )  # fmt: skip
        eog = httpx.post(ours_url + "/api/extra/tokencount", json={"prompt": "<eos><end_of_turn>"}).json()["ids"]

        def body(i: int) -> dict:  # llama_cpp.server's defaults, sent to both (its penalty window is 64)
            return {"prompt": PROMPTS[i % 4], "max_tokens": args.tokens, "stream": True, "seed": i,
                    "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}  # fmt: skip

        def ours_body(i: int) -> dict:
            return body(i) | {"min_tokens": args.tokens, "repeat_last_n": 64}

        def base_body(i: int) -> dict:
            return body(i) | {"logit_bias": {str(t): -100.0 for t in eog}}

        counter = ours_url + "/api/extra/tokencount"
        level(ours_url, 1, ours_body, 1, counter)  # warm both up
        level(base_url, 1, base_body, 1, counter)
        runs: dict[int, list[tuple[dict, dict]]] = {clients: [] for clients in levels}
        for _ in range(args.rounds):
            for clients in levels:
                runs[clients].append(
                    (
                        level(ours_url, clients, ours_body, args.requests, counter),
                        level(base_url, clients, base_body, args.requests, counter),
                    )
                )
        rows = []
        for clients, pairs in runs.items():
            ratios = [a["tokens_per_second"] / b["tokens_per_second"] for a, b in pairs]
            rows.append(
                {
                    "clients": clients,
                    "talesmith": median_of([a for a, _ in pairs]),
                    "llama_cpp_server": median_of([b for _, b in pairs]),
                    "tokens_per_second_ratio": round(statistics.median(ratios), 2),
                    "ratios_per_round": [round(r, 3) for r in ratios],
                }
            )
        result = {
            "model": Path(model).name,
            "tokens_per_request": args.tokens,
            "requests_per_client": args.requests,
            "rounds": args.rounds,
            "threads": args.threads,
            "levels": rows,
            "replay": replay(ours_url),
            "load_average": os.getloadavg(),
        }
        print(json.dumps(result, indent=2))
    finally:
        for process in (ours, base):
            if process is not None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    main()
