"""The API reference page at /docs: one self-contained HTML document drawn from the OpenAPI
document, with no script, font or stylesheet from elsewhere (an operator's back office often
has no internet; Swagger UI would load its assets from a CDN)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}
h2{border-bottom:1px solid #ccc;margin-top:2em}.op{margin:1em 0 1.5em}
.m{display:inline-block;min-width:4.5em;font-weight:bold;font-family:monospace}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f5f5f5;padding:.6em;
overflow:auto}table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;
text-align:left;vertical-align:top}"""


def _schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> Any:
    """A schema with its $refs expanded a few levels: what a reader wants to see inline."""
    if "$ref" in schema and depth < 4:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _schema(defs.get(name, {}), defs, depth + 1)
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if isinstance(v, dict):
            out[k] = _schema(v, defs, depth + 1)
        elif isinstance(v, list):
            out[k] = [_schema(x, defs, depth + 1) if isinstance(x, dict) else x for x in v]
        else:
            out[k] = v
    return out


def reference_page(doc: dict[str, Any]) -> str:
    defs = doc.get("components", {}).get("schemas", {})
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>"
             f"{escape(doc['info']['title'])} reference</title><style>{_STYLE}</style></head><body>",
             f"<h1>{escape(doc['info']['title'])} {escape(str(doc['info']['version']))}</h1>",
             "<p>Every route but the probes, /metrics and this page needs "
             "<code>Authorization: Bearer &lt;API key&gt;</code>. Errors are RFC 9457 "
             "<code>application/problem+json</code>. The machine-readable document is "
             "<a href=/openapi.json>/openapi.json</a>.</p>"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    for tag, ops in by_tag.items():
        parts.append(f"<h2>{escape(tag)}</h2>")
        for method, path, op in ops:
            parts.append(f"<div class=op><span class=m>{escape(method.upper())}</span> "
                         f"<code>{escape(path)}</code> — {escape(op.get('summary', ''))}")
            params = op.get("parameters", [])
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
                for p in params:
                    sch = json.dumps(_schema(p.get("schema", {}), defs))
                    parts.append(f"<tr><td><code>{escape(p['name'])}</code>"
                                 f"{' (required)' if p.get('required') else ''}</td>"
                                 f"<td>{escape(p['in'])}</td><td><code>{escape(sch)}</code></td></tr>")
                parts.append("</table>")
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                sch = json.dumps(_schema(content.get("schema", {}), defs), indent=1)
                parts.append(f"<p>body ({escape(media)}):</p><pre>{escape(sch)}</pre>")
            codes = ", ".join(f"{escape(c)} {escape(r.get('description', ''))}"
                              for c, r in op.get("responses", {}).items())
            parts.append(f"<p>responses: {codes}</p></div>")
    parts.append("</body></html>")
    return "".join(parts)
