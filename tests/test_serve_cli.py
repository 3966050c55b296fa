"""`talesmith serve` as a user runs it, in-process on a scripted model: what it prints, what it refuses."""

import socket

import pytest
import uvicorn
from fastapi.testclient import TestClient

pytest_plugins = ["cli_fakes"]


def test_serve_prints_where_to_point_sillytavern_and_answers(run_cli, scripted_model, monkeypatch):
    answers = {}

    def fake_run(self, sockets=None):  # instead of serving forever: one request through the app, then stop
        answers["listening"] = sockets[0].getsockname()[0]
        with TestClient(self.config.app) as client:
            answers["reply"] = client.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 5}).json()
        for s in sockets:
            s.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("serve", "--model", scripted_model, "--port", port)
    assert result.returncode == 0, result.stderr
    assert f"server URL http://127.0.0.1:{port}" in result.stderr
    assert f"(Custom): http://127.0.0.1:{port}/v1" in result.stderr
    assert "scripted models are served one request at a time" in result.stderr
    assert answers["listening"] == "127.0.0.1"
    assert answers["reply"]["results"][0]["text"] == " Once"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--host", "0.0.0.0"],
            "error: --host 0.0.0.0 lets other machines use this server; give --api-key KEY to require a key, "
            "or --open to serve without one",
        ),
        (["--parallel", "0"], "error: --parallel 0 must be at least 1"),
        (["--api-key", " "], "error: --api-key is empty; give a key, or leave the option out"),
    ],
)
def test_serve_refuses_before_loading_anything(run_cli, args, message):
    result = run_cli("serve", *args)
    assert (result.returncode, result.stderr.strip()) == (2, message)


def test_a_port_in_use_is_one_line(run_cli, scripted_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--model", scripted_model, "--port", port)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port"
    )
