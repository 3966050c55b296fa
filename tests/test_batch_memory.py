"""A batch's memory does not grow with its output: the writer keeps only what resuming needs (measured with tracemalloc)."""

import tracemalloc

import pytest

from talesmith.runtime.batch_output import OUTPUT_FIELDS, OutputFile


def record(n: int) -> dict:
    return {
        "id": str(n),
        "sample": 0,
        "prompt": f"Story {n} begins:",
        "text": " and then the lighthouse keeper climbed the stairs once more, counting the ships.",
        "seed": n,
        "finish_reason": "length",
        "prompt_tokens": 6,
        "completion_tokens": 64,
        "model": "m",
        "model_sha256": "0" * 64,
        "settings": '{"temperature": 0.8}',
    }


@pytest.mark.parametrize("name,total", [("out.jsonl", 100_000), ("out.csv", 30_000)])
def test_writing_100_000_records_keeps_memory_flat(tmp_path, name, total):
    assert set(record(0)) == set(OUTPUT_FIELDS)
    batch = 1000
    tracemalloc.start()
    try:
        with OutputFile(tmp_path / name) as out:
            for start in range(0, 10_000, batch):
                out.append_many([record(n) for n in range(start, start + batch)])
            after_10k, _ = tracemalloc.get_traced_memory()
            for start in range(10_000, total, batch):
                out.append_many([record(n) for n in range(start, start + batch)])
            after_all, _ = tracemalloc.get_traced_memory()
            assert out.count == total
    finally:
        tracemalloc.stop()
    # Keeping each record, as the writer once did, grew by about 5.5 KB a record (500 MB for 90,000 more);
    # now it is a few bytes in all (1.2 KB over 90,000 JSONL records when this was written).
    assert after_all - after_10k < 64 * 1024
    assert (tmp_path / name).stat().st_size > total * 200


def test_resuming_keeps_ids_and_samples_only(tmp_path):
    with OutputFile(tmp_path / "out.jsonl") as out:
        out.append_many([record(n) for n in range(2000)])
    with OutputFile(tmp_path / "out.jsonl") as out:
        assert not hasattr(out, "records")
        assert out.done == {(str(n), 0) for n in range(2000)} and out.count == 2000
        assert out.models == {"0" * 64}
