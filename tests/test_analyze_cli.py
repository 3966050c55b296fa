"""`talesmith analyze` as a user runs it: tables, --json, --html, one-line errors, and the whole loop from a
prompts file through `talesmith batch` on the bundled model."""

import json
import subprocess
import sys

import pytest
from test_cli import one_line_error, talesmith

pytest.importorskip("vaderSentiment")
pytest.importorskip("sklearn")
pytest.importorskip("snowballstemmer")

TRAINING = (
    "prompt,response,label\n"
    'Write me a horror story,"The ghost screamed in the dark house. Death waited, and the ghost laughed.",horror\n'
    'Write me a horror story,"A dead man stood by the grave. The night was cold and the ghost was afraid.",horror\n'
    'Write me a fairy tale,"The beautiful princess smiled at the king. They lived happily and loved it.",fairy tale\n'
)
GENERATED = [
    {
        "id": "1",
        "sample": 0,
        "prompt": "<human> write me a horror story\n<assistant>",
        "text": "The ghost came back at night. Blood on the [red]stairs[/red], and a scream.",
    },
    {
        "id": "2",
        "sample": 0,
        "prompt": "<human> write me a fairy tale\n<assistant>",
        "text": "A happy prince found a golden gift. The princess was happy, and the king laughed with joy.",
    },
]


@pytest.fixture
def sets(tmp_path):
    training = tmp_path / "data.csv"
    training.write_text(TRAINING, encoding="utf-8")
    generated = tmp_path / "base.jsonl"
    generated.write_text("".join(json.dumps(r) + "\n" for r in GENERATED), encoding="utf-8")
    return training, generated


def test_json_is_one_object_with_every_set_in_order_and_the_same_each_time(sets):
    training, generated = sets
    first = talesmith("analyze", f"base={generated}", f"training={training}", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert [s["name"] for s in result["sets"]] == ["base", "training"]
    base, train = result["sets"]
    assert set(base) == {"name", "stories", "sentiment", "top_positive", "top_negative", "topics"}
    assert base["stories"] == 2 and train["stories"] == 3
    assert base["sentiment"] == {
        "horror": {"positive": 0, "negative": 1},
        "fairy tale": {"positive": 1, "negative": 0},
        "all": {"positive": 1, "negative": 1},
    }
    assert train["sentiment"] == {
        "horror": {"positive": 0, "negative": 2},
        "fairy tale": {"positive": 1, "negative": 0},
        "all": {"positive": 1, "negative": 2},
    }
    assert base["top_positive"] == [["happi", 2], ["gift", 1], ["joy", 1], ["laugh", 1]]
    assert base["top_negative"] == [["ghost", 1], ["scream", 1]]  # "blood" is not in the lexicon
    assert train["top_negative"] == [["ghost", 3], ["dark", 1], ["dead", 1], ["death", 1], ["grave", 1], ["scream", 1]]
    assert [len(t) for t in train["topics"]] == [20] * 5
    again = talesmith("analyze", f"base={generated}", f"training={training}", "--json")
    assert again.stdout == first.stdout


def test_tables_show_each_set_with_its_text_as_plain_text(sets, tmp_path):
    training, generated = sets
    result = talesmith("analyze", f"[bold]base={generated}", training)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for fragment in (
        "Sentiment by genre",
        "Top positive words",
        "Top negative words",
        "Topics: [bold]base",
        "Topics: data",
        "fairy tale",
        "shared",
        "[bold]base",
        "stair",
    ):
        assert fragment in out, fragment


def test_html_report(sets, tmp_path):
    training, generated = sets
    report = tmp_path / "report" / "r.html"
    report.parent.mkdir()
    result = talesmith("analyze", f"<i>base={generated}", training, "--html", report)
    assert result.returncode == 0, result.stderr
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "&lt;i&gt;base" in html and "<i>" not in html
    assert 'class="track"' in html and "http" not in html
    assert "Sentiment by genre" in result.stdout  # the tables are still shown


def test_without_the_extra_it_names_the_extra_in_one_line(sets):
    training, _ = sets
    code = (
        "import sys; sys.modules['sklearn'] = None; from talesmith.cli.main import main; "
        f"sys.argv = ['talesmith', 'analyze', {str(training)!r}]; main()"
    )
    one_line_error(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True),
        "needs the analyze extra (sklearn is missing)",
        "pip install 'talesmith[analyze]'",
    )


def test_bad_arguments_are_one_line_errors(sets, tmp_path):
    training, generated = sets
    one_line_error(talesmith("analyze", tmp_path / "none.csv"), "none.csv does not exist")
    one_line_error(talesmith("analyze", training, f"data={generated}"), "two story sets are named 'data'")
    one_line_error(talesmith("analyze", training, "--genre-column", "kind"), "has no column 'kind'")
    one_line_error(talesmith("analyze", training, "--sentiment-model", tmp_path), "is not a model folder")
    one_line_error(talesmith("analyze", training, "--html", training), "give a path ending in .html")
    assert training.read_text(encoding="utf-8") == TRAINING
    (tmp_path / "taken.html").mkdir()
    one_line_error(talesmith("analyze", training, "--html", tmp_path / "taken.html"), "it is a folder")
    one_line_error(talesmith("analyze", training, "--html", training / "r.html"), "cannot write the report")


@pytest.mark.model
def test_the_whole_loop_prompts_batch_analyze(sets, tmp_path):
    training, _ = sets
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("id,genre\nh,horror\nf,fairy tale\n", encoding="utf-8")
    base = tmp_path / "stories.jsonl"
    made = talesmith(
        "batch", prompts, "-o", base, "--format", "genre", "-n", "2", "--max-new-tokens", "16", "--seed", "1"
    )
    assert made.returncode == 0, made.stderr
    result = talesmith("analyze", f"base={base}", f"training={training}", "--json")
    assert result.returncode == 0, result.stderr
    base_set, train_set = json.loads(result.stdout)["sets"]
    assert base_set["name"] == "base" and base_set["stories"] == 4
    assert list(base_set["sentiment"]) == ["horror", "fairy tale", "all"]
    for genre in ("horror", "fairy tale"):
        assert sum(base_set["sentiment"][genre].values()) == 2
    assert sum(base_set["sentiment"]["all"].values()) == 4
    assert train_set["stories"] == 3
    assert result.stdout == talesmith("analyze", f"base={base}", f"training={training}", "--json").stdout
