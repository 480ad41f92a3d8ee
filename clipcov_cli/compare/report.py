"""The comparison's outputs: the table (rich), results.json, and a self-contained report.html (top-1
with intervals as an inline SVG, class histograms of the corpus and of each subset, image grids)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from clipcov_cli.compare.stats import paired_difference
from clipcov_cli.utils.atomic import write_json

NOISE = ("mismatched", "junk", "duplicate")


@dataclass(frozen=True)
class Row:
    method: str
    budget: str
    samples: int
    seeds: list[int]
    top1: list[float]  # one value per seed, in the order of ``seeds``
    recall1: list[float]
    top1_ci95: list[float] | None = None  # t interval of the mean top-1 over seeds (None: one seed)
    noise: dict[str, float] = field(default_factory=dict)  # shares of the subset (with a truth sidecar)
    vs: dict[str, dict] = field(default_factory=dict)  # baseline -> {"mean", "ci95", "n"}: paired top-1 difference
    classes: list[int] = field(default_factory=list)  # samples per class in the subset
    classes_of: str = "pseudo-label"
    balanced: list[float] = field(default_factory=list)  # zero-shot mean per-class recall, one value per seed

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.top1))


def pct(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * float(np.mean(values))
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * float(np.std(values)):.1f}"


def with_ci(mean: float, ci: list[float] | None, signed: bool = False) -> str:
    m = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return m if ci is None else f"{m} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if signed else f"{m} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _top1(r: Row) -> str:
    return with_ci(float(np.mean(r.top1)), r.top1_ci95) if r.top1 else "-"


def _vs(r: Row, base: str) -> str:
    d = r.vs.get(base)
    return "-" if d is None else with_ci(d["mean"], d["ci95"], signed=True)


def comparison_table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, header_style="bold")
    cols = ("method", "budget", "samples", "top-1 % [95% CI]", "bal. acc %", "Δ vs random", "Δ vs clip-score", "R@1 %",
            "mismatch %", "junk %", "dup %")
    for col in cols:
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    t.caption = ("top-1: zero-shot on the held-out split, mean over seeds [t interval]; bal. acc: mean per-class "
                 "recall (mean ± std over seeds); Δ: paired difference "
                 "in top-1 points over the same seeds [95% t interval]; noise: share of the subset")
    for r in rows:
        t.add_row(r.method, r.budget, f"{r.samples:,}", _top1(r), pct(r.balanced), _vs(r, "random"), _vs(r, "clip-score"),
                  pct(r.recall1),
                  *(f"{100 * r.noise[k]:.1f}" if k in r.noise else "-" for k in NOISE))
    return t


def verdict(rows: list[Row], method: str = "clipcov") -> list[str]:
    """One line per budget: ``method``'s paired top-1 difference against every other row of that
    budget and the whole corpus, and whether its 95% interval excludes zero."""
    mine = [r for r in rows if r.method == method and r.top1]
    if not mine:
        return [f"no evaluated {method} rows: no verdict"]
    lines = []
    for r in mine:
        others = [o for o in rows if o.method != method and o.top1 and o.budget in (r.budget, "100%")]
        parts = []
        for o in others:
            iv = paired_difference(r.by_seed(), o.by_seed())
            if iv is None:
                continue
            label = o.method if o.budget == r.budget or o.budget != "100%" else f"{o.method} 100%"
            if iv.lo is None:
                parts.append(f"vs {label} {100 * iv.mean:+.1f} (one seed: no interval)")
            else:
                word = ("better, interval excludes zero" if iv.lo > 0 else "worse, interval excludes zero" if iv.hi < 0
                        else "interval includes zero: no difference shown")
                parts.append(f"vs {label} {100 * iv.mean:+.1f} [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}] ({word})")
        lines.append(f"verdict at {r.budget}: {method} top-1 {_top1(r)}%; " + "; ".join(parts))
    return lines


def _bars(rows: list[Row]) -> str:
    """Mean top-1 per row with its interval as a whisker."""
    width, bar_h, gap, left = 520, 20, 8, 220
    vals = [100 * float(np.mean(r.top1)) if r.top1 else 0.0 for r in rows]
    tops = [100 * r.top1_ci95[1] if r.top1_ci95 else v for r, v in zip(rows, vals)]
    top = max(tops + [1.0])
    parts = [f'<svg width="{left + width + 140}" height="{len(rows) * (bar_h + gap) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (r, v) in enumerate(zip(rows, vals)):
        y = 5 + i * (bar_h + gap)
        w = width * v / top
        colour = "#2b7bb9" if r.method == "clipcov" else "#9aa5b1"
        parts.append(f'<text x="0" y="{y + 15}" font-size="13">{html.escape(f"{r.method} @ {r.budget}")}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>')
        if r.top1_ci95:
            x0, x1 = (left + width * 100 * c / top for c in r.top1_ci95)
            parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + bar_h / 2}" y2="{y + bar_h / 2}" stroke="#000"/>')
        parts.append(f'<text x="{left + max(w, width * tops[i] / top) + 6:.1f}" y="{y + 15}" font-size="12">{_top1(r)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(counts: list[int], colour: str) -> str:
    """A small bar chart of shares per class."""
    total = max(sum(counts), 1)
    h, w = 60, 6
    top = max([c / total for c in counts] + [1e-9])
    bars = "".join(f'<rect x="{i * (w + 1)}" y="{h - h * c / total / top:.1f}" width="{w}" height="{h * c / total / top:.1f}" '
                   f'fill="{colour}"><title>class {i}: {c}</title></rect>' for i, c in enumerate(counts))
    return f'<svg width="{len(counts) * (w + 1)}" height="{h}" xmlns="http://www.w3.org/2000/svg">{bars}</svg>'


def _histograms(rows: list[Row]) -> str:
    corpus = next((r for r in rows if r.budget == "100%"), None)
    base = corpus.classes if corpus else []
    cells = []
    for r in rows:
        if r.budget == "100%" or not r.classes or r.method.startswith("full"):
            continue
        cells.append(f"<tr><td>{html.escape(r.method)}</td><td>{r.budget}</td><td>{_histogram(base, '#9aa5b1')}</td>"
                     f"<td>{_histogram(r.classes, '#2b7bb9' if r.method == 'clipcov' else '#555')}</td></tr>")
    which = html.escape(rows[0].classes_of) if rows else ""
    return (f"<p>Share of each class ({which}; class index left to right), the whole corpus beside each subset "
            f"(the first seed's subset for seeded methods).</p><table><tr><th>method</th><th>budget</th>"
            f"<th>corpus</th><th>subset</th></tr>{''.join(cells)}</table>")


def _grid(images: list[tuple[bytes, str]]) -> str:
    cells = []
    for data, caption in images:
        b64 = base64.b64encode(data).decode()
        cells.append(f'<figure><img src="data:image/jpeg;base64,{b64}" width="96" height="96">'
                     f'<figcaption>{html.escape(caption[:60])}</figcaption></figure>')
    return '<div class="grid">' + "".join(cells) + "</div>"


def _table_html(rows: list[Row]) -> str:
    body = "".join(
        f"<tr><td>{html.escape(r.method)}</td><td>{r.budget}</td><td>{r.samples}</td><td>{_top1(r)}</td><td>{pct(r.balanced)}</td>"
        f"<td>{_vs(r, 'random')}</td><td>{_vs(r, 'clip-score')}</td><td>{pct(r.recall1)}</td>"
        + "".join(f"<td>{100 * r.noise[k]:.1f}</td>" if k in r.noise else "<td>-</td>" for k in NOISE) + "</tr>"
        for r in rows)
    return ("<table><tr><th>method</th><th>budget</th><th>samples</th><th>zero-shot top-1 % [95% CI]</th>"
            "<th>mean per-class recall %</th>"
            "<th>Δ vs random [95% CI]</th><th>Δ vs clip-score [95% CI]</th><th>retrieval R@1 %</th>"
            f"<th>mismatched %</th><th>junk %</th><th>duplicate %</th></tr>{body}</table>")


def write_report(out: Path, rows: list[Row], title: str, kept: list[tuple[bytes, str]], dropped: list[tuple[bytes, str]],
                 meta: dict) -> Path:
    corpus = meta.get("corpus") or {}
    knobs = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in corpus.items())
    facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(meta[k]))}</td></tr>"
                    for k in ("seeds", "budgets", "epochs", "batch_size", "model", "proxy_label_accuracy", "proxy_top1",
                              "interval") if k in meta)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
.grid{{display:flex;flex-wrap:wrap;gap:6px}} figure{{margin:0;width:100px;font-size:10px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Zero-shot top-1 on the held-out test split (mean over seeds, 95% t interval)</h2>{_bars(rows)}
<h2>Comparison</h2>{_table_html(rows)}
<p>{"<br>".join(html.escape(n) for n in meta.get("notes", []))}</p>
<h2>Run</h2><table>{facts}</table>
<h2>Class histograms</h2>{_histograms(rows)}
<h2>Images the first method kept first</h2>{_grid(kept)}
<h2>A random sample of the images it dropped</h2>{_grid(dropped)}
{f"<h2>Corpus settings</h2><table>{knobs}</table>" if knobs else ""}</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_results(out: Path, rows: list[Row], meta: dict) -> Path:
    path = out / "results.json"
    write_json(path, {"meta": meta, "rows": [asdict(r) for r in rows]})
    return path
