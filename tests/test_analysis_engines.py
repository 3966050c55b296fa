"""Story-set analysis with its libraries: VADER, the Snowball stemmer, scikit-learn's stopwords and LDA, and a
local transformers sentiment model, on small hand-written sets with exact expectations."""

from pathlib import Path

import pytest

pytest.importorskip("vaderSentiment")
pytest.importorskip("sklearn")
pytest.importorskip("snowballstemmer")

from talesmith.runtime.analysis import engines  # noqa: E402
from talesmith.runtime.analysis.records import StorySet  # noqa: E402
from talesmith.runtime.analysis.run import analyze_set, toolkit  # noqa: E402
from talesmith.runtime.errors import ModelError  # noqa: E402

STORIES = (
    "The ghost screamed in the dark house. Death waited on the stairs, and the ghost laughed.",
    "A dead man stood by the grave. The night was cold and the ghost was afraid.",
    "The beautiful princess smiled at the king. They lived happily and loved the kingdom.",
    "A happy prince found a golden gift. The princess was happy, and the king laughed with joy.",
)
GENRES = ("horror", "horror", "fairy tale", "fairy tale")


@pytest.fixture(scope="module")
def kit():
    return toolkit()


def test_stemmer_and_stopwords_need_no_data():
    stem = engines.english_stemmer()
    assert [stem(w) for w in ("beautiful", "womanizer", "princesses", "ghosts", "happiness")] == [
        "beauti",
        "woman",
        "princess",
        "ghost",
        "happi",
    ]
    assert {"the", "and", "was"} <= engines.english_stopwords()


def test_opinion_words_are_vaders_lexicon_stemmed_like_the_stories(kit):
    assert {"happi", "laugh", "beauti", "love"} <= kit.positive
    assert {"ghost", "dead", "scream", "grave"} <= kit.negative
    assert not kit.positive & kit.negative
    assert kit.normalizer.tokens("The ghosts were screaming; she laughed happily.") == [
        "ghost",
        "scream",
        "laugh",
        "happili",
    ]


def test_a_hand_written_set(kit):
    report = analyze_set(StorySet("hand", STORIES, GENRES), kit)
    assert report.stories == 4
    assert report.sentiment == {
        "horror": {"positive": 0, "negative": 2},
        "fairy tale": {"positive": 2, "negative": 0},
        "all": {"positive": 2, "negative": 2},
    }
    assert report.top_positive == [
        ("happi", 2),
        ("laugh", 2),
        ("beauti", 1),
        ("gift", 1),
        ("happili", 1),
        ("joy", 1),
        ("live", 1),
        ("love", 1),
        ("smile", 1),
    ]
    assert report.top_negative == [("ghost", 3), ("dark", 1), ("dead", 1), ("death", 1), ("grave", 1), ("scream", 1)]
    vocabulary = {t for s in STORIES for t in kit.normalizer.tokens(s)}
    assert len(vocabulary) == 28
    assert len(report.topics) == 5
    for topic in report.topics:
        assert len(topic) == 20 and len(set(topic)) == 20 and set(topic) <= vocabulary


def test_the_same_input_gives_the_same_report(kit):
    story_set = StorySet("hand", STORIES * 3, GENRES * 3)
    assert analyze_set(story_set, kit) == analyze_set(story_set, toolkit())


def test_top_words_stop_at_30(kit):
    lexicon = sorted(w for w in engines.VaderScorer().lexicon if w.isalpha())
    report = analyze_set(StorySet("many", (" ".join(lexicon[:2000]),), ("",)), kit)
    assert len(report.top_positive) == 30 and len(report.top_negative) == 30
    assert all(count >= 1 for _, count in report.top_positive + report.top_negative)


def test_small_vocabulary_and_empty_sets(kit):
    report = analyze_set(StorySet("tiny", ("Ghost ghost house.", "The house."), ("horror", "horror")), kit)
    assert [sorted(t) for t in report.topics] == [["ghost", "hous"]] * 5
    empty = analyze_set(StorySet("empty", ("", "The and of."), ("", "")), kit)
    assert empty.topics == [] and empty.top_positive == [] and empty.top_negative == []
    assert empty.sentiment == {"all": {"positive": 2, "negative": 0}}


def test_sentiment_is_judged_on_the_last_512_words(kit):
    story = "terrible horrible awful death. " * 250 + "the happy sunny day. " * 128
    assert kit.scorer.labels([story]) == ["negative"]
    assert analyze_set(StorySet("ending", (story,), ("horror",)), kit).sentiment["horror"] == {
        "positive": 1,
        "negative": 0,
    }


# --- a local transformers sentiment model --------------------------------------------------------

WORDS = ["ghost", "dark", "happy", "king", "princess", "night", "grave", "joy", "house", "moon", "love", "fear"]


def make_classifier(folder: Path, labels=("NEGATIVE", "POSITIVE"), seed=3) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        initializer_range=1.0,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def direct_label(folder: Path, text: str) -> str:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits
    return model.config.id2label[int(logits.argmax())].lower()


def test_a_local_model_labels_each_story_by_its_ending(tmp_path):
    folder = make_classifier(tmp_path / "clf")
    scorer = engines.TransformersScorer(folder)
    import random

    rng = random.Random(0)
    endings = [[rng.choice(WORDS) for _ in range(14)] for _ in range(12)]
    stories = [" ".join(["fear"] * 30 + e) for e in endings] + [" ".join(["joy"] * 40 + e) for e in endings]
    labels = scorer.labels(stories)
    expected = [direct_label(folder, " ".join(e)) for e in endings]
    assert labels == expected * 2
    assert set(expected) == {"positive", "negative"}


def test_a_local_model_whose_labels_say_nothing_is_refused(tmp_path):
    folder = make_classifier(tmp_path / "clf", labels=("LABEL_0", "LABEL_1"))
    with pytest.raises(ModelError, match="label 'LABEL_0' that is neither positive nor negative"):
        engines.TransformersScorer(folder)
    with pytest.raises(ModelError, match="is not a model folder"):
        engines.TransformersScorer(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="is not a model folder"):
        engines.TransformersScorer(tmp_path / "empty")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="cannot be loaded"):
        engines.TransformersScorer(folder)
    (folder / "model.safetensors").unlink()  # no weights at all
    with pytest.raises(ModelError, match="cannot be loaded"):
        engines.TransformersScorer(folder)
