"""`--config FILE.toml` read through its typed model: every shape error is one line naming the file, the key and
the value."""

from pathlib import Path

import pytest

from talesmith.cli.options import read_config
from talesmith.runtime.errors import InputError, SettingsError


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, line",
    [
        ('colour = "red"\n', "unknown key 'colour'; known keys: fields, format, lorebooks, model, preset, sampling"),
        ('lorebooks = ["a.json", 3]\n', 'lorebooks.1 = 3 must be a list of paths, e.g. lorebooks = ["world.json"]'),
        ("lorebooks = 3\n", 'lorebooks = 3 must be a list of paths, e.g. lorebooks = ["world.json"]'),
        (
            "[fields]\ntags = [1, 2]\n",
            "fields.tags = [1, 2] must be text, a number, true/false or a list of texts",
        ),
        (
            "[sampling]\nseed = 1979-05-27\n",
            "sampling.seed = datetime.date(1979, 5, 27) must be text, a number, true/false or a list of texts",
        ),
    ],
)
def test_a_config_of_the_wrong_shape_is_one_line(tmp_path, text, line):
    path = config(tmp_path, text)
    with pytest.raises(InputError) as e:
        read_config(path)
    assert str(e.value) == f"config file {path}: {line}"


def test_an_unknown_sampling_setting_is_a_settings_error(tmp_path):
    path = config(tmp_path, "[sampling]\ntemprature = 0.5\n")
    with pytest.raises(SettingsError) as e:
        read_config(path)
    assert str(e.value) == f"config file {path}: unknown sampling setting 'temprature'"


def test_a_config_reads_as_written(tmp_path):
    path = config(
        tmp_path,
        'model = "tiny"\npreset = "default"\nformat = "story"\nlorebooks = ["w.json"]\n'
        '[fields]\ntitle = "Embers"\ntags = ["a", "b"]\n[sampling]\ntemperature = 0.5\nseed = 3\n',
    )
    c = read_config(path)
    assert (c.model, c.preset, c.format) == ("tiny", "default", "story")
    assert c.fields == {"title": "Embers", "tags": ["a", "b"]} and c.sampling == {"temperature": 0.5, "seed": 3}
    assert c.lorebooks == (tmp_path / "w.json",)
