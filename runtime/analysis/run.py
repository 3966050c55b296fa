"""One story set to its report: sentiment on each story's ending, opinion words and topics over its tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from talesmith.runtime.analysis.counting import opinion_stems, sentiment_by_genre, top_words
from talesmith.runtime.analysis.records import StorySet
from talesmith.runtime.analysis.report import SetReport
from talesmith.runtime.analysis.text import Normalizer, last_words

LAST_WORDS = 512
TOP_WORDS = 30
TOPICS, TOPIC_WORDS = 5, 20


class Scorer(Protocol):
    def labels(self, texts: Sequence[str]) -> list[str]:
        """ "positive" or "negative" for each text."""
        ...


@dataclass(frozen=True)
class Toolkit:
    normalizer: Normalizer
    positive: frozenset[str]
    negative: frozenset[str]
    scorer: Scorer
    topics: Callable[[Sequence[Sequence[str]]], list[list[str]]]


def toolkit(*, sentiment_model: Path | None = None, seed: int = 0) -> Toolkit:
    """VADER's lexicon split by polarity, the Snowball stemmer, scikit-learn's stopwords and LDA; VADER
    labels the stories unless a local transformers model is given."""
    from talesmith.runtime.analysis import engines

    engines.check_extra()
    vader = engines.VaderScorer()
    normalizer = Normalizer(engines.english_stemmer(), stopwords=engines.english_stopwords())
    positive, negative = opinion_stems(vader.lexicon, normalizer.stem)
    scorer = engines.TransformersScorer(sentiment_model) if sentiment_model else vader

    def topics(documents: Sequence[Sequence[str]]) -> list[list[str]]:
        return engines.lda_topics(documents, topics=TOPICS, words=TOPIC_WORDS, seed=seed)

    return Toolkit(normalizer, positive, negative, scorer, topics)


def analyze_set(story_set: StorySet, kit: Toolkit, *, last: int = LAST_WORDS, top: int = TOP_WORDS) -> SetReport:
    labels = kit.scorer.labels([last_words(t, last) for t in story_set.texts])
    documents = [kit.normalizer.tokens(t) for t in story_set.texts]
    return SetReport(
        name=story_set.name,
        stories=len(story_set.texts),
        sentiment=sentiment_by_genre(story_set.genres, labels),
        top_positive=top_words(documents, kit.positive, n=top),
        top_negative=top_words(documents, kit.negative, n=top),
        topics=kit.topics(documents),
    )
