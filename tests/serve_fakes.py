"""A talesmith server for tests: the real app and engine over a scripted model (or any backend), on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fakes import ScriptedBackend

from talesmith.cli.serve.app import make_app
from talesmith.cli.serve.service import Service
from talesmith.runtime.engine.slots import SerialDecoder, SlotEngine
from talesmith.runtime.settings import SamplingSettings

BASE = SamplingSettings(temperature=0, max_new_tokens=64)


class SlowScripted(ScriptedBackend):
    """A scripted model that takes `delay` seconds per token, so that requests are still running when aborted."""

    def __init__(self, script: str, *, delay: float, **kwargs: Any):
        super().__init__(script, **kwargs)
        self.delay = delay

    def append(self, token: int) -> None:
        time.sleep(self.delay)
        super().append(token)


def scripted_service(
    script: str = "Once upon a time.", *, n_ctx: int = 512, template: Any = None, delay: float = 0.0
) -> Service:
    backend = SlowScripted(script, n_ctx=n_ctx, delay=delay) if delay else ScriptedBackend(script, n_ctx=n_ctx)
    engine = SlotEngine(SerialDecoder(backend))
    return Service(engine, model_id="scripted", base=BASE, chat_template=template, backend_name="scripted")


class LiveServer:
    """The app served by uvicorn in a thread, on a free port of 127.0.0.1 only; stopped within seconds."""

    def __init__(self, service: Service, **app_options: Any):
        self.service = service
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(make_app(service, **app_options), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.service.engine.start()
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start within 10 s"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.service.engine.close()
