"""`--parallel`: the default per backend, and what is refused."""

import pytest
from fakes import ScriptedBackend

from talesmith.cli.parallel import DEFAULT_PARALLEL, parallel_sequences
from talesmith.runtime.errors import SettingsError


def test_one_sequence_for_backends_without_parallel_decoding():
    assert parallel_sequences(None, ScriptedBackend("x"), tasks=100) == 1
    assert parallel_sequences(1, ScriptedBackend("x"), tasks=100) == 1


@pytest.mark.parametrize(
    "asked,message",
    [
        (0, "--parallel 0 must be at least 1"),
        (
            4,
            "--parallel 4 needs the llama.cpp or ONNX backend; scripted decodes one sequence at a time, use --parallel 1",
        ),
    ],
)
def test_refused(asked, message):
    with pytest.raises(SettingsError) as e:
        parallel_sequences(asked, ScriptedBackend("x"), tasks=100)
    assert str(e.value) == message


def test_the_default_is_documented():
    assert DEFAULT_PARALLEL == 8
