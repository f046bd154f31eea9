"""Demo results and the HTML report that ``fourfold demo`` writes.

Each system's ``run_demo(out_dir, quick)`` returns a :class:`DemoResult`; :func:`write_report` gathers
them into ``report.html`` (tables, pictures, audio players) and ``metrics.json``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fourfold.nn.modeling import atomic_write_text


@dataclass
class Table:
    """A results table: ``rows`` are lists aligned with ``columns``; floats are shown with 4 significant digits."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Media:
    """A picture (png/jpg/svg) or sound (wav/flac/mp3) or video (mp4) file, path relative to the demo's out_dir."""

    path: str
    caption: str = ""


@dataclass
class DemoResult:
    """What one system's demo produced.

    ``metrics`` must be JSON-serialisable (nested dicts/lists of numbers and strings); it is written to
    ``metrics.json`` under the system's name. ``figures`` and ``audio`` are :class:`Media` whose paths are
    relative to the directory the demo was given.
    """

    system: str
    title: str
    summary: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Media] = field(default_factory=list)
    audio: list[Media] = field(default_factory=list)
    videos: list[Media] = field(default_factory=list)
    seconds: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return html.escape(str(value))


_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".gif": "image/gif",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".mp4": "video/mp4",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.9em} figure{display:inline-block;margin:.5em;vertical-align:top;max-width:520px}
figure img{max-width:500px;border:1px solid #ddd} figcaption{font-size:.85em;color:#444}
.ok{color:#0a0} .bad{color:#c00} nav a{margin-right:1em}
"""


def _embed(root: Path, rel: str) -> str:
    """Return a data: URI for ``root/rel`` so the report is a single self-contained file."""
    path = root / rel
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def render_html(results: list[DemoResult], root: Path, *, embed_max_bytes: int = 4_000_000) -> str:
    """Render results as one HTML page; media under ``embed_max_bytes`` are inlined, larger ones linked."""

    def src(system_dir: str, rel: str) -> str:
        path = root / system_dir / rel
        if path.is_file() and path.stat().st_size <= embed_max_bytes:
            return _embed(root / system_dir, rel)
        return html.escape(f"{system_dir}/{rel}")

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fourfold demo report</title>",
        f"<style>{_CSS}</style></head><body><h1>fourfold demo report</h1>",
        "<nav>"
        + "".join(f"<a href='#{html.escape(r.system)}'>{html.escape(r.title)}</a>" for r in results)
        + "</nav>",
    ]
    for r in results:
        parts.append(f"<h2 id='{html.escape(r.system)}'>{html.escape(r.title)}</h2>")
        parts.append(f"<p class='note'>system <code>{html.escape(r.system)}</code> · {r.seconds:.1f} s</p>")
        if r.summary:
            parts.append(f"<p>{html.escape(r.summary)}</p>")
        if r.checks:
            items = "".join(
                f"<li class='{'ok' if ok else 'bad'}'>{'✔' if ok else '✘'} {html.escape(name)}</li>"
                for name, ok in r.checks.items()
            )
            parts.append(f"<ul>{items}</ul>")
        for t in r.tables:
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
            body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in t.rows)
            parts.append(f"<h3>{html.escape(t.title)}</h3><table><tr>{head}</tr>{body}</table>")
            if t.note:
                parts.append(f"<p class='note'>{html.escape(t.note)}</p>")
        for m in r.figures:
            parts.append(
                f"<figure><img src='{src(r.system, m.path)}' alt='{html.escape(m.caption)}'>"
                f"<figcaption>{html.escape(m.caption)}</figcaption></figure>"
            )
        for m in r.audio:
            parts.append(
                f"<figure><audio controls src='{src(r.system, m.path)}'></audio>"
                f"<figcaption>{html.escape(m.caption)}</figcaption></figure>"
            )
        for m in r.videos:
            parts.append(
                f"<figure><video controls width='480' src='{src(r.system, m.path)}'></video>"
                f"<figcaption>{html.escape(m.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: list[DemoResult], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/metrics.json`` atomically; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        r.system: {"title": r.title, "seconds": r.seconds, "checks": r.checks, "metrics": r.metrics}
        for r in results
    }
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, default=_json_default) + "\n")
    report_path = out_dir / "report.html"
    atomic_write_text(report_path, render_html(results, out_dir))
    return report_path, metrics_path


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable in demo metrics: {type(obj).__name__}")
