"""Self-contained HTML pages: every image embedded as a data URI, so a page opens offline anywhere."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from latentspace.runs import atomic_write

__all__ = ["escape", "img_tag", "page", "table", "write_page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.5rem 0; } td, th { padding: 0.2rem 0.7rem;
  border-bottom: 1px solid #eee; text-align: left; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: 0.9rem; } .warn { color: #a40; }
figure { margin: 1rem 0; } figcaption { color: #555; font-size: 0.9rem; }
"""


def escape(text: object) -> str:
    return html.escape(str(text))


def img_tag(png: Path, caption: str = "") -> str:
    """An <img> with the PNG embedded (base64), inside a <figure> with an optional caption."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    alt = escape(caption or Path(png).stem)
    figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{figcaption}</figure>'


def table(rows: Sequence[Sequence[object]], header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole page: `sections` are (heading, inner HTML) pairs."""
    parts = [f"<h2>{escape(h)}</h2>\n{body}" for h, body in sections]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_page(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    text = page(title, sections)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
