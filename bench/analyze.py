"""Story-set analysis on generated-looking stories: seconds for `talesmith analyze`'s whole pass over one set.

10,000 stories of 200 words (two genres, words drawn with a fixed seed from story vocabulary and VADER's
lexicon), written to a JSONL batch output and analyzed as `talesmith analyze` does: read, VADER on each
story's last 512 words, normalize, top 30 positive and negative words, 5 LDA topics. In the same run,
three references: the VADER pass alone (the part no normalization can speed up), a naive tokenizing
loop that stems every word it meets instead of each distinct word once, and scikit-learn's batch LDA
(analyze uses the online method).

    python bench/analyze.py [--stories 10000] [--words 200]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from talesmith.runtime.analysis import engines
from talesmith.runtime.analysis.counting import top_words
from talesmith.runtime.analysis.records import read_story_set
from talesmith.runtime.analysis.run import TOPIC_WORDS, TOPICS, analyze_set, toolkit
from talesmith.runtime.analysis.text import last_words, words

COMMON = (
    "the and a of to he she it was in that his her with as had for on at by they from but not you "
    "all were when one there said what up out into then so no could would them their about over"
).split()
STORY = {
    "horror": "ghost house dark night moon grave blood shadow door cold dead scream fear old man woods "
    "candle window stair whisper corpse cellar storm crypt".split(),
    "fairy tale": "king princess prince queen castle forest beautiful little golden wish fairy dragon "
    "kingdom wood magic gift daughter son happy ever after".split(),
}


def stories(n: int, length: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    lexicon = sorted(w for w in engines.VaderScorer().lexicon if w.isalpha())
    out = []
    for i in range(n):
        genre = "horror" if i % 2 == 0 else "fairy tale"
        pool = (COMMON, STORY[genre], lexicon)
        text = []
        for j in range(length):
            word = rng.choice(rng.choices(pool, weights=(6, 3, 1))[0])
            text.append(word.capitalize() + "." if j % 15 == 14 else word)
        out.append({"id": str(i), "genre": genre, "text": " ".join(text)})
    return out


def naive_tokens(texts: list[str]) -> list[list[str]]:
    stem, stop = engines.english_stemmer(), engines.english_stopwords()
    return [[stem(w) for w in words(t) if len(w) >= 2 and w not in stop] for t in texts]


def batch_lda(docs: list[list[str]]) -> None:
    from sklearn.decomposition import LatentDirichletAllocation
    from sklearn.feature_extraction.text import CountVectorizer

    counts = CountVectorizer(analyzer=lambda d: d).fit_transform(docs)
    LatentDirichletAllocation(n_components=TOPICS, learning_method="batch", random_state=0).fit(counts)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stories.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in stories(args.stories, args.words)), encoding="utf-8")
        kit, setup = timed(toolkit)
        story_set, read = timed(lambda: read_story_set("bench", path))
        report, analyze = timed(lambda: analyze_set(story_set, kit))
        _, vader = timed(lambda: kit.scorer.labels([last_words(t) for t in story_set.texts]))
        docs, normalize = timed(lambda: [kit.normalizer.tokens(t) for t in story_set.texts])
        _, count = timed(lambda: (top_words(docs, kit.positive), top_words(docs, kit.negative)))
        _, lda = timed(lambda: engines.lda_topics(docs, topics=TOPICS, words=TOPIC_WORDS))
        naive, naive_seconds = timed(lambda: naive_tokens(list(story_set.texts)))
        _, lda_batch = timed(lambda: batch_lda(docs))
    assert naive == docs
    print(
        json.dumps(
            {
                "stories": args.stories,
                "words_per_story": args.words,
                "seconds": round(read + analyze, 3),
                "setup_seconds": setup,
                "phases": {"read": read, "vader": vader, "normalize": normalize, "top_words": count, "lda": lda},
                "baseline": {
                    "vader_only_seconds": vader,
                    "naive_normalize_seconds": naive_seconds,
                    "batch_lda_seconds": lda_batch,
                },
                "ratios": {
                    "total_over_vader_only": round((read + analyze) / vader, 2),
                    "naive_over_cached_normalize": round(naive_seconds / normalize, 2),
                    "batch_lda_over_online_lda": round(lda_batch / lda, 2),
                },
                "sentiment": report.sentiment,
                "topics": [" ".join(t[:6]) for t in report.topics],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
