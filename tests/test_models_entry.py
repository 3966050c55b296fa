"""models.lock entries as typed data, and the GGUF header reader's sizes taken from the gguf package."""

from __future__ import annotations

import numpy as np
import pytest

from talesmith.runtime.errors import LockError
from talesmith.runtime.models.entry import LockedFile, ModelEntry, Source
from talesmith.runtime.models.gguf_header import read_info
from talesmith.runtime.models.lockfile import UNRESOLVED

SHA = "ab" * 32


def test_a_hub_entry_becomes_typed_data_and_keeps_its_table():
    table = {
        "format": "gguf",
        "quantization": "Q4_0",
        "source": {"hub": "org/model", "revision": "main"},
        "files": [{"name": "m.gguf", "size": 12, "sha256": SHA}, {"name": "README.md", "size": 3}],
        "format_fields": {"genre": "horror"},
    }
    entry = ModelEntry.from_table("m", table)
    assert entry == ModelEntry(
        format="gguf",
        source=Source(hub="org/model", revision="main", commit=UNRESOLVED),
        files=(LockedFile("m.gguf", 12, SHA), LockedFile("README.md", 3)),
        quantization="Q4_0",
        format_fields={"genre": "horror"},
    )
    assert entry.table is table
    assert entry.from_hub and entry.local_path is None
    assert entry.pinned_sha256("m.gguf") == SHA
    assert entry.pinned_sha256("README.md") is None


def test_a_local_entry_names_its_path():
    entry = ModelEntry.from_table("m", {"format": "gguf", "path": "models/m.gguf"})
    assert entry.source is None and not entry.from_hub
    assert entry.local_path == "models/m.gguf"
    source_only = ModelEntry.from_table("m", {"format": "hf", "source": {"path": "/ckpt"}})
    assert source_only.local_path == "/ckpt"


def test_a_malformed_entry_is_refused_where_it_is_parsed():
    with pytest.raises(LockError) as e:
        ModelEntry.from_table("m", {"format": "gguf", "path": "m.gguf", "files": [{"name": "m.gguf", "size": -1}]})
    assert str(e.value) == (
        "models.lock: model 'm' files #1 size must be a whole number of bytes; "
        "fix the entry or remove it with `talesmith models remove m`"
    )


def test_an_iq4_nl_tensor_is_bounded_by_its_real_block_size(tmp_path):
    import gguf

    path = tmp_path / "iq4.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    # 64 elements of IQ4_NL: 2 blocks of 18 bytes (a 36-byte block size would call the file truncated)
    w.add_tensor("blk.0.w", np.zeros(36, np.uint8), raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_info(path)
    assert info.n_tensors == 1 and info.blocks == frozenset({0})


@pytest.mark.parametrize(
    "table, what",
    [
        (5, "must be a table"),
        ({"path": "m.gguf"}, "format None must be one of hf, gguf, onnx"),
        ({"format": "hf", "source": {"hub": 5}}, "source.hub = 5 must be text"),
        ({"format": "hf", "source": {"hub": "a/b", "path": "/m"}}, "source must have exactly one of hub, path or pypi"),
        (
            {"format": "gguf", "path": "m", "files": [{"name": "m", "size": True}]},
            "files #1 size must be a whole number of bytes",
        ),
        ({"format": "gguf", "path": "m", "files": [{"name": "", "size": 1}]}, "files #1 must be a table with a name"),
        ({"format": "gguf", "path": "m", "files": [{"size": 1}]}, "files #1 must be a table with a name"),
        ({"format": "gguf", "path": "m", "adapters": ["x"]}, "adapters must be an array of tables"),
    ],
)
def test_every_malformed_field_is_one_line_naming_it(table, what):
    with pytest.raises(LockError) as e:
        ModelEntry.from_table("m", table)
    assert str(e.value) == f"models.lock: model 'm' {what}; fix the entry or remove it with `talesmith models remove m`"
