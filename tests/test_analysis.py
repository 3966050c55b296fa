"""Story-set analysis: normalization, counting, reading story sets and the HTML report, with exact expectations."""

import io

import pytest
from conftest import golden

from talesmith.runtime.analysis.counting import ALL, label_of, opinion_stems, overlap, sentiment_by_genre, top_words
from talesmith.runtime.analysis.html import render
from talesmith.runtime.analysis.records import genre_from_prompt, parse_spec, read_story_set, read_story_sets
from talesmith.runtime.analysis.report import SetReport, genres, to_json
from talesmith.runtime.analysis.text import Normalizer, is_word, last_words, words
from talesmith.runtime.errors import InputError

# --- text ----------------------------------------------------------------------------------------


def test_words_lowercase_letters_only_possessives_and_apostrophes_folded():
    assert words("Don't stop! The King's castle \u2014 O'Brien\u2019s 3 ghosts_42 caf\u00e9.") == [
        "dont",
        "stop",
        "the",
        "king",
        "castle",
        "obrien",
        "ghosts",
        "caf\u00e9",
    ]


def test_lexicon_entries_that_are_plain_words():
    assert [is_word(e) for e in ("happy", "don't", ":)", "no way", "Happy", "b4")] == [
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_last_words_keeps_the_ending():
    assert last_words("one two\nthree   four five", 3) == "three four five"
    assert last_words("short story", 512) == "short story"
    with pytest.raises(ValueError):
        last_words("x", 0)


def test_normalizer_drops_stopwords_and_short_words_and_stems_each_word_once():
    calls = []

    def stem(word):
        calls.append(word)
        return word.rstrip("s")

    normalizer = Normalizer(stem, stopwords={"the", "and"})
    assert normalizer.tokens("The ghosts and a ghost. Ghosts!") == ["ghost", "ghost", "ghost"]
    assert calls == ["ghosts", "ghost"]


# --- counting ------------------------------------------------------------------------------------


def test_sentiment_by_genre_counts_in_order_of_appearance_then_all():
    counts = sentiment_by_genre(
        ["horror", "fairy tale", "horror", "", "fairy tale"],
        ["negative", "positive", "positive", "negative", "positive"],
    )
    assert counts == {
        "horror": {"positive": 1, "negative": 1},
        "fairy tale": {"positive": 2, "negative": 0},
        ALL: {"positive": 3, "negative": 2},
    }
    assert list(counts) == ["horror", "fairy tale", ALL]
    assert sentiment_by_genre([], []) == {ALL: {"positive": 0, "negative": 0}}


@pytest.mark.parametrize(
    "genres_, labels, message",
    [(["a"], [], "1 genres for 0 labels"), (["a"], ["neutral"], "'neutral'"), ([ALL], ["positive"], "named 'all'")],
)
def test_sentiment_by_genre_refuses(genres_, labels, message):
    with pytest.raises(ValueError, match=message):
        sentiment_by_genre(genres_, labels)


def test_label_of_a_compound_score():
    assert [label_of(x) for x in (-0.5, -0.0001, 0.0, 0.7)] == ["negative", "negative", "positive", "positive"]


def test_opinion_stems_split_by_the_sum_of_valences_of_words_sharing_a_stem():
    lexicon = {
        "good": 1.9,
        "goods": -0.5,
        "bad": -2.5,
        "bads": 0.3,
        "even": 1.0,
        "evens": -1.0,
        ":)": 2.0,
        "no way": -1.0,
        "don't": -0.4,
    }
    positive, negative = opinion_stems(lexicon, lambda w: w.rstrip("s"))
    assert positive == {"good"} and negative == {"bad"}


def test_top_words_counts_every_occurrence_ties_alphabetical_and_cut():
    docs = [["ghost", "love", "ghost", "fear"], ["fear", "dark", "love"], ["ghost"], []]
    assert top_words(docs, frozenset({"ghost", "fear", "dark", "love"}), n=3) == [
        ("ghost", 3),
        ("fear", 2),
        ("love", 2),
    ]
    assert top_words(docs, frozenset({"dark", "nothing"})) == [("dark", 1)]


def test_overlap_ignores_counts():
    assert overlap([("a", 5), ("b", 1), ("c", 1)], [("c", 9), ("a", 1), ("z", 1)]) == 2


# --- report --------------------------------------------------------------------------------------


def report(name, sentiment, **kw):
    return SetReport(
        name=name,
        stories=sum(sentiment[ALL].values()),
        sentiment=sentiment,
        top_positive=kw.get("pos", [("love", 3), ("happi", 2)]),
        top_negative=kw.get("neg", [("ghost", 4), ("dark", 1)]),
        topics=kw.get("topics", [["king", "princess"], ["ghost", "hous"]]),
    )


BASE = report("base", {"horror": {"positive": 1, "negative": 2}, ALL: {"positive": 1, "negative": 2}})
TRAINING = report(
    "<b>training</b> & co",
    {
        "fairy tale": {"positive": 2, "negative": 0},
        "horror": {"positive": 0, "negative": 1},
        ALL: {"positive": 2, "negative": 1},
    },
    pos=[("love", 1), ("<script>alert(1)</script>", 1)],
    neg=[("dark", 2)],
    topics=[["[bold]king[/bold]", "princess"], ["ghost", "hous"]],
)


def test_json_shape():
    assert to_json([BASE]) == {
        "sets": [
            {
                "name": "base",
                "stories": 3,
                "sentiment": {"horror": {"positive": 1, "negative": 2}, "all": {"positive": 1, "negative": 2}},
                "top_positive": [["love", 3], ["happi", 2]],
                "top_negative": [["ghost", 4], ["dark", 1]],
                "topics": [["king", "princess"], ["ghost", "hous"]],
            }
        ]
    }


def test_genres_of_several_sets_in_order_of_appearance():
    assert genres([BASE, TRAINING]) == ["horror", "fairy tale", ALL]


def test_html_report_is_self_contained_and_escaped():
    html = render([BASE, TRAINING])
    golden("analysis_report.html", html)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;training&lt;/b&gt; &amp; co" in html
    assert "http" not in html and " src=" not in html and "<link" not in html


# --- reading story sets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("base=out/base.jsonl", ("base", "out/base.jsonl")),
        ("out/base.jsonl", ("base", "out/base.jsonl")),
        ("stories.csv", ("stories", "stories.csv")),
        ("dir/a=b.csv", ("a=b", "dir/a=b.csv")),
        ("=x.csv", ("=x", "=x.csv")),
    ],
)
def test_parse_spec(spec, expected):
    name, path = parse_spec(spec)
    assert (name, str(path)) == expected


@pytest.mark.parametrize(
    "prompt, genre",
    [
        ("<human> write me a horror story\n<assistant>", "horror"),
        ("### Human: Write me a fairy tale \n ### Assistant:", "fairy tale"),
        ("<human> write me a mystery story\n<assistant>It was", "mystery"),
        ("Write me a horror story", "horror"),
        ("Once upon a time", ""),
    ],
)
def test_genre_from_prompt(prompt, genre):
    assert genre_from_prompt(prompt) == genre


TRAINING_CSV = (
    "prompt,response,label\n"
    'Write me a horror story,"The ghost, in the dark house.\nIt screamed.",horror\n'
    "Write me a fairy tale,A happy princess.,fairy tale\n"
)


def test_training_csv_reads_response_and_label(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(TRAINING_CSV, encoding="utf-8")
    s = read_story_set("training", path)
    assert s.texts == ("The ghost, in the dark house.\nIt screamed.", "A happy princess.")
    assert s.genres == ("horror", "fairy tale")


def test_batch_output_without_a_genre_column_takes_the_prompts_genre(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(
        '{"id": "1", "prompt": "<human> write me a horror story\\n<assistant>", "text": "Boo."}\n\n'
        '{"id": "2", "prompt": "<human> write me a fairy tale\\n<assistant>", "text": null}\n'
        '{"id": "3", "prompt": "Once upon a time", "text": 42}\n',
        encoding="utf-8",
    )
    s = read_story_set("base", path)
    assert s.texts == ("Boo.",) and s.genres == ("horror",)  # a story that is not text is left out, named
    assert s.notes == (
        f"{path} line 3: 'text' is null, not a story; left out",
        f"{path} line 4: 'text' is a number (42), not a story; left out",
    )


def test_big_csv_fields_byte_order_marks_and_line_separators_inside_stories(tmp_path):
    big = "ghost " * 40_000
    (tmp_path / "big.csv").write_text("\ufefftext,genre\n" + f'"{big}",horror\n', encoding="utf-8")
    assert read_story_set("x", tmp_path / "big.csv").texts == (big,)
    (tmp_path / "sep.jsonl").write_text(
        '{"text": "one\u2028two\u0085three\\n", "genre": "horror"}\r\n', encoding="utf-8"
    )
    assert read_story_set("x", tmp_path / "sep.jsonl").texts == ("one\u2028two\u0085three\n",)


def test_named_columns(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("story,kind,genre\nA tale.,horror,ignored\n", encoding="utf-8")
    s = read_story_set("x", path, text_column="story", genre_column="kind")
    assert s.texts == ("A tale.",) and s.genres == ("horror",)


def test_no_genre_anywhere(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("text\nA tale.\n", encoding="utf-8")
    assert read_story_set("x", path).genres == ("",)


@pytest.mark.parametrize(
    "name, content, kw, message",
    [
        ("a.csv", "story\nx\n", {}, "has no 'text' or 'response' column (columns: story); name the story column"),
        (
            "a.csv",
            "text\nx\n",
            {"genre_column": "genre"},
            "has no column 'genre' (columns: text); check --genre-column",
        ),
        ("a.csv", "text,genre\nx,all\n", {}, "has a genre named 'all'"),
        ("a.csv", "text\n", {}, "has no stories"),
        ("a.jsonl", '{"text": "x"}\nnot json\n', {}, "line 2 is not JSON"),
        ("a.jsonl", '["x"]\n', {}, "line 1 is not a JSON object"),
        ("a.txt", "x", {}, "unknown file type .txt"),
    ],
)
def test_bad_story_sets_name_the_problem(tmp_path, name, content, kw, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as e:
        read_story_set("x", path, **kw)
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_story_set("x", tmp_path / "none.csv")
    (tmp_path / "latin.csv").write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(InputError, match="must be UTF-8"):
        read_story_set("x", tmp_path / "latin.csv")


def test_set_names_must_differ(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "out.csv").write_text("text\nx\n", encoding="utf-8")
    with pytest.raises(InputError, match="two story sets are named 'out'; name each one: NAME=PATH"):
        read_story_sets([str(tmp_path / "a/out.csv"), str(tmp_path / "b/out.csv")])
    sets = read_story_sets([f"a={tmp_path / 'a/out.csv'}", str(tmp_path / "b/out.csv")])
    assert [s.name for s in sets] == ["a", "out"]


def test_terminal_tables_are_plain_text_of_the_data():
    from rich.console import Console

    from talesmith.cli.analyze import sentiment_table, topics_table, words_table

    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    for table in (
        sentiment_table([BASE, TRAINING]),
        words_table([BASE, TRAINING], "positive"),
        words_table([BASE, TRAINING], "negative"),
        topics_table(TRAINING),
    ):
        console.print(table)
    text = console.export_text()
    golden("analysis_tables.txt", text)
    assert "[bold]king[/bold] princess" in text and "<script>alert(1)</script> 1" in text
