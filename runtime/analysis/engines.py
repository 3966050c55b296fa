"""The parts of story-set analysis that need the analyze extra: VADER, scikit-learn (stopwords, LDA), the
Snowball stemmer, and transformers for a local sentiment model. Each library is imported only when used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from talesmith.runtime.analysis.counting import NEGATIVE, POSITIVE, label_of
from talesmith.runtime.errors import ModelError, TalesmithError

EXTRA = "pip install 'talesmith[analyze]'"


def missing_extra(error: ImportError) -> TalesmithError:
    return TalesmithError(f"talesmith analyze needs the analyze extra ({error.name or error} is missing): {EXTRA}")


def check_extra() -> None:
    """Raise one clear error when the analyze extra is not installed."""
    try:
        import sklearn  # noqa: F401
        import snowballstemmer  # noqa: F401
        import vaderSentiment.vaderSentiment  # noqa: F401
    except ImportError as e:
        raise missing_extra(e) from None


def english_stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def english_stemmer() -> Callable[[str], str]:
    """The Snowball (Porter 2) English stemmer: beautiful -> beauti, womanizer -> woman. No data to download."""
    import snowballstemmer

    return snowballstemmer.stemmer("english").stemWord


class VaderScorer:
    """Story labels from VADER's compound score; its lexicon ships inside the package."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    @property
    def lexicon(self) -> dict[str, float]:
        return dict(self._analyzer.lexicon)

    def labels(self, texts: Sequence[str]) -> list[str]:
        return [label_of(self._analyzer.polarity_scores(t)["compound"]) for t in texts]


def _polarity(path: Path, label: str) -> str:
    lowered = label.lower()
    if "neg" in lowered:
        return NEGATIVE
    if "pos" in lowered:
        return POSITIVE
    raise ModelError(
        f"sentiment model {path} has a label {label!r} that is neither positive nor negative; "
        f"use a model whose labels are POSITIVE and NEGATIVE"
    )


class TransformersScorer:
    """Story labels from a local Hugging Face text-classification model, through a transformers pipeline.

    Texts longer than the model's context keep their end (the tokenizer truncates on the left).
    """

    def __init__(self, path: Path, *, batch_size: int = 16):
        if not (path / "config.json").is_file():
            raise ModelError(
                f"sentiment model {path} is not a model folder (no config.json); pass a local "
                f"Hugging Face text-classification model (config.json, weights and tokenizer)"
            )
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
        except ImportError as e:
            raise TalesmithError(
                f"--sentiment-model needs transformers ({e.name} is missing): pip install 'talesmith[convert]'"
            ) from None
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:  # a loader fails in many ways on a foreign or broken folder: one line for all
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"sentiment model {path} cannot be loaded ({reason}); pass a local text-classification model folder"
            ) from None
        self._labels = {label: _polarity(path, label) for label in model.config.id2label.values()}
        tokenizer.truncation_side = "left"
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and tokenizer.model_max_length > limit:
            tokenizer.model_max_length = limit
        self._pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
        self._batch_size = batch_size

    def labels(self, texts: Sequence[str]) -> list[str]:
        results = self._pipe(list(texts), batch_size=self._batch_size, truncation=True)
        return [self._labels[r["label"]] for r in results]


def _tokens(document: Sequence[str]) -> Sequence[str]:
    return document


def lda_topics(
    documents: Sequence[Sequence[str]], *, topics: int = 5, words: int = 20, seed: int = 0, max_iter: int = 10
) -> list[list[str]]:
    """The top `words` tokens of each of `topics` LDA topics (scikit-learn, online variational Bayes: mini-batches
    of 128 stories, about twice as fast as the batch method on 10,000 stories).

    Ties keep the vocabulary's alphabetical order. A set without any token has no topics.
    """
    import numpy as np
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    if not any(documents):
        return []
    vectorizer = CountVectorizer(analyzer=_tokens)
    counts = vectorizer.fit_transform(documents)
    vocabulary = vectorizer.get_feature_names_out()
    lda = LatentDirichletAllocation(n_components=topics, learning_method="online", max_iter=max_iter, random_state=seed)
    lda.fit(counts)
    return [[str(vocabulary[i]) for i in np.argsort(-weights, kind="stable")[:words]] for weights in lda.components_]
