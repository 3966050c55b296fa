"""Ray clusters that cannot run the batch are refused at once, and a local cluster never outlives its driver."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from talesmith.runtime.batch_ray import RayOptions, check_resources  # noqa: E402
from talesmith.runtime.errors import SettingsError  # noqa: E402

pytest_plugins = ["cli_fakes"]  # the run_cli and scripted_model fixtures


def cluster_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if p.name() in ("raylet", "gcs_server") or "ray::" in p.name()]


def test_gpus_a_machine_without_them_cannot_give_are_one_line_and_ray_is_shut_down(tmp_path, run_cli, scripted_model):
    rows = tmp_path / "in.csv"
    rows.write_text("prompt\nOnce\n")
    out = tmp_path / "out.jsonl"
    if shutil.which("nvidia-smi") or ray.is_initialized():
        pytest.skip("this machine has a GPU, or a Ray cluster is already running in this process")
    started = time.monotonic()
    result = run_cli("batch", rows, "-o", out, "-m", scripted_model, "--ray", "local", "--ray-gpus", "1")
    assert (result.returncode, result.stderr.strip().splitlines()) == (
        2,
        [
            "error: --ray-actors 2 with --ray-gpus 1 need 2 GPUs, but the Ray cluster has 0 GPUs; use --ray-gpus 0 "
            "or a cluster with GPUs"
        ],
    )
    assert time.monotonic() - started < 120  # it used to wait for ever
    assert not ray.is_initialized()
    assert cluster_processes(psutil.Process()) == []
    assert not out.exists() and not (tmp_path / "out.jsonl.lock").exists()


@pytest.mark.parametrize(
    "options,resources,message",
    [
        (RayOptions(actors=2, gpus=1), {"CPU": 8.0}, "need 2 GPUs, but the Ray cluster has 0 GPUs; use --ray-gpus 0"),
        (RayOptions(actors=3, gpus=0.5), {"CPU": 8.0, "GPU": 1.0}, "need 1.5 GPUs, but the Ray cluster has 1 GPU;"),
        (RayOptions(actors=4, cpus=2), {"CPU": 6.0}, "--ray-cpus 2 need 8 CPUs, but the Ray cluster has 6 CPUs;"),
    ],
)
def test_actors_the_cluster_cannot_place_are_refused(options, resources, message):
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        check_resources(options, resources)
    check_resources(options, {"CPU": 8.0, "GPU": 2.0})  # enough of both: no error


DRIVER = textwrap.dedent(
    """
    import time
    import ray
    from talesmith.runtime.batch_ray import ModelSource, RayExecutor, RayOptions, _session_dir

    executor = RayExecutor(RayOptions(actors=1, cpus=1), ModelSource("/nowhere/model.gguf", "", "", "0"))
    print(_session_dir(ray), flush=True)
    time.sleep(600)
    """
)


def test_a_local_cluster_is_stopped_after_its_driver_is_killed(tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        session = driver.stdout.readline().strip()
        assert session, "the driver did not start a cluster"
        time.sleep(2)  # its agents start after the raylet
        own = [p for p in psutil.process_iter(["cmdline"]) if session in " ".join(p.info["cmdline"] or ())]
        cluster = {p.pid: p for q in own for p in [q, *q.children(recursive=True)]}
        assert any("ray::" in p.name() for p in cluster.values())  # Ray's agents, renamed: no session on their line
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in cluster.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.25)
    assert [p.name() for p in alive] == []
