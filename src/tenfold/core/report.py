"""A self-contained HTML report (figures embedded as PNG data URIs) for ``tenfold demo``.

Each method's ``demo(run_dir)`` returns a :class:`Section`; the report stitches them together
with a table of metrics, so one file can be opened, mailed or archived without its folder.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import time
from pathlib import Path
from typing import Any

from tenfold.core.io import atomic_write_bytes, to_jsonable


@dataclasses.dataclass
class Section:
    """One part of the report: a title, a paragraph, a metrics table and figures (PNG paths)."""

    title: str
    summary: str = ""
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: list[Path] = dataclasses.field(default_factory=list)
    status: str = "ok"  # ok | skipped | not implemented | failed
    seconds: float | None = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(to_jsonable(v)))
    return html.escape(str(v))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(Path(path).name)}">'
            f"<figcaption>{html.escape(Path(path).stem)}</figcaption></figure>")


def render_html(title: str, sections: list[Section], header: dict[str, Any] | None = None) -> str:
    """Render the sections as one HTML page."""
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
           "text-align:left}img{max-width:100%;border:1px solid #eee}figure{display:inline-block;"
           "margin:.5em;max-width:520px}.status-ok{color:#197a19}.status-failed{color:#b00}"
           ".status-skipped,.status-not{color:#777}section{border-top:2px solid #ddd;margin-top:1.5em}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>"]
    if header:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                                         for k, v in header.items()) + "</table>")
    parts.append("<h2>Contents</h2><table><tr><th>section</th><th>status</th><th>seconds</th></tr>")
    for s in sections:
        secs = f"{s.seconds:.1f}" if s.seconds is not None else ""
        parts.append(f"<tr><td>{html.escape(s.title)}</td><td class='status-{s.status.split()[0]}'>"
                     f"{html.escape(s.status)}</td><td>{secs}</td></tr>")
    parts.append("</table>")
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.summary:
            parts.append(f"<p>{html.escape(s.summary)}</p>")
        if s.metrics:
            parts.append("<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                                             for k, v in s.metrics.items()) + "</table>")
        parts.extend(_img(f) for f in s.figures if Path(f).is_file())
        parts.append("</section>")
    parts.append(f"<p><small>written {time.strftime('%Y-%m-%d %H:%M:%S')}</small></p></body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: list[Section],
                 header: dict[str, Any] | None = None) -> Path:
    """Write the HTML report atomically and return its path."""
    return atomic_write_bytes(path, render_html(title, sections, header).encode())
