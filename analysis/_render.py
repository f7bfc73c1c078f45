"""A tiny document model rendered twice: self-contained HTML and Markdown.

HTML embeds every figure as a base64 PNG data URI and carries its CSS inline, so the
file opens anywhere offline; an inline script marks ``<body data-images-ok="true">``
once every image has decoded (checked by the headless-browser test).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures._style import figure_png

__all__ = ["Document", "format_value"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f0f0f3}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em .8em}
.wide{overflow-x:auto}dt{font-weight:600}dd{margin:0 0 .5em 1.2em}
code{background:#f3f3f3;padding:0 .2em}
"""
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-images-ok", ok ? "true" : "false");
});
"""


def format_value(value: Any) -> str:
    """A table cell: thousands separators for counts, 4 significant digits else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isinf(v):
            return str(v)
        # counts stored as float (NaN-padded int columns) keep their separators
        big = abs(v) >= 1e4 or (abs(v) >= 1e3 and v.is_integer())
        return f"{v:,.0f}" if big else f"{v:.4g}"
    return str(value)


@dataclass
class _Block:
    kind: str
    payload: Any
    caption: str = ""


@dataclass
class Document:
    """Headings, paragraphs, lists, tables and figures, in order."""

    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(_Block("h2", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(_Block("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(_Block("note", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(_Block("ul", list(items)))

    def definitions(self, pairs: list[tuple[str, str]]) -> None:
        self.blocks.append(_Block("dl", list(pairs)))

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        cells = frame.map(format_value) if len(frame) else frame.astype(str)
        self.blocks.append(_Block("table", cells, caption))

    def figure(self, fig: Figure, caption: str) -> None:
        """Rendered to PNG now, so the Figure can be garbage-collected."""
        self.blocks.append(_Block("figure", figure_png(fig), caption))

    @property
    def figure_count(self) -> int:
        return sum(b.kind == "figure" for b in self.blocks)

    def html(self) -> str:
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        parts += [_html_block(b) for b in self.blocks]
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
                f"<body>\n" + "\n".join(parts) + f"\n<script>{_SCRIPT}</script>"
                "\n</body></html>\n")

    def markdown(self, out_dir: Path, figure_dir: str = "report_figures") -> str:
        """Markdown; figures are written as PNG files under ``out_dir/figure_dir``."""
        parts, k = [f"# {self.title}"], 0
        for block in self.blocks:
            if block.kind == "figure":
                k += 1
                name = f"{figure_dir}/figure_{k:02d}_{_slug(block.caption)}.png"
                (out_dir / figure_dir).mkdir(parents=True, exist_ok=True)
                (out_dir / name).write_bytes(block.payload)
                parts.append(f"![{_md_escape(block.caption)}]({name})\n\n"
                             f"*{_md_escape(block.caption)}*")
            else:
                parts.append(_md_block(block))
        return "\n\n".join(parts) + "\n"


def _html_block(block: _Block) -> str:
    e = html.escape
    if block.kind == "h2":
        return f"<h2>{e(block.payload)}</h2>"
    if block.kind == "p":
        return f"<p>{e(block.payload)}</p>"
    if block.kind == "note":
        return f'<p class="note">{e(block.payload)}</p>'
    if block.kind == "ul":
        return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.payload) + "</ul>"
    if block.kind == "dl":
        return "<dl>" + "".join(f"<dt>{e(t)}</dt><dd>{e(d)}</dd>"
                                for t, d in block.payload) + "</dl>"
    if block.kind == "figure":
        data = base64.b64encode(block.payload).decode("ascii")
        return (f'<figure><img alt="{e(block.caption)}" src="data:image/png;base64,'
                f'{data}"><figcaption>{e(block.caption)}</figcaption></figure>')
    frame: pd.DataFrame = block.payload
    head = "".join(f"<th>{e(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    cap = f"<caption>{e(block.caption)}</caption>" if block.caption else ""
    return (f'<div class="wide"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _md_block(block: _Block) -> str:
    if block.kind == "h2":
        return f"## {block.payload}"
    if block.kind == "p":
        return _md_escape(block.payload)
    if block.kind == "note":
        return f"> **Note:** {_md_escape(block.payload)}"
    if block.kind == "ul":
        return "\n".join(f"- {_md_escape(i)}" for i in block.payload)
    if block.kind == "dl":
        return "\n".join(f"- **{_md_escape(t)}**: {_md_escape(d)}"
                         for t, d in block.payload)
    frame: pd.DataFrame = block.payload
    cap = f"**{_md_escape(block.caption)}**\n\n" if block.caption else ""
    head = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return cap + "\n".join([head, rule, *rows])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_escape(text: str) -> str:
    # GFM leaves intra-word underscores (ssim_worst_case) and `code` alone; a stray
    # asterisk is the one character that would restyle plain text
    return str(text).replace("*", "\\*")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "figure"
