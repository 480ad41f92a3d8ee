"""The demo's outputs: the comparison table (rich), results.json, and a self-contained report.html
(an inline SVG bar chart, image grids of what ClipCov kept and dropped, the corpus' noise settings)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table


@dataclass(frozen=True)
class Row:
    method: str
    budget: str
    samples: int
    top1: list[float]  # one value per seed
    recall1: list[float]
    noise: dict[str, float]
    balanced: list[float] = field(default_factory=list)  # zero-shot mean per-class recall, per seed

    @staticmethod
    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        mean = 100 * float(np.mean(values))
        return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * float(np.std(values)):.1f}"


def comparison_table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, header_style="bold")
    for col in ("method", "budget", "samples", "top-1 %", "bal. acc %", "R@1 %", "mismatch %", "junk %", "dup %"):
        t.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    t.caption = "top-1: zero-shot on the held-out split; bal. acc: its mean per-class recall; R@1: image-to-text retrieval; noise: share of the subset"
    for r in rows:
        t.add_row(r.method, r.budget, f"{r.samples:,}", Row.fmt(r.top1), Row.fmt(r.balanced), Row.fmt(r.recall1),
                  *(f"{100 * r.noise.get(k, float('nan')):.1f}" for k in ("mismatched", "junk", "duplicate")))
    return t


def _bars(rows: list[Row]) -> str:
    width, bar_h, gap = 560, 22, 8
    vals = [100 * float(np.mean(r.top1)) if r.top1 else 0.0 for r in rows]
    top = max(vals + [1.0])
    parts = [f'<svg width="{width + 200}" height="{len(rows) * (bar_h + gap) + 10}" xmlns="http://www.w3.org/2000/svg">']
    for i, (r, v) in enumerate(zip(rows, vals)):
        y = 5 + i * (bar_h + gap)
        w = width * v / top
        colour = "#2b7bb9" if r.method == "clipcov" else "#9aa5b1"
        parts.append(f'<text x="0" y="{y + 16}" font-size="13">{html.escape(r.method)}</text>'
                     f'<rect x="120" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
                     f'<text x="{125 + w:.1f}" y="{y + 16}" font-size="12">{Row.fmt(r.top1)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _grid(images: list[tuple[bytes, str]]) -> str:
    cells = []
    for data, caption in images:
        b64 = base64.b64encode(data).decode()
        cells.append(f'<figure><img src="data:image/jpeg;base64,{b64}" width="96" height="96">'
                     f'<figcaption>{html.escape(caption[:60])}</figcaption></figure>')
    return '<div class="grid">' + "".join(cells) + "</div>"


def write_report(out: Path, rows: list[Row], title: str, kept: list[tuple[bytes, str]], dropped: list[tuple[bytes, str]],
                 corpus_config: dict, notes: list[str]) -> Path:
    table = "".join(
        f"<tr><td>{html.escape(r.method)}</td><td>{r.budget}</td><td>{r.samples}</td><td>{Row.fmt(r.top1)}</td>"
        f"<td>{Row.fmt(r.balanced)}</td><td>{Row.fmt(r.recall1)}</td>" + "".join(f"<td>{100 * r.noise.get(k, float('nan')):.1f}</td>"
                                                  for k in ("mismatched", "junk", "duplicate")) + "</tr>"
        for r in rows)
    knobs = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in corpus_config.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
.grid{{display:flex;flex-wrap:wrap;gap:6px}} figure{{margin:0;width:100px;font-size:10px}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Zero-shot top-1 on the held-out test split</h2>{_bars(rows)}
<h2>Comparison</h2><table><tr><th>method</th><th>budget</th><th>samples</th><th>zero-shot top-1 %</th>
<th>mean per-class recall %</th><th>retrieval R@1 %</th><th>mismatched %</th><th>junk %</th><th>duplicate %</th></tr>{table}</table>
<p>{"<br>".join(html.escape(n) for n in notes)}</p>
<h2>Images ClipCov kept first (highest marginal gains)</h2>{_grid(kept)}
<h2>A random sample of the images ClipCov dropped</h2>{_grid(dropped)}
<h2>Corpus noise settings</h2><table>{knobs}</table></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_results(out: Path, rows: list[Row], meta: dict) -> Path:
    path = out / "results.json"
    path.write_text(json.dumps({"meta": meta, "rows": [r.__dict__ for r in rows]}, indent=2), encoding="utf-8")
    return path
