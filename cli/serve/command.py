"""`talesmith serve`: the model as a local KoboldCpp- and OpenAI-compatible API, for SillyTavern and other clients."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from talesmith.cli.options import (
    BackendOpt,
    Config,
    CtxOpt,
    DeviceOpt,
    GpuOpt,
    LockOpt,
    ModelOpt,
    PresetOpt,
    SpinOpt,
    ThreadsOpt,
    err,
    open_model,
    resolve_settings,
)
from talesmith.runtime.errors import SettingsError, TalesmithError

DEFAULT_PORT = 5001
DEFAULT_SLOTS = 4

HostOpt = typer.Option(
    "127.0.0.1", "--host", help="Address to listen on; any but this machine needs --api-key or --open."
)
PortOpt = typer.Option(DEFAULT_PORT, "--port", help="Port to listen on (KoboldCpp's is 5001).")
SlotsOpt = typer.Option(
    None,
    "--parallel",
    help=f"Requests decoded together, each with its own cache (default {DEFAULT_SLOTS}).",
)
ApiKeyOpt = typer.Option(
    None, "--api-key", help="Require this key, as 'Authorization: Bearer KEY' (KoboldCpp's password header)."
)
OpenOpt = typer.Option(False, "--open", help="Serve an address other than this machine without an API key.")
CorsOpt = typer.Option(None, "--cors", metavar="ORIGIN", help="Let web pages from ORIGIN call the API (repeatable).")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, open_: bool) -> None:
    """Binding anything but this machine needs a key, or the explicit word that the server is open."""
    if not is_loopback(host) and not api_key and not open_:
        raise SettingsError(
            f"--host {host} lets other machines use this server; give --api-key KEY to require a key, "
            f"or --open to serve without one"
        )
    if api_key is not None and not api_key.strip():
        raise SettingsError("--api-key is empty; give a key, or leave the option out")


def urls(host: str, port: int) -> tuple[str, str]:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    base = f"http://{shown}:{port}"
    return base, base + "/v1"


def build(backend: Any, ref: Any, settings: Any, *, slots: int | None) -> tuple[Any, list[str]]:
    """The service over the opened model, and notes for the user."""
    from talesmith.cli.parallel import decodes_in_parallel
    from talesmith.cli.serve.service import Service
    from talesmith.runtime.engine.loading import parallel_decoder
    from talesmith.runtime.engine.slots import SerialDecoder, SlotEngine

    notes = []
    decoder: Any
    able = decodes_in_parallel(backend)
    if able and (slots or DEFAULT_SLOTS) > 1:
        decoder = parallel_decoder(backend, slots or DEFAULT_SLOTS)
    else:
        if not able and slots not in (None, 1):
            notes.append(f"--parallel {slots} ignored: {backend.name} models are served one request at a time")
        elif not able:
            notes.append(f"{backend.name} models are served one request at a time")
        decoder = SerialDecoder(backend)
    template = None
    try:
        from talesmith.runtime.templates import model_template

        template = model_template(ref.path.parent if ref.path.name == "model.onnx" else ref.path)
    except TalesmithError as e:
        notes.append(f"chat template not used: {e}")
    if template is None:
        notes.append("the model carries no chat template: /v1/chat/completions writes ChatML")
    engine = SlotEngine(decoder)
    service = Service(engine, model_id=ref.name, base=settings, chat_template=template, backend_name=backend.name)
    return service, notes


def serve(
    model: str | None = ModelOpt,
    lock: Path | None = LockOpt,
    host: str = HostOpt,
    port: int = PortOpt,
    parallel: int | None = SlotsOpt,
    ctx: int | None = CtxOpt,
    api_key: str | None = ApiKeyOpt,
    open_: bool = OpenOpt,
    cors: list[str] | None = CorsOpt,
    preset: str | None = PresetOpt,
    backend: str | None = BackendOpt,
    device: str = DeviceOpt,
    gpu_layers: int = GpuOpt,
    threads: int | None = ThreadsOpt,
    spin: bool = SpinOpt,
) -> None:
    """Serve a model over HTTP for SillyTavern, Kobold Lite and OpenAI clients (KoboldCpp and OpenAI APIs)."""
    check_exposure(host, api_key, open_)
    if parallel is not None and parallel < 1:
        raise SettingsError(f"--parallel {parallel} must be at least 1")
    try:
        import uvicorn

        from talesmith.cli.serve.app import make_app
    except ImportError as e:
        raise TalesmithError(
            f"talesmith serve needs the serve extra ({e.name} is missing): pip install 'talesmith[serve]'"
        ) from None
    try:  # the port first: a port in use is said before a model is loaded
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise SettingsError(f"cannot listen on {host}:{port} ({reason}); choose another --port") from None
    try:
        ref, opened = open_model(
            model, lock, ctx=ctx, gpu_layers=gpu_layers, threads=threads, backend=backend, device=device, spin=spin
        )
        settings = resolve_settings(preset, Config(), ref.preset, {})
        service, notes = build(opened, ref, settings, slots=parallel)
    except BaseException:
        sock.close()
        raise
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    app = make_app(service, api_key=api_key, cors=tuple(cors or ()))
    kobold, openai = urls(host, port)
    err.print(
        f"talesmith serves {escape(ref.name)} ({service.n_slots} slot(s) of {service.n_ctx} tokens) at [bold]{kobold}[/]\n"
        f"  SillyTavern: API 'Text Completion', type 'KoboldCpp', server URL {kobold}\n"
        f"  OpenAI clients and SillyTavern 'Chat Completion' (Custom): {openai}",
        soft_wrap=True,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    service.engine.start()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        service.engine.close()
        opened.close()
