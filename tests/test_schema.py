"""The one validation path for files: a typed model in, one line naming the file, the field and the value out."""

from typing import Literal

import pytest
from pydantic import ConfigDict, Field

from talesmith.runtime.errors import InputError, SettingsError
from talesmith.runtime.schema import Model, validate


class Inner(Model):
    speaker: Literal["user", "character"]
    swipes: tuple[str, ...] = Field(min_length=1)
    index: int = Field(0, ge=0)


class Outer(Model):
    name: str = ""
    depth: int = 3
    messages: tuple[Inner, ...] = ()


class Strict(Model):
    model_config = ConfigDict(strict=True, extra="forbid")
    MESSAGES = {"title": '{field} = {value} must be text, e.g. title = "Embers"', "table.*": "{field} {reason}"}

    title: str | None = None
    table: dict[str, str | int | list[str]] = {}


@pytest.mark.parametrize(
    "data, line",
    [
        (
            {"messages": [{"speaker": "narrator", "swipes": ["a"]}]},
            "f.json: messages.0.speaker = 'narrator' must be 'user' or 'character'",
        ),
        ({"messages": [{"speaker": "user", "swipes": []}]}, "f.json: messages.0.swipes = [] must not be empty"),
        ({"messages": [{"speaker": "user", "swipes": "ab"}]}, "f.json: messages.0.swipes = 'ab' must be a list"),
        (
            {"messages": [{"speaker": "user", "swipes": ["a"], "index": -1}]},
            "f.json: messages.0.index = -1 must be at least 0",
        ),
        ({"messages": [{"swipes": ["a"]}]}, "f.json: messages.0.speaker is missing"),
        ({"depth": "deep"}, "f.json: depth = 'deep' must be a whole number"),
        ({"name": ["x"]}, "f.json: name = ['x'] must be text"),
        ({"messages": {"a": 1}}, "f.json: messages = {'a': 1} must be a list"),
        ([1, 2], "f.json: [1, 2] must be an object"),
    ],
)
def test_a_file_of_the_wrong_shape_is_one_line_naming_the_file_the_field_and_the_value(data, line):
    with pytest.raises(InputError) as e:
        validate(Outer, data, "f.json")
    assert str(e.value) == line


def test_numbers_are_read_as_text_where_text_is_wanted_unless_strict():
    assert validate(Outer, {"name": 5, "depth": "4"}, "f.json") == Outer(name="5", depth=4)
    with pytest.raises(InputError, match=r"^c.toml: title = 5 must be text, e\.g\. title = \"Embers\"$"):
        validate(Strict, {"title": 5}, "c.toml")


def test_a_value_that_matches_no_member_of_a_union_is_named_by_its_own_path():
    with pytest.raises(SettingsError, match=r"^c.toml: table.a "):
        validate(Strict, {"table": {"a": {"b": 1}}}, "c.toml", error=SettingsError)
    with pytest.raises(InputError) as e:
        validate(Strict, {"table": {"a": {"b": 1}}}, "c.toml")
    assert str(e.value).count("\n") == 0


def test_unknown_fields_are_named_when_the_shape_forbids_them():
    with pytest.raises(InputError, match=r"^c.toml: unknown field 'colour'$"):
        validate(Strict, {"colour": "red"}, "c.toml")


def test_a_long_value_is_cut_short_in_the_line():
    with pytest.raises(InputError) as e:
        validate(Outer, {"name": ["x" * 500]}, "f.json")
    assert len(str(e.value)) < 160 and str(e.value).endswith("… must be text")
