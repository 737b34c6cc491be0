"""HTML building blocks for a self-contained page: escaping, data: URIs, tables, and the page shell with inline CSS."""
from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape

CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#e3e6ec; --card:#ffffff; --bg:#f4f5f8; --accent:#0072B2;
        --good:#009E73; --bad:#D55E00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { background:linear-gradient(120deg,#17324d,#0072B2); color:#fff; padding:28px 40px 24px; }
header.top h1 { margin:0 0 4px; font-size:26px; font-weight:650; letter-spacing:.2px; }
header.top .sub { opacity:.85; font-size:14px; }
.headline { display:flex; flex-wrap:wrap; gap:14px; margin-top:18px; }
.stat { background:rgba(255,255,255,.12); border:1px solid rgba(255,255,255,.25); border-radius:10px;
        padding:10px 16px; min-width:150px; }
.stat .value { font-size:28px; font-weight:700; line-height:1.15; font-variant-numeric:tabular-nums; }
.stat .label { font-size:12.5px; opacity:.9; }
.stat.main { background:#fff; color:var(--ink); }
.stat.main .value { color:var(--accent); font-size:34px; }
nav.toc { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line);
          padding:8px 40px; font-size:14px; }
nav.toc a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { max-width:1240px; margin:0 auto; padding:8px 28px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:6px 24px 20px;
          margin:22px 0; box-shadow:0 1px 2px rgba(20,30,50,.04); }
h2 { font-size:20px; margin:18px 0 10px; }
h3 { font-size:16px; margin:18px 0 8px; color:#2b3345; }
p.note, .muted { color:var(--muted); font-size:13.5px; }
.missing { background:#fff6e6; border:1px solid #f0c36d; border-radius:10px; padding:10px 18px; margin:22px 0 0; }
table { border-collapse:collapse; font-size:13.5px; font-variant-numeric:tabular-nums; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { background:#f7f8fa; font-weight:600; }
td.num, th.num { text-align:right; }
table.heat td.cell { text-align:center; min-width:120px; border:2px solid #fff; }
table.heat .score { font-size:19px; font-weight:650; }
table.heat .cv, table.heat .params { font-size:11.5px; opacity:.92; }
table.heat .best { outline:3px solid var(--bad); outline-offset:-3px; }
table.heat th.avg, table.heat td.avg { border-left:2px solid #c9ced8; }
.scroll { overflow-x:auto; }
figure.chart { margin:10px 0; }
figure.chart img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figure.chart figcaption { color:var(--muted); font-size:13px; }
.split { display:grid; grid-template-columns:minmax(280px,440px) 1fr; gap:24px; align-items:start; }
th .muted { font-weight:400; font-size:12px; }
.row2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:18px; align-items:start; }
.kv { display:grid; grid-template-columns:max-content 1fr; gap:2px 16px; font-size:14px; }
.kv dt { color:var(--muted); } .kv dd { margin:0; font-variant-numeric:tabular-nums; }
.thumbgrid { display:flex; flex-wrap:wrap; gap:14px; }
.catblock { border:1px solid var(--line); border-radius:10px; padding:8px 10px 10px; background:#fcfcfd; }
.catblock .cat { font-weight:600; font-size:13.5px; margin-bottom:6px; }
.catblock .cat .muted { font-weight:400; margin-left:6px; font-size:12.5px; }
.thumbs { display:flex; flex-wrap:wrap; gap:8px; max-width:1120px; }
figure.thumb { margin:0; width:132px; background:#fafbfc; border:2px solid var(--line); border-radius:8px; overflow:hidden; }
figure.thumb img { display:block; width:128px; height:128px; object-fit:contain; background:#fff; }
figure.thumb figcaption { font-size:11px; padding:3px 5px; line-height:1.3; overflow-wrap:anywhere; }
figure.thumb.right { border-color:var(--good); }
figure.thumb.wrong { border-color:var(--bad); border-style:dashed; }
figure.thumb.wrong figcaption { color:#8a3300; }
figure.thumb .noimg { width:128px; height:128px; display:flex; align-items:center; justify-content:center;
                      font-size:11px; color:var(--muted); text-align:center; padding:6px; }
.legend span { display:inline-block; margin-right:16px; font-size:13px; }
.swatch { display:inline-block; width:12px; height:12px; border:2px solid; border-radius:3px; vertical-align:-1px; margin-right:4px; }
pre { background:#f7f8fa; border:1px solid var(--line); border-radius:8px; padding:10px 14px; font-size:12.5px;
      overflow:auto; max-height:420px; }
details summary { cursor:pointer; color:var(--accent); margin:8px 0; }
footer { text-align:center; color:var(--muted); font-size:12.5px; padding:20px; }
"""


def data_uri(data: bytes, mime: str) -> str:
    """Inline bytes as a ``data:`` URI so the page needs no other file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_html(png: bytes, alt: str, caption: str | None = None, figure_id: str | None = None) -> str:
    """A PNG chart embedded as a data: URI, with alt text and an optional caption."""
    ident = f' id="{escape(figure_id)}"' if figure_id else ""
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (f'<figure class="chart"{ident}><img alt="{escape(alt)}" src="{data_uri(png, "image/png")}">'
            f"{caption_html}</figure>")


def table_html(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = (),
               table_id: str | None = None) -> str:
    """A plain table; columns listed in ``numeric`` are right-aligned. Cells are escaped text."""
    ident = f' id="{escape(table_id)}"' if table_id else ""
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{escape(str(cell))}</th>' for i, cell in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{escape(_text(cell))}</td>'
                         for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def key_values_html(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column definition list of labelled values."""
    return '<dl class="kv">' + "".join(f"<dt>{escape(key)}</dt><dd>{escape(_text(value))}</dd>" for key, value in pairs) + "</dl>"


def _text(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def section_html(section_id: str, title: str, body: str) -> str:
    return f'<section id="{escape(section_id)}"><h2>{escape(title)}</h2>{body}</section>'


def page_html(title: str, header: str, sections: Sequence[tuple[str, str, str]], notice: str = "", footer: str = "",
              meta: dict[str, str] | None = None) -> str:
    """The whole document: inline CSS, a header, a table of contents, then ``(id, title, body)`` sections."""
    toc = "".join(f'<a href="#{escape(section_id)}">{escape(name)}</a>' for section_id, name, _ in sections)
    body = "".join(section_html(*section) for section in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        + "".join(f'<meta name="{escape(name)}" content="{escape(value)}">' for name, value in (meta or {}).items())
        + f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"{header}<nav class=\"toc\">{toc}</nav><main>{notice}{body}</main>"
        f"<footer>{footer}</footer></body></html>\n"
    )
