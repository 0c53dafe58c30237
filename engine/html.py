"""The toolkit of the self-contained HTML pages (inline CSS, SVG and PNG; no scripts, no network): the style
sheet, tables, table cells, overlaid-bar histograms, line charts and inline images. It knows no component:
the components draw their report sections with it, and the application its pages."""
from __future__ import annotations

import html
from typing import Any

import numpy as np

from engine.errors import first_line

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232a;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d7dde3;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d7dde3;padding:3px 8px;text-align:right}
th{background:#f1f4f7}td:first-child,th:first-child{text-align:left}
.bad{color:#b3261e;font-weight:600}.ok{color:#1b7a3a}.warn{color:#8a5a00}.grid{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #d7dde3;padding:8px}figcaption{font-weight:600;margin-bottom:4px}
.key span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""
BASE, CURRENT = "#3b6fb6", "#e8772e"  # the two series of every chart: baseline (or train), current (or validation)


def table(headers: list[str], rows: list[list[Any]], empty: str) -> str:
    """A table of already escaped cells under escaped `headers`; `empty` (a success) when there are no rows."""
    if not rows:
        return f"<p class='ok'>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def rows(mapping: dict[str, Any]) -> str:
    """One escaped `<tr><th>key</th><td>value</td></tr>` per item: the rows of a table of facts."""
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in mapping.items())


def cell(value: Any) -> str:
    """A table cell: floats to four significant digits, nothing for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def unavailable(what: str, exc: BaseException) -> str:
    """What a section could not show, and why: a report never fails a run, it says what is missing instead."""
    return f"<p class='bad'>{what} unavailable: {html.escape(first_line(exc))}</p>"


def key(base: str, current: str) -> str:
    """The legend of the two series' colours."""
    return (f"<p class='key'><span style='background:{BASE}'></span>{html.escape(base)}"
            f"<span style='background:{CURRENT}'></span>{html.escape(current)}</p>")


def svg_histogram(caption: str, base: np.ndarray, current: np.ndarray, low: str, high: str) -> str:
    """Two count vectors over the same buckets as shares, drawn as overlaid bars; `low` and `high` label the
    ends of the bucket range."""
    width, height, pad = 320, 140, 4
    p, q = base / max(base.sum(), 1), current / max(current.sum(), 1)
    top = max(p.max(), q.max(), 1e-9)
    step = (width - 2 * pad) / len(p)
    bars = []
    for i, (a, b) in enumerate(zip(p, q)):
        x = pad + i * step
        for share, colour, inset in ((a, BASE, 0.0), (b, CURRENT, step * 0.3)):
            h = (height - 2 * pad) * share / top
            bars.append(f"<rect x='{x + inset:.1f}' y='{height - pad - h:.1f}' width='{step * 0.7:.1f}' "
                        f"height='{h:.1f}' fill='{colour}' fill-opacity='0.75'/>")
    axis = (f"<text x='{pad}' y='{height + 12}' font-size='10'>{low}</text>"
            f"<text x='{width - pad}' y='{height + 12}' font-size='10' text-anchor='end'>{high}</text>")
    return (f"<figure><figcaption>{html.escape(caption)}</figcaption><svg width='{width}' height='{height + 14}' "
            f"role='img' aria-label='{html.escape(caption)} histogram'>{''.join(bars)}{axis}</svg></figure>")


def svg_curves(history: dict[str, list[float]], metric: str) -> str:
    """Training and validation curves of one metric over epochs, as an inline SVG line chart."""
    series = [(name, history[name], colour) for name, colour in ((metric, BASE), (f"val_{metric}", CURRENT))
              if history.get(name)]
    if not series:
        return ""
    width, height, pad = 340, 190, 40
    values = [v for _, s, _ in series for v in s]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    epochs = max(len(s) for _, s, _ in series)
    parts = []
    for name, points, colour in series:
        xy = [(pad + (width - 2 * pad) * (i / max(epochs - 1, 1)), height - pad - (height - 2 * pad) * (v - low) / span)
              for i, v in enumerate(points)]
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                     f"points='{' '.join(f'{x:.1f},{y:.1f}' for x, y in xy)}'/>")
        parts += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{colour}'/>" for x, y in xy]
    left, bottom = pad, height - pad
    axis = [f"<line x1='{left}' y1='{pad}' x2='{left}' y2='{bottom}' stroke='#888'/>",
            f"<line x1='{left}' y1='{bottom}' x2='{width - pad}' y2='{bottom}' stroke='#888'/>",
            f"<text x='{width / 2:.0f}' y='{height - 4}' font-size='10' text-anchor='middle'>epoch</text>",
            f"<text x='10' y='{height / 2:.0f}' font-size='10' text-anchor='middle' "
            f"transform='rotate(-90 10 {height / 2:.0f})'>{html.escape(metric)}</text>"]
    for value in (low, (low + high) / 2, high):  # three values on the y axis
        y = bottom - (height - 2 * pad) * (value - low) / span
        axis.append(f"<text class='tick' x='{left - 3}' y='{y + 3:.1f}' font-size='9' text-anchor='end'>{value:.3g}</text>")
    for i in range(epochs):  # every epoch on the x axis (at most ten labels)
        if epochs <= 10 or i % -(-epochs // 10) == 0 or i == epochs - 1:
            x = pad + (width - 2 * pad) * (i / max(epochs - 1, 1))
            axis.append(f"<text class='tick' x='{x:.1f}' y='{bottom + 12}' font-size='9' text-anchor='middle'>{i + 1}</text>")
    axis = "".join(axis)
    return (f"<figure><figcaption>{metric}</figcaption><svg width='{width}' height='{height}' role='img' "
            f"aria-label='{metric} curves'>{''.join(parts)}{axis}</svg></figure>")


def png_data_uri(image: np.ndarray, scale: int = 2) -> str:
    """A grayscale uint8 image as an inline `data:image/png;base64,...` URI (no imaging library needed)."""
    import base64
    import struct
    import zlib

    pixels = np.kron(np.asarray(image, dtype=np.uint8), np.ones((scale, scale), dtype=np.uint8))
    height, width = pixels.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()

