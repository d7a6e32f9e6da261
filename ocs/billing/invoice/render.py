"""Invoice documents: JSON, HTML (Jinja2 template) and the ERP summary CSV."""

from __future__ import annotations

import csv
import io
import json
from functools import lru_cache
from typing import Any

import jinja2

SUMMARY_COLUMNS = ("invoice_number", "account_id", "period", "issue_date", "currency", "net",
                   "tax_rate", "tax", "total", "lines", "plan")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("ocs.billing.invoice", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_html(doc: dict[str, Any]) -> str:
    return _env().get_template("invoice.html.j2").render(inv=doc)


def summary_row(doc: dict[str, Any]) -> list[Any]:
    return [doc["number"], doc["account_id"], doc["period"], doc["issue_date"], doc["currency"],
            doc["net"], doc["tax_rate"], doc["tax"], doc["total"], len(doc["lines"]), doc["plan"]]


def summary_csv(docs: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(SUMMARY_COLUMNS)
    w.writerows(summary_row(d) for d in docs)
    return buf.getvalue()
