"""Adding, locking and pulling hub models through the real huggingface-hub code, against a local
server that speaks the hub's protocol (tests/hub_server.py). Nothing here reaches the network."""

import hashlib
import random
import subprocess
import sys
import tomllib

import pytest
from hub_server import HubServer, Repo

from talesmith.runtime.errors import InputError, ModelError
from talesmith.runtime.models import hub as hubmod
from talesmith.runtime.models.manage import HashMismatchError, pull, rows, verify
from talesmith.runtime.models.pinning import add, lock_model, name_for
from talesmith.runtime.models.resolve import resolve

pytest_plugins = ["cli_fakes"]  # the run_cli fixture

TINY = random.Random(5).randbytes(40_000)
CONFIG = b'{"model_type": "gpt2", "n_layer": 2}\n'
HF_FILES = {
    "config.json": CONFIG,
    "tokenizer.json": b'{"version": "1.0"}\n',
    "model.safetensors": TINY[:30_000],
    "flax_model.msgpack": TINY[:5_000],
    "README.md": b"# tiny\n",
}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("TALESMITH_CACHE", str(tmp_path / "talesmith-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    server.add(Repo("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": TINY, "config.json": CONFIG}, lfs={"tiny-Q4_K_M.gguf"}))
    server.add(Repo("acme/tiny-hf", dict(HF_FILES), lfs={"model.safetensors", "flax_model.msgpack"}))
    yield server
    server.stop()


def cache_files(tmp_path):
    root = tmp_path / "hf" / "hub"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_add_resolves_the_branch_to_its_commit_and_pins_lfs_hashes(hub, isolated_lock):
    entry, note = add("tiny", "acme/tiny-GGUF", prompt_format="story", preset="default")
    commit = hub.repos["acme/tiny-GGUF"].commit
    assert note is None
    saved = tomllib.loads(isolated_lock.read_text())["models"]["tiny"]
    assert saved == {
        "format": "gguf",
        "quantization": "Q4_K_M",
        "prompt_format": "story",
        "preset": "default",
        "source": {"hub": "acme/tiny-GGUF", "revision": "main", "commit": commit},
        "files": [{"name": "tiny-Q4_K_M.gguf", "sha256": hashlib.sha256(TINY).hexdigest(), "size": 40_000}],
    }
    assert saved == entry
    assert [r.path for r in hub.log] == ["/api/models/acme/tiny-GGUF/revision/main"]


def test_add_of_an_hf_checkpoint_takes_config_tokenizer_and_safetensors_only(hub):
    entry, _ = add("tinyhf", "acme/tiny-hf")
    assert entry["format"] == "hf"
    assert entry["files"] == [
        {"name": "config.json", "size": len(CONFIG)},
        {"name": "model.safetensors", "sha256": hashlib.sha256(TINY[:30_000]).hexdigest(), "size": 30_000},
        {"name": "tokenizer.json", "size": len(HF_FILES["tokenizer.json"])},
    ]


def test_pull_downloads_at_the_commit_verifies_and_pins_small_files(hub, isolated_lock, tmp_path):
    add("tinyhf", "acme/tiny-hf")
    result = pull("tinyhf")
    commit = hub.repos["acme/tiny-hf"].commit
    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-hf" / "snapshots" / commit
    assert result.path == snapshot
    assert [(c.name, c.state) for c in result.files] == [
        ("config.json", "unpinned"),
        ("model.safetensors", "ok"),
        ("tokenizer.json", "unpinned"),
    ]
    assert result.pinned == ("config.json", "tokenizer.json")
    assert (snapshot / "model.safetensors").read_bytes() == TINY[:30_000]
    files = tomllib.loads(isolated_lock.read_text())["models"]["tinyhf"]["files"]
    assert files[0] == {"name": "config.json", "sha256": hashlib.sha256(CONFIG).hexdigest(), "size": len(CONFIG)}
    assert all(f"/acme/tiny-hf/resolve/{commit}/" in r.path for r in hub.log if "/resolve/" in r.path)
    assert [(r.name, r.present, r.verified) for r in rows() if r.name == "tinyhf"] == [("tinyhf", "present", "yes")]
    assert [c.state for c in verify("tinyhf")] == ["ok", "ok", "ok"]


def test_pull_of_a_gguf_model_makes_it_loadable_by_name(hub, tmp_path):
    add("tiny", "acme/tiny-GGUF")
    with pytest.raises(ModelError, match="run `talesmith models pull tiny`"):
        resolve("tiny")
    pull("tiny")
    commit = hub.repos["acme/tiny-GGUF"].commit
    expected = tmp_path / "hf" / "hub" / "models--acme--tiny-GGUF" / "snapshots" / commit / "tiny-Q4_K_M.gguf"
    assert resolve("tiny").path == expected


def test_pull_resumes_an_interrupted_download(hub, tmp_path):
    add("tiny", "acme/tiny-GGUF")
    hub.cut["tiny-Q4_K_M.gguf"] = 10_000
    with pytest.raises(
        hubmod.HubError,
        match="connection broke while downloading tiny-Q4_K_M.gguf of acme/tiny-GGUF; "
        "rerun `talesmith models pull tiny` to resume",
    ):
        pull("tiny")
    partial = list((tmp_path / "hf" / "hub" / "models--acme--tiny-GGUF" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert 0 < kept <= 10_000 and kept % 4096 == 0
    pull("tiny")
    assert [r.range for r in hub.gets("tiny-Q4_K_M.gguf")] == [None, f"bytes={kept}-"]
    assert resolve("tiny").path.read_bytes() == TINY


def test_a_hash_mismatch_keeps_nothing_new(hub, tmp_path, isolated_lock):
    add("tinyhf", "acme/tiny-hf")
    pull("tinyhf")
    before = cache_files(tmp_path)
    lock_before = isolated_lock.read_text()
    repo = hub.add(Repo("acme/tiny-hf", {**HF_FILES, "model.safetensors": TINY[1:30_001]}, lfs={"model.safetensors"}))
    lock_model("tinyhf")
    altered = bytearray(repo.files["model.safetensors"])
    altered[123] ^= 1
    hub.altered["model.safetensors"] = bytes(altered)
    with pytest.raises(
        HashMismatchError,
        match=r"model.safetensors of model 'tinyhf' has sha256 \w{12}\.\.\. but "
        r"models.lock pins sha256 \w{12}\.\.\.; kept nothing new from this pull",
    ):
        pull("tinyhf")
    assert cache_files(tmp_path) == before
    assert tomllib.loads(isolated_lock.read_text())["models"]["tinyhf"]["source"]["commit"] == repo.commit
    assert lock_before != isolated_lock.read_text()


def test_offline_mode_uses_the_cache_and_never_asks_the_hub(hub, monkeypatch):
    add("tiny", "acme/tiny-GGUF")
    add("tinyhf", "acme/tiny-hf")
    pull("tiny")
    requests_so_far = len(hub.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert [c.state for c in pull("tiny").files] == ["ok"]
    with pytest.raises(
        hubmod.HubError,
        match="config.json of acme/tiny-hf at [0-9a-f]{12} is not in the local cache and "
        "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it",
    ):
        pull("tinyhf")
    with pytest.raises(
        hubmod.HubError, match="cannot resolve revision 'main' of acme/tiny-GGUF: HF_HUB_OFFLINE is set"
    ):
        lock_model("tiny")
    with pytest.raises(
        hubmod.HubError,
        match="downloading tiny-Q4_K_M.gguf of acme/tiny-GGUF again needs the hub, "
        "and HF_HUB_OFFLINE is set; unset it or drop --force",
    ):
        pull("tiny", force=True)
    assert len(hub.log) == requests_so_far


def test_add_while_offline_leaves_the_revision_unresolved_and_lock_resolves_it_later(hub, monkeypatch, isolated_lock):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry, note = add("tiny", "acme/tiny-GGUF", fmt="gguf", include=["*.gguf"])
    assert entry == {
        "format": "gguf",
        "source": {"hub": "acme/tiny-GGUF", "revision": "main", "commit": "unresolved"},
        "include": ["*.gguf"],
    }
    assert "HF_HUB_OFFLINE is set" in note
    monkeypatch.delenv("HF_HUB_OFFLINE")
    entry, previous = lock_model("tiny")
    assert previous == "unresolved"
    assert entry["source"]["commit"] == hub.repos["acme/tiny-GGUF"].commit
    assert [f["name"] for f in entry["files"]] == ["tiny-Q4_K_M.gguf"]


def test_lock_follows_a_branch_to_its_new_commit(hub):
    add("tiny", "acme/tiny-GGUF")
    old = hub.repos["acme/tiny-GGUF"].commit
    new = hub.add(
        Repo("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": TINY[::-1], "config.json": CONFIG}, lfs={"tiny-Q4_K_M.gguf"})
    )
    entry, previous = lock_model("tiny")
    assert (previous, entry["source"]["commit"]) == (old, new.commit)
    assert entry["files"] == [
        {"name": "tiny-Q4_K_M.gguf", "sha256": hashlib.sha256(TINY[::-1]).hexdigest(), "size": 40_000}
    ]


def test_pull_of_an_unresolved_catalogue_entry_locks_it_first(hub, isolated_lock):
    text = isolated_lock.read_text() + (
        '\n[models.tiny]\nformat = "gguf"\n'
        'source = { hub = "acme/tiny-GGUF", revision = "main", commit = "unresolved" }\n'
    )
    isolated_lock.write_text(text)
    assert [c.state for c in pull("tiny").files] == ["ok"]
    assert (
        tomllib.loads(isolated_lock.read_text())["models"]["tiny"]["source"]["commit"]
        == hub.repos["acme/tiny-GGUF"].commit
    )


def test_a_gguf_repo_with_several_quantizations_needs_a_file_choice(hub):
    hub.add(
        Repo(
            "acme/multi", {"m-Q4_K_M.gguf": TINY[:100], "m-Q8_0.gguf": TINY[:200]}, lfs={"m-Q4_K_M.gguf", "m-Q8_0.gguf"}
        )
    )
    with pytest.raises(
        ModelError,
        match=r"acme/multi at main has 2 GGUF files \(m-Q4_K_M.gguf, m-Q8_0.gguf\); "
        r"choose with --file PATTERN",
    ):
        add("multi", "acme/multi")
    entry, _ = add("multi", "acme/multi", include=["*Q8_0.gguf"])
    assert (entry["quantization"], [f["name"] for f in entry["files"]]) == ("Q8_0", ["m-Q8_0.gguf"])


def test_hub_refusals_are_one_line_errors(hub):
    with pytest.raises(
        hubmod.HubError, match="hub repo 'acme/none' does not exist, or it is private and needs a token"
    ):
        add("none", "acme/none")
    with pytest.raises(hubmod.HubError, match="revision 'v9' is not in acme/tiny-GGUF; pass an existing branch"):
        add("tiny", "acme/tiny-GGUF", revision="v9")


def test_a_gated_repo_uses_the_login_token_and_never_stores_it(hub, monkeypatch, isolated_lock):
    hub.add(Repo("acme/gated", {"g.gguf": TINY[:500]}, lfs={"g.gguf"}, token="hf_secret123"))
    with pytest.raises(
        hubmod.HubError,
        match=r"acme/gated is gated: accept its terms at http://127.0.0.1:\d+/acme/gated, "
        r"then log in with `hf auth login` or set HF_TOKEN",
    ):
        add("gated", "acme/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    add("gated", "acme/gated")
    pull("gated")
    assert {r.authorization for r in hub.log[1:]} == {"Bearer hf_secret123"}
    assert "hf_secret123" not in isolated_lock.read_text()


def test_cli_pull_prints_the_path_and_fails_with_one_line_on_a_cut_connection(hub, tmp_path):
    add("tiny", "acme/tiny-GGUF")
    hub.cut["tiny-Q4_K_M.gguf"] = 5_000
    cli = [sys.executable, "-m", "talesmith.cli.main", "models"]
    failed = subprocess.run([*cli, "pull", "tiny"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.splitlines()[-1] == (
        "error: the connection broke while downloading tiny-Q4_K_M.gguf of "
        "acme/tiny-GGUF; rerun `talesmith models pull tiny` to resume"
    )
    done = subprocess.run([*cli, "pull", "tiny"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-GGUF" / "snapshots" / hub.repos["acme/tiny-GGUF"].commit
    assert done.stdout == f"{snapshot}\n"
    assert "verified 1 files of tiny" in done.stderr
    path = subprocess.run([*cli, "path", "tiny"], capture_output=True, text=True, timeout=60)
    assert path.stdout == f"{snapshot / 'tiny-Q4_K_M.gguf'}\n"


def test_an_unreachable_hub_is_one_line_and_add_keeps_the_revision_unresolved(hub, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError) as e:
        add("tiny", "acme/tiny-GGUF")
    assert str(e.value) == (
        f"pass --format (hf, gguf, onnx) for acme/tiny-GGUF: the hub cannot be asked (cannot reach "
        f"the hub at http://127.0.0.1:{port} for acme/tiny-GGUF (Connection refused); check the network)"
    )
    entry, note = add("tiny", "acme/tiny-GGUF", fmt="gguf")
    assert entry["source"]["commit"] == "unresolved"
    assert note.startswith(f"cannot reach the hub at http://127.0.0.1:{port}")


def test_lock_resolves_a_separate_tokenizer_source_too(hub, isolated_lock):
    tok = hub.add(Repo("acme/tokenizer", {"tokenizer.json": b"{}"}))
    isolated_lock.write_text(
        isolated_lock.read_text()
        + (
            '\n[models.jp]\nformat = "hf"\nsource = { hub = "acme/tiny-hf", revision = "main", commit = "unresolved" }\n'
            'tokenizer = { hub = "acme/tokenizer", revision = "main", commit = "unresolved" }\n'
        )
    )
    entry, _ = lock_model("jp")
    saved = tomllib.loads(isolated_lock.read_text())["models"]["jp"]
    assert saved == entry
    assert saved["tokenizer"] == {"hub": "acme/tokenizer", "revision": "main", "commit": tok.commit}
    assert saved["source"]["commit"] == hub.repos["acme/tiny-hf"].commit


def test_cli_verify_of_a_tampered_hub_file_asks_for_a_fresh_pull(hub, tmp_path):
    add("tiny", "acme/tiny-GGUF")
    path = pull("tiny").path / "tiny-Q4_K_M.gguf"
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x80
    blob.write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "talesmith.cli.main", "models", "verify", "tiny"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: 1 of 1 files failed verification (first: tiny-Q4_K_M.gguf of tiny, mismatch); "
        "run `talesmith models pull tiny --force`\n"
    )
    assert result.stdout == "MISMATCH  tiny  tiny-Q4_K_M.gguf\n"
    assert [c.state for c in pull("tiny", force=True).files] == ["ok"]
    assert blob.read_bytes() == TINY


# ---- owner/repo:QUANT, as llama.cpp's -hf picks a GGUF ---------------------------------------------------

STORY_FILES = {
    "story-Q4_0.gguf": TINY[:1_000],
    "story-Q4_K_M.gguf": TINY[:2_000],
    "story-Q8_0.gguf": TINY[:3_000],
    "story-Q5_K_S-00001-of-00002.gguf": TINY[:400],
    "story-Q5_K_S-00002-of-00002.gguf": TINY[400:900],
    "mmproj-story-F16.gguf": TINY[:50],
    "README.md": b"# story\n",
}


@pytest.fixture
def story_repo(hub):
    return hub.add(Repo("acme/story-GGUF", dict(STORY_FILES), lfs={n for n in STORY_FILES if n.endswith(".gguf")}))


def pinned(name: str, *, size: int | None = None) -> dict:
    data = STORY_FILES[name]
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data) if size is None else size}


def test_a_quantization_tag_picks_its_gguf_and_pins_it(story_repo, isolated_lock):
    entry, note = add(None, "acme/story-GGUF:Q8_0")
    saved = tomllib.loads(isolated_lock.read_text())["models"]["story-Q8_0"]
    assert note is None and saved == entry
    assert entry == {
        "format": "gguf",
        "quantization": "Q8_0",
        "source": {"hub": "acme/story-GGUF", "revision": "main", "commit": story_repo.commit},
        "files": [pinned("story-Q8_0.gguf")],
    }
    assert pull("story-Q8_0").path / "story-Q8_0.gguf" == resolve("story-Q8_0").path


def test_a_tag_is_read_as_the_hub_reads_it_and_a_split_model_keeps_all_its_parts(story_repo):
    low, _ = add("low", "acme/story-GGUF:q4")  # lower case, and a family: Q4_K_M before Q4_0, as llama.cpp
    assert (low["quantization"], low["files"]) == ("Q4_K_M", [pinned("story-Q4_K_M.gguf")])
    split, _ = add("split", "acme/story-GGUF:Q5_K_S")
    assert [f["name"] for f in split["files"]] == [
        "story-Q5_K_S-00001-of-00002.gguf",
        "story-Q5_K_S-00002-of-00002.gguf",
    ]
    assert add("k", "acme/story-GGUF:Q4_K")[0]["quantization"] == "Q4_K_M"
    named, _ = add("named", "acme/story-GGUF", include=["story-Q4_0.gguf"])
    assert (named["quantization"], named["files"]) == ("Q4_0", [pinned("story-Q4_0.gguf")])


def test_a_missing_quantization_names_the_ones_there(story_repo):
    with pytest.raises(ModelError) as e:
        add(None, "acme/story-GGUF:Q2_K")
    assert str(e.value) == (
        "acme/story-GGUF at main has no Q2_K GGUF file (quantizations here: Q4_0, Q4_K_M, Q5_K_S, Q8_0); "
        "choose one with acme/story-GGUF:QUANT or --file NAME"
    )
    with pytest.raises(
        ModelError, match=r"choose with --file PATTERN or acme/story-GGUF:Q4_K_M \(quantizations here: "
    ):
        add("story", "acme/story-GGUF")
    with pytest.raises(InputError, match=r"name the model: talesmith models add NAME acme/story-GGUF \(or give"):
        name_for("acme/story-GGUF")
    with pytest.raises(InputError, match="names a quantization and --file names files; give one of them"):
        add(None, "acme/story-GGUF:Q8_0", include=["*.gguf"])
    with pytest.raises(InputError, match=r"'Q\*' is not a quantization; write owner/repo:QUANT"):
        add(None, "acme/story-GGUF:Q*")


def test_lock_follows_the_branch_and_keeps_the_chosen_quantization(hub, story_repo):
    add(None, "acme/story-GGUF:Q8_0")
    renamed = {n.replace("story-", "story-v2-"): d[::-1] for n, d in STORY_FILES.items()}
    new = hub.add(Repo("acme/story-GGUF", renamed, lfs={n for n in renamed if n.endswith(".gguf")}))
    entry, previous = lock_model("story-Q8_0")
    assert previous == story_repo.commit and entry["source"]["commit"] == new.commit
    assert [f["name"] for f in entry["files"]] == ["story-v2-Q8_0.gguf"]


def test_cli_add_of_a_tagged_repo_names_the_model_after_it(story_repo, run_cli, isolated_lock):
    result = run_cli("models", "add", "acme/story-GGUF:Q4_K_M")
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"added story-Q4_K_M at {story_repo.commit[:12]} (1 files)\n"
    assert tomllib.loads(isolated_lock.read_text())["models"]["story-Q4_K_M"]["files"] == [pinned("story-Q4_K_M.gguf")]
    again = run_cli("models", "add", "acme/story-GGUF:Q4_K_M")
    assert again.returncode == 2
    assert again.stderr.startswith("error: 'story-Q4_K_M' is already in ")
    missing = run_cli("models", "add", "mine", "acme/story-GGUF:IQ2_XS")
    assert (missing.returncode, missing.stderr) == (
        2,
        "error: acme/story-GGUF at main has no IQ2_XS GGUF file (quantizations here: Q4_0, Q4_K_M, Q5_K_S, "
        "Q8_0); choose one with acme/story-GGUF:QUANT or --file NAME\n",
    )


@pytest.mark.parametrize(
    "filename, quant",
    [
        ("tiny-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.Q4_K_M.gguf", "Q4_K_M"),
        ("Qwen3-8B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("m-iq4_xs.gguf", "IQ4_XS"),
        ("m-IQ2_XXS.gguf", "IQ2_XXS"),
        ("Q5_K_S/m-Q5_K_S-00001-of-00002.gguf", "Q5_K_S"),
        ("m-TQ1_0.gguf", "TQ1_0"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("m-BF16.gguf", "BF16"),
        ("llama-2-7b.gguf", None),
    ],
)
def test_the_quantization_a_file_name_states(filename, quant):
    from talesmith.runtime.models.pinning import quant_of

    assert quant_of(filename) == quant
