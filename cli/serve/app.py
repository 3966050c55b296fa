"""The HTTP routes: KoboldCpp's API (`/api/...`), the OpenAI-compatible one (`/v1/...`), `/props` and `/health`.

Request and response shapes follow KoboldCpp's koboldcpp.py and what SillyTavern sends and reads
(src/endpoints/backends/kobold.js, text-completions.js). Every refused request gets a 4xx with one line,
in the Kobold shape (`{"detail": {"msg", "type"}}`) under `/api` and the OpenAI shape
(`{"error": {"message", "type", "param", "code"}}`) elsewhere; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from talesmith.cli.serve.chat import ChatStream, chat_prompt
from talesmith.cli.serve.requests import RequestError, count_field, read_body, text_field
from talesmith.cli.serve.service import FINISH_REASONS, Reply, Service, collect
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import SamplingSettings

log = logging.getLogger("talesmith.serve")

MAX_BODY = 8 * 1024 * 1024
"""Request bodies larger than this are refused (413)."""
KOBOLD_VERSION = "1.80"
"""The KoboldCpp version reported: clients turn on streaming, stop sequences and token counting by it."""
T = TypeVar("T")


def _kobold_style(path: str) -> bool:
    return path.startswith("/api/")


def error_response(path: str, status: int, message: str, *, param: str | None = None, code: str | None = None):
    if _kobold_style(path):
        kind = {401: "unauthorized", 404: "not_found", 413: "bad_input"}.get(status, "bad_input")
        return JSONResponse({"detail": {"msg": message, "type": kind}}, status_code=status)
    kind = {401: "authentication_error", 404: "invalid_request_error", 413: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, at most MAX_BODY bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise RequestError(f"the request body is {int(length)} bytes; the most accepted is {MAX_BODY}", status=413)
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > MAX_BODY:
            raise RequestError(f"the request body is over {MAX_BODY} bytes, the most accepted", status=413)
    return read_body(bytes(data))


async def guarded(events: AsyncIterator[dict[str, str]], last: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """A stream of server-sent events that ends with `last` (and one line in the log) if the request fails midway."""
    try:
        async for event in events:
            yield event
    except TalesmithError as e:
        log.warning("a streamed request ended early: %s", e)
        yield last
    except Exception as e:
        log.error("a streamed request failed: %s: %s", type(e).__name__, e)
        yield last


def stream_response(events: AsyncIterator[dict[str, str]], last: dict[str, str]) -> EventSourceResponse:
    return EventSourceResponse(guarded(events, last), sep="\n", ping=15)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its requests' slots) when the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()


class Guard:
    """The API key check, and the last word on a request that failed: one line in the log and to the client,
    no traceback, and the server goes on. Plain ASGI, so that a route still sees its client go away."""

    def __init__(self, app: Any, *, api_key: str | None):
        self.app = app
        self.api_key = api_key

    def _allowed(self, scope: dict[str, Any]) -> bool:
        if not self.api_key or scope["path"] == "/health" or scope.get("method") == "OPTIONS":
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else headers.get("x-api-key", "")
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not self._allowed(scope):
            message = "the API key is missing or wrong; send it as 'Authorization: Bearer KEY'"
            await error_response(path, 401, message)(scope, receive, send)
            return
        started = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientGone:
            pass  # nobody reads an answer; its slot is free already
        except Exception as e:
            log.error("%s %s failed: %s: %s", scope.get("method"), path, type(e).__name__, e)
            if not started:
                reply = error_response(path, 500, f"the server failed on this request: {type(e).__name__}: {e}")
                await reply(scope, receive, send)


def make_app(service: Service, *, api_key: str | None = None, cors: tuple[str, ...] = ()) -> FastAPI:
    app = FastAPI(title="talesmith", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=api_key)
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["*"], allow_headers=["*"])

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError) -> Response:
        return error_response(request.url.path, e.status, str(e), param=e.param, code=e.code)

    @app.exception_handler(TalesmithError)
    async def user_error(request: Request, e: TalesmithError) -> Response:
        return error_response(request.url.path, 400, str(e))

    @app.exception_handler(404)
    async def not_found(request: Request, e: Exception) -> Response:
        return error_response(request.url.path, 404, f"there is no {request.method} {request.url.path} here")

    @app.exception_handler(405)
    async def wrong_method(request: Request, e: Exception) -> Response:
        return error_response(request.url.path, 405, f"{request.url.path} does not take {request.method}")

    _kobold_routes(app, service)
    _openai_routes(app, service)
    return app


# --- KoboldCpp --------------------------------------------------------------------------------------------


def _kobold_routes(app: FastAPI, service: Service) -> None:
    @app.get("/api/v1/model")
    async def model() -> dict[str, Any]:
        return {"result": f"talesmith/{service.model_id}"}

    @app.get("/api/v1/info/version")
    async def info_version() -> dict[str, Any]:
        return {"result": "1.2.5"}

    @app.get("/api/extra/version")
    async def extra_version() -> dict[str, Any]:
        return {"result": "KoboldCpp", "version": KOBOLD_VERSION, "server": "talesmith", "txt2img": False}

    @app.get("/api/extra/true_max_context_length")
    @app.get("/api/v1/config/max_context_length")
    async def max_context() -> dict[str, Any]:
        return {"value": service.n_ctx}

    @app.get("/api/v1/config/max_length")
    async def max_length() -> dict[str, Any]:
        return {"value": service.base.max_new_tokens}

    def genkey_of(body: dict[str, Any]) -> str:
        key = body.get("genkey", "")
        if not isinstance(key, str):
            raise RequestError(f"genkey must be a string, got {json.dumps(key)}", param="genkey")
        return key

    async def kobold_request(request: Request):
        body = await read_json(request)
        tokens = service.tokens(text_field(body, "prompt"))
        return body, tokens, service.settings(tokens, body), genkey_of(body)

    @app.post("/api/v1/generate")
    async def generate(request: Request) -> dict[str, Any]:
        body, tokens, settings, genkey = await kobold_request(request)
        n = count_field(body, "n", default=1, most=service.max_n)
        replies = await until_disconnect(
            request, collect(service.run(tokens, settings, n=n, genkey=genkey or None), n=n, prompt_tokens=len(tokens))
        )
        return {
            "results": [
                {
                    "text": r.text,
                    "finish_reason": r.finish_reason,
                    "logprobs": None,
                    "prompt_tokens": len(tokens),
                    "completion_tokens": r.completion_tokens,
                }
                for r in replies
            ]
        }

    @app.post("/api/extra/generate/stream")
    async def generate_stream(request: Request) -> Response:
        _, tokens, settings, genkey = await kobold_request(request)

        async def events() -> AsyncIterator[dict[str, str]]:
            async for _, chunk in service.run(tokens, settings, genkey=genkey or None):
                if chunk is None:  # aborted
                    yield {"event": "message", "data": json.dumps({"token": "", "finish_reason": "stop"})}
                    return
                reason = FINISH_REASONS[chunk.finish_reason] if chunk.finish_reason else None
                if chunk.text or reason:
                    data = {"token": chunk.text, "finish_reason": reason}
                    yield {"event": "message", "data": json.dumps(data, ensure_ascii=False)}

        return stream_response(
            events(), {"event": "message", "data": json.dumps({"token": "", "finish_reason": "stop"})}
        )

    @app.post("/api/extra/generate/check")
    async def check(request: Request) -> dict[str, Any]:
        body = await read_json(request) if await request.body() else {}
        return {"results": [{"text": service.partial(genkey_of(body))}]}

    @app.post("/api/extra/abort")
    async def abort(request: Request) -> dict[str, Any]:
        body = await read_json(request) if await request.body() else {}
        done = service.abort(genkey_of(body))
        return {"success": "true" if done else "false", "done": "true"}

    @app.post("/api/extra/tokencount")
    @app.post("/api/extra/tokenize")
    async def tokencount(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        ids = service.count(text_field(body, "prompt", required=False))
        return {"value": len(ids), "ids": ids}


# --- OpenAI-compatible ------------------------------------------------------------------------------------


def _openai_routes(app: FastAPI, service: Service) -> None:
    def check_model(body: dict[str, Any]) -> None:
        model = body.get("model")
        if model in (None, "", service.model_id, f"talesmith/{service.model_id}"):
            return
        if not isinstance(model, str):
            raise RequestError(f"model must be a string, got {json.dumps(model)}", param="model")
        raise RequestError(
            f"the model {model!r} is not served here; this server serves {service.model_id!r} (GET /v1/models)",
            status=404,
            param="model",
            code="model_not_found",
        )

    def usage(prompt: int, replies: list[Reply]) -> dict[str, Any]:
        completion = sum(r.completion_tokens for r in replies)
        cached = prompt - max(r.evaluated for r in replies)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def begin(
        body: dict[str, Any], prompt: str, prefix: str, kind: str
    ) -> tuple[list[int], SamplingSettings, int, dict[str, Any]]:
        """A completion request's prompt tokens, settings and sample count (n), and the fields every
        response object (or streamed chunk) of it starts with."""
        tokens = service.tokens(prompt)
        settings = service.settings(tokens, body)
        n = count_field(body, "n", default=1, most=service.max_n)
        ident, created = f"{prefix}-{uuid.uuid4().hex}", int(time.time())
        return tokens, settings, n, {"id": ident, "object": kind, "created": created, "model": service.model_id}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": service.model_id, "object": "model", "created": 0, "owned_by": "talesmith"}
        return {"object": "list", "data": [{**entry, "meta": {"n_ctx": service.n_ctx}}]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "slots_idle": service.n_slots - min(service.n_slots, service.running())}

    @app.get("/props")
    async def props() -> dict[str, Any]:
        template = service.chat_template
        return {
            "chat_template": template.text if template is not None else "",
            "bos_token": template.bos_token if template is not None else "",
            "eos_token": template.eos_token if template is not None else "",
            "model_path": service.model_id,
            "total_slots": service.n_slots,
            "n_ctx": service.n_ctx,
            "default_generation_settings": {
                "n_ctx": service.n_ctx,
                "params": {"n_predict": service.base.max_new_tokens, **service.base.to_dict()},
            },
            "backend": service.backend_name,
            "parallel": service.n_slots > 1,
            "serving": (
                f"{service.n_slots} requests decoded together"
                if service.n_slots > 1
                else f"one request at a time ({service.backend_name})"
            ),
            "build_info": "talesmith",
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_json(request)
        check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]  # the openai client may send a one-element list
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string (one prompt per request)", param="prompt")
        tokens, settings, n, head = begin(body, prompt, "cmpl", "text_completion")
        if body.get("stream"):

            async def events() -> AsyncIterator[dict[str, str]]:
                async for index, chunk in service.run(tokens, settings, n=n):
                    reason = "stop" if chunk is None else FINISH_REASONS.get(chunk.finish_reason or "")
                    text = "" if chunk is None else chunk.text
                    if text or reason:
                        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": reason}
                        yield {"data": json.dumps({**head, "choices": [choice]}, ensure_ascii=False)}
                yield {"data": "[DONE]"}

            return stream_response(events(), {"data": "[DONE]"})
        replies = await until_disconnect(
            request, collect(service.run(tokens, settings, n=n), n=n, prompt_tokens=len(tokens))
        )
        choices = [
            {"text": r.text, "index": i, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(replies)
        ]
        return JSONResponse({**head, "choices": choices, "usage": usage(len(tokens), replies)})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read_json(request)
        check_model(body)
        chat = chat_prompt(service.chat_template, body)
        tokens, settings, n, head = begin(body, chat.prompt, "chatcmpl", "chat.completion.chunk")
        if body.get("stream"):

            async def events() -> AsyncIterator[dict[str, str]]:
                streams = [ChatStream(chat.thinking) for _ in range(n)]
                for index in range(n):
                    choice = {"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    yield {"data": json.dumps({**head, "choices": [choice]})}
                async for index, chunk in service.run(tokens, settings, n=n, stops=chat.stops):
                    final = chunk is None or chunk.finish_reason is not None
                    delta = streams[index].push("" if chunk is None else chunk.text, final=final)
                    reason = None
                    if final:
                        reason = "stop" if chunk is None else FINISH_REASONS[chunk.finish_reason or "stop"]
                    if delta or reason:
                        choice = {"index": index, "delta": delta, "finish_reason": reason}
                        yield {"data": json.dumps({**head, "choices": [choice]}, ensure_ascii=False)}
                yield {"data": "[DONE]"}

            return stream_response(events(), {"data": "[DONE]"})
        replies = await until_disconnect(
            request, collect(service.run(tokens, settings, n=n, stops=chat.stops), n=n, prompt_tokens=len(tokens))
        )
        choices = []
        for i, r in enumerate(replies):
            message = ChatStream(chat.thinking).message(r.text)
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": r.finish_reason})
        result = {**head, "object": "chat.completion", "choices": choices, "usage": usage(len(tokens), replies)}
        return JSONResponse(result)
