"""Write a report card as JSON, Markdown and a self-contained HTML page (inline SVG, no network)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from harness.audit.figures import SOURCES

PROTOCOLS = ("pointwise", "single_order", "both_orders")


def _num(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _rate(r: dict[str, Any] | None) -> str:
    if not r or not r.get("n"):
        return "–"
    return f"{_num(r['rate'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}] n={r['n']}"


def tables(card: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The card's tables: (title, header, rows), shared by the Markdown and HTML forms."""
    out = []
    rows = [
        [
            SOURCES.get(r["source"], r["source"]),
            r["principle"],
            r["protocol"],
            str(r["n"]),
            f"{_num(r['accuracy'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]",
            _num(r["kappa"]),
        ]
        for r in card["agreement"]
    ]
    out.append(
        (
            "Agreement with people (pre-screen on)",
            ["source", "principle", "protocol", "n", "accuracy [95% CI]", "kappa"],
            rows,
        )
    )
    pos = card.get("position")
    if pos:
        out.append(
            (
                "Position bias (control pairs)",
                [
                    "n ordered judgments",
                    "P(prefer first shown)",
                    "tie rate",
                    "consistent across orders",
                ],
                [
                    [
                        str(pos["n"]),
                        _num(pos["p_prefer_first"]),
                        _num(pos["tie_rate"]),
                        _num(pos["consistency"]),
                    ]
                ],
            )
        )
    length = card["length"]
    out.append(
        (
            "Length bias",
            [
                "score slope per 100 chars",
                "accuracy, preferred answer shorter",
                "accuracy, preferred answer longer",
            ],
            [
                [
                    _num(length["slope_per_100_chars"], 3),
                    _rate(length.get("preferred_shorter")),
                    _rate(length.get("preferred_longer")),
                ]
            ],
        )
    )
    hack_rows = []
    for klass in card["hacks"]["prescreen_on"]:
        row = [klass]
        for side in ("prescreen_off", "prescreen_on"):
            entry = card["hacks"][side].get(klass) or {}
            row += [_rate(entry.get(p)) for p in PROTOCOLS]
        hack_rows.append(row)
    header = ["class"] + [f"{p} (pre-screen {s})" for s in ("off", "on") for p in PROTOCOLS]
    out.append(
        (
            "Hack probes: false-positive rate [95% CI] (control: the undressed poor answer)",
            header,
            hack_rows,
        )
    )
    cal = [
        [pid, _rate(r["preferred"]), _rate(r["rejected"])]
        for pid, r in card["calibration"]["pass_rates"].items()
    ]
    out.append(
        (
            "Calibration: pass rate of the answers people preferred vs rejected",
            ["principle", "preferred pass rate", "rejected pass rate"],
            cal,
        )
    )
    curve = [[_num(p["score"], 0), _rate(p)] for p in card["calibration"]["curve"]]
    out.append(
        (
            "Calibration curve: share of human-preferred answers at each rounded score",
            ["score", "share preferred"],
            curve,
        )
    )
    return out


def _verdict_md(card: dict[str, Any]) -> list[str]:
    v = card["verdict"]
    lines = ["## Verdict", ""]
    for key, title in (
        ("trust", "Trust it for"),
        ("distrust", "Do not trust it for"),
        ("undecided", "Not established"),
    ):
        lines.append(f"**{title}:**" + ("" if v[key] else " nothing"))
        lines += [f"- {t}" for t in v[key]]
        lines.append("")
    lines += ["Thresholds:", "", v["rules"], ""]
    return lines


def to_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown."""
    j = card["judge"]
    lines = [
        f"# Judge report card: {j['id']}",
        "",
        f"Identity `{j['identity']}` ({j['backend']}), audit `{card['inputs']}`, "
        f"{card['created']}.",
        f"Suites: {', '.join(card['suites'])}; {card['protocol']['per_source']} labelled cases per "
        "source, each with one probe per class.",
        "Defences: the pre-screen is measured off and on; both-order averaging is the both_orders "
        "column against single_order; fencing and escaping of the response is always on.",
        "",
    ]
    lines += _verdict_md(card)
    for title, header, rows in tables(card):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def curve_svg(points: list[tuple[float, float]], x_label: str, x_range: tuple[float, float]) -> str:
    """A small line chart of y in [0, 1] against x, as inline SVG."""
    w, h, pad = 360, 200, 36
    lo, hi = x_range
    span = (hi - lo) or 1.0

    def xy(x: float, y: float) -> str:
        return f"{pad + (x - lo) / span * (w - 2 * pad):.1f},{h - pad - y * (h - 2 * pad):.1f}"

    line = " ".join(xy(x, y) for x, y in points)
    dots = "".join(
        f'<circle cx="{xy(x, y).split(",")[0]}" cy="{xy(x, y).split(",")[1]}" r="3"/>'
        for x, y in points
    )
    return (
        f'<svg width="{w}" height="{h}" role="img"><rect x="{pad}" y="{pad}" width="{w - 2 * pad}" '
        f'height="{h - 2 * pad}" fill="none" stroke="#ccc"/><polyline fill="none" stroke="#2563eb" '
        f'stroke-width="2" points="{line}"/><g fill="#2563eb">{dots}</g>'
        f'<text x="{w / 2}" y="{h - 6}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)}</text>"
        f'<text x="4" y="{pad - 8}" font-size="11">P(human-preferred)</text>'
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end" font-size="10">0</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end" font-size="10">1</text></svg>'
    )


def _curves(card: dict[str, Any]) -> str:
    out = []
    pts = [(p["score"], p["rate"]) for p in card["calibration"]["curve"] if p["n"]]
    if pts:
        out.append("<h3>Judge scores</h3>" + curve_svg(pts, "rounded pointwise score", (1, 5)))
    student = card["judge"].get("student_calibration") or {}
    for head, cal in student.items():
        bins = [(b["score"], b["rate"]) for b in cal.get("curve", []) if b.get("n")]
        if bins:
            out.append(
                f"<h3>Student head {html.escape(head)}: calibrated score on held-out pairs</h3>"
                + curve_svg(bins, "calibrated score (1-5)", (1, 5))
            )
    return "".join(out)


def to_html(card: dict[str, Any]) -> str:
    """The card as one self-contained HTML page."""
    esc = html.escape
    body = [f"<h1>Judge report card: {esc(card['judge']['id'])}</h1>"]
    md = to_markdown(card).split("\n## ", 1)[0].split("\n")[2:]
    body += [f"<p>{esc(line)}</p>" for line in md if line]
    v = card["verdict"]
    for key, title in (
        ("trust", "Trust it for"),
        ("distrust", "Do not trust it for"),
        ("undecided", "Not established"),
    ):
        items = "".join(f"<li>{esc(t)}</li>" for t in v[key]) or "<li>nothing</li>"
        body.append(f'<h2 class="{key}">{title}</h2><ul>{items}</ul>')
    body.append(f"<details><summary>Thresholds</summary><pre>{esc(v['rules'])}</pre></details>")
    for title, header, rows in tables(card):
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        body.append(f"<h2>{esc(title)}</h2><table><tr>{head}</tr>{trs}</table>")
    body.append("<h2>Calibration curves</h2>" + (_curves(card) or "<p>no pointwise scores</p>"))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 6px}"
        "h2.trust{color:#166534}h2.distrust{color:#991b1b}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Report card "
        f"{esc(card['judge']['id'])}</title><style>{style}</style></head><body>"
        + "".join(body)
        + "</body></html>"
    )


def write_card(card: dict[str, Any], folder: Path) -> Path:
    """Write ``card.json``, ``card.md`` and ``card.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card.json").write_text(json.dumps(card, indent=1, default=str), encoding="utf-8")
    (folder / "card.md").write_text(to_markdown(card), encoding="utf-8")
    (folder / "card.html").write_text(to_html(card), encoding="utf-8")
    return folder
