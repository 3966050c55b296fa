"""A self-contained HTML report of analyzed story sets: inline CSS and SVG, no external assets, every
value from the data escaped. Pure: reports in, text out."""

from __future__ import annotations

from html import escape
from typing import Sequence

from talesmith.runtime.analysis.counting import NEGATIVE, POSITIVE, overlap
from talesmith.runtime.analysis.report import SetReport, genres

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}.pos{fill:#3a7d44}.neg{fill:#b03a2e}svg text{font-size:12px}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}"""
BAR_WIDTH, ROW, LABEL = 400, 22, 160


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _bars(reports: Sequence[SetReport], genre: str) -> str:
    """One horizontal bar per set: its stories of `genre`, positive then negative, to a common scale."""
    counts = [r.sentiment.get(genre, {POSITIVE: 0, NEGATIVE: 0}) for r in reports]
    most = max([c[POSITIVE] + c[NEGATIVE] for c in counts] + [1])
    height = ROW * len(reports) + 4
    parts = [f'<svg width="{LABEL + BAR_WIDTH + 120}" height="{height}" role="img" '
             f'aria-label="sentiment of {_e(genre)} stories">']
    for i, (report, c) in enumerate(zip(reports, counts)):
        y = i * ROW + 2
        pos, neg = (round(BAR_WIDTH * c[k] / most, 1) for k in (POSITIVE, NEGATIVE))
        parts.append(f'<text x="0" y="{y + 15}">{_e(report.name)}</text>'
                     f'<rect class="pos" x="{LABEL}" y="{y}" width="{pos}" height="{ROW - 6}"/>'
                     f'<rect class="neg" x="{LABEL + pos}" y="{y}" width="{neg}" height="{ROW - 6}"/>'
                     f'<text x="{LABEL + pos + neg + 6}" y="{y + 15}">{c[POSITIVE]} + / {c[NEGATIVE]} −</text>')
    parts.append("</svg>")
    return "".join(parts)


def _sentiment(reports: Sequence[SetReport]) -> str:
    legend = '<p class="legend"><span style="background:#3a7d44"></span>positive' \
             '<span style="background:#b03a2e"></span>negative</p>'
    sections = [f"<h3>{_e(g)}</h3>\n{_bars(reports, g)}" for g in genres(reports)]
    return "<h2>Sentiment by genre</h2>\n" + legend + "\n" + "\n".join(sections)


def _words(reports: Sequence[SetReport], kind: str) -> str:
    lists = [r.top_positive if kind == POSITIVE else r.top_negative for r in reports]
    head = "".join(f"<th>{_e(r.name)}</th>" for r in reports)
    rows = []
    for rank in range(max([len(words) for words in lists] + [0])):
        cells = "".join(f"<td>{_e(words[rank][0])} ({words[rank][1]})</td>" if rank < len(words) else "<td></td>"
                        for words in lists)
        rows.append(f'<tr><td class="n">{rank + 1}</td>{cells}</tr>')
    shared = "".join(f'<td>{overlap(words, lists[0])} of {len(words)}</td>' for words in lists)
    rows.append(f"<tr><th>shared with {_e(reports[0].name)}</th>{shared}</tr>")
    return f"<h2>Top {kind} words</h2>\n<table><tr><th>#</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _topics(report: SetReport) -> str:
    rows = "\n".join(f'<tr><td class="n">{i + 1}</td><td>{_e(" ".join(words))}</td></tr>'
                     for i, words in enumerate(report.topics))
    return f"<h3>{_e(report.name)}</h3>\n<table><tr><th>topic</th><th>top words</th></tr>\n{rows}\n</table>"


def render(reports: Sequence[SetReport]) -> str:
    """The whole report as one HTML document."""
    if not reports:
        raise ValueError("no story sets to report")
    names = ", ".join(r.name for r in reports)
    sets = "\n".join(f'<tr><td>{_e(r.name)}</td><td class="n">{r.stories}</td></tr>' for r in reports)
    body = [f"<h1>Story sets: {_e(names)}</h1>",
            f"<table><tr><th>set</th><th>stories</th></tr>\n{sets}\n</table>",
            _sentiment(reports), _words(reports, POSITIVE), _words(reports, NEGATIVE),
            "<h2>Topics</h2>\n" + "\n".join(_topics(r) for r in reports)]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>talesmith analyze: {_e(names)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
