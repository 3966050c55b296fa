"""A self-contained HTML report of analyzed story sets: inline CSS bar charts, no external assets, every
value from the data escaped. Pure: reports in, text out."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from talesmith.runtime.analysis.counting import NEGATIVE, POSITIVE, overlap
from talesmith.runtime.analysis.report import SetReport, genres

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}
.track{display:flex;width:24em;height:1em;background:#eee}.pos{background:#3a7d44}.neg{background:#b03a2e}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _bar(counts: dict[str, int] | None) -> str:
    """A bar of the positive and negative shares of a set's stories of one genre, with the counts."""
    if counts is None:
        return "<td></td><td>no stories</td>"
    total = counts[POSITIVE] + counts[NEGATIVE]
    share = 100 * counts[POSITIVE] / total if total else 0.0
    spans = (
        (
            f'<span class="pos" style="width:{share:.1f}%"></span>'
            f'<span class="neg" style="width:{100 - share:.1f}%"></span>'
        )
        if total
        else ""
    )
    return (
        f'<td><div class="track">{spans}</div></td>'
        f"<td>{counts[POSITIVE]} positive, {counts[NEGATIVE]} negative"
        + (f" ({share:.0f}% positive)" if total else "")
        + "</td>"
    )


def _bars(reports: Sequence[SetReport], genre: str) -> str:
    """One bar per set: the shares of its stories of `genre` that are positive and negative."""
    rows = "\n".join(f"<tr><td>{_e(r.name)}</td>{_bar(r.sentiment.get(genre))}</tr>" for r in reports)
    return f"<table>\n{rows}\n</table>"


def _sentiment(reports: Sequence[SetReport]) -> str:
    legend = '<p class="legend"><span class="pos"></span>positive<span class="neg"></span>negative</p>'
    sections = [f"<h3>{_e(g)}</h3>\n{_bars(reports, g)}" for g in genres(reports)]
    return "<h2>Sentiment by genre</h2>\n" + legend + "\n" + "\n".join(sections)


def _words(reports: Sequence[SetReport], kind: str) -> str:
    lists = [r.top_positive if kind == POSITIVE else r.top_negative for r in reports]
    head = "".join(f"<th>{_e(r.name)}</th>" for r in reports)
    rows = []
    for rank in range(max([len(words) for words in lists] + [0])):
        cells = "".join(
            f"<td>{_e(words[rank][0])} ({words[rank][1]})</td>" if rank < len(words) else "<td></td>" for words in lists
        )
        rows.append(f'<tr><td class="n">{rank + 1}</td>{cells}</tr>')
    shared = "".join(f"<td>{overlap(words, lists[0])} of {len(words)}</td>" for words in lists)
    rows.append(f"<tr><th>shared with {_e(reports[0].name)}</th>{shared}</tr>")
    return f"<h2>Top {kind} words</h2>\n<table><tr><th>#</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _topics(report: SetReport) -> str:
    rows = "\n".join(
        f'<tr><td class="n">{i + 1}</td><td>{_e(" ".join(words))}</td></tr>' for i, words in enumerate(report.topics)
    )
    return f"<h3>{_e(report.name)}</h3>\n<table><tr><th>topic</th><th>top words</th></tr>\n{rows}\n</table>"


def render(reports: Sequence[SetReport]) -> str:
    """The whole report as one HTML document."""
    if not reports:
        raise ValueError("no story sets to report")
    names = ", ".join(r.name for r in reports)
    sets = "\n".join(f'<tr><td>{_e(r.name)}</td><td class="n">{r.stories}</td></tr>' for r in reports)
    body = [
        f"<h1>Story sets: {_e(names)}</h1>",
        f"<table><tr><th>set</th><th>stories</th></tr>\n{sets}\n</table>",
        _sentiment(reports),
        _words(reports, POSITIVE),
        _words(reports, NEGATIVE),
        "<h2>Topics</h2>\n" + "\n".join(_topics(r) for r in reports),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>talesmith analyze: {_e(names)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
