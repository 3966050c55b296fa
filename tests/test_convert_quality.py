"""The quantization quality report: KL divergence, top-1 agreement and perplexity against the unquantized file."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from talesmith.convert.quality import Tally, log_softmax, windows
from talesmith.runtime.errors import ConversionError


def test_tally_of_identical_distributions_is_zero_kl_full_agreement():
    logp = log_softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]))
    tally = Tally()
    tally.add(logp, logp, np.array([2, 0]))
    q = tally.result()
    assert q.kl_divergence == pytest.approx(0.0, abs=1e-12) and q.top1_agreement == 1.0 and q.tokens == 2
    assert q.perplexity == pytest.approx(math.exp(-(logp[0, 2] + logp[1, 0]) / 2))
    assert q.perplexity == q.reference_perplexity


def test_tally_numbers_by_hand():
    ref = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    got = np.log(np.array([[0.25, 0.75], [0.8, 0.2]]))
    tally = Tally()
    tally.add(ref, got, np.array([1, 0]))
    q = tally.result()
    kl = (
        0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0.9 * math.log(0.9 / 0.8) + 0.1 * math.log(0.1 / 0.2)
    ) / 2
    assert q.kl_divergence == pytest.approx(kl)
    assert q.top1_agreement == 0.5  # the first row's argmax ties at index 0 for ref, 1 for got
    assert q.perplexity == pytest.approx(math.exp(-(math.log(0.75) + math.log(0.8)) / 2))
    assert q.reference_perplexity == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.9)) / 2))


def test_windows_need_two_tokens_each():
    assert windows(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5]]
    assert windows([1], 3) == []
    assert windows(list(range(5)), 3, bos=9) == [[9, 0, 1], [9, 2, 3], [9, 4]]
    with pytest.raises(ConversionError, match="too short"):
        Tally().result()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    pytest.importorskip("torch")
    from tiny_models import make_model

    from talesmith.convert.pipeline import ConvertRequest, convert

    root = tmp_path_factory.mktemp("quality")
    folder = make_model("llama", root / "tiny-llama")
    lock = root / "models.lock"
    outputs = convert(ConvertRequest(str(folder), root / "out", quants=("Q8_0", "Q4_0")), lock=lock)
    return outputs, lock


def test_every_quantization_is_measured_and_recorded(converted):
    from talesmith.runtime.models.resolve import read_lock

    outputs, lock = converted
    by_kind = {o.kind: o for o in outputs}
    assert by_kind["F16"].quality is None
    q8, q4 = by_kind["Q8_0"].quality, by_kind["Q4_0"].quality
    assert 0 <= q8.kl_divergence < q4.kl_divergence and q8.top1_agreement >= q4.top1_agreement
    assert q8.tokens > 100 and q8.reference_perplexity == pytest.approx(q4.reference_perplexity)
    entry = read_lock(lock)["tiny-llama-q4_0"]
    assert entry["quality"]["reference"] == "tiny-llama-f16" and entry["quality"]["eval_text"] == "bundled"
    assert entry["quality"]["kl_divergence"] == pytest.approx(q4.kl_divergence, rel=1e-4)


def test_models_quality_measures_again_on_another_text(converted, tmp_path):
    outputs, lock = converted
    text = tmp_path / "eval.txt"
    text.write_text("The storm had raged for three days when the knock came at the lighthouse door. " * 20)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "models",
            "quality",
            "tiny-llama-q4_0",
            "--eval-text",
            text,
            "--lock",
            lock,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    assert "tiny-llama-q4_0" in result.stdout and "tiny-llama-f16" in result.stdout
    from talesmith.runtime.models.resolve import read_lock

    assert read_lock(lock)["tiny-llama-q4_0"]["quality"]["eval_text"] == str(text.resolve())
    same = subprocess.run(
        [sys.executable, "-m", "talesmith.cli.main", "models", "quality", "tiny-llama-f16", "--lock", lock],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert same.returncode == 2 and "Traceback" not in same.stderr
    assert "no unquantized GGUF of tiny-llama-f16's source" in same.stderr or "unquantized file itself" in same.stderr


def test_an_unreadable_eval_text_is_one_line(tmp_path):
    from talesmith.convert.evaltext import TEXT, eval_text

    assert eval_text(None) == (TEXT, "bundled")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConversionError, match=r"--eval-text .*bad.txt could not be read .*; pass a UTF-8 text file"):
        eval_text(tmp_path / "bad.txt")


def test_a_conversion_measures_a_sample_and_skips_large_models_unless_asked():
    from talesmith.convert.quality import AUTO_LIMIT, wanted

    assert [wanted(None, AUTO_LIMIT), wanted(None, AUTO_LIMIT + 1)] == [True, False]
    assert [wanted(True, 10 * AUTO_LIMIT), wanted(False, 0)] == [True, False]


def test_the_summary_says_how_the_quality_was_measured_or_how_to_measure_it(tmp_path):
    from talesmith.cli.convert import quality_caption
    from talesmith.convert.pipeline import Output
    from talesmith.convert.quality import Quality

    def output(kind: str, quality=None) -> Output:
        return Output(tmp_path / f"Story-{kind}.gguf", kind, 1, 16.0, 0.1, "0" * 64, quality=quality)

    q = Quality(0.01, 0.95, 12.5, 12.0, 127)
    measured = [output("F16"), output("Q8_0", q), output("Q4_K_M", q)]
    assert quality_caption(measured, quality=None) == (
        "KL divergence and top-1 agreement against F16, perplexity on a sample of 127 tokens (F16: 12.00); "
        "`talesmith models quality story-q8_0` measures on up to 1024 tokens, --eval-text FILE on your own text"
    )
    skipped = [output("F16"), output("Q4_K_M")]
    assert quality_caption(skipped, quality=None) == (
        "quality not measured (F16 is over 2 GiB; --quality measures it while converting); "
        "`talesmith models quality story-q4_k_m` measures a quantization"
    )
    assert quality_caption(skipped, quality=False) == (
        "quality not measured (--no-quality); `talesmith models quality story-q4_k_m` measures a quantization"
    )
    assert quality_caption([output("F16")], quality=None) is None


def test_full_agreement_shows_as_100_percent():
    from talesmith.cli.convert import percent

    assert [percent(1.0), percent(0.99921), percent(0.5)] == ["100%", "99.9%", "50.0%"]
