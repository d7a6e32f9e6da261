"""The PDF invoice (fpdf2, pure Python). Core fonts are Latin-1: other characters print as '?'.

The creation date is the issue date, so a re-run of the period writes the same bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos


def _t(text: Any) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def to_pdf(doc: dict[str, Any]) -> bytes:
    pdf = FPDF(format="A4")
    issued = datetime.fromisoformat(doc["issue_date"]).replace(tzinfo=UTC)
    pdf.set_creation_date(issued)
    pdf.set_title(_t(f"Invoice {doc['number']}"))
    pdf.set_producer("OCS")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _t(f"Invoice {doc['number']}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=10)
    for label, value in (("Account", doc["account_id"]), ("Plan", doc["plan"]),
                         ("Period", f"{doc['period_start']} to {doc['period_end']}"),
                         ("Issue date", doc["issue_date"]), ("Currency", doc["currency"])):
        pdf.cell(30, 6, label)
        pdf.cell(0, 6, _t(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    cur = doc["currency"]
    with pdf.table(col_widths=(100, 25, 20, 35), text_align=("LEFT", "RIGHT", "LEFT", "RIGHT"),
                   line_height=6) as table:
        table.row(["Description", "Quantity", "Unit", f"Amount ({cur})"])
        for ln in doc["lines"]:
            table.row([_t(ln["description"]), ln["quantity"], _t(ln["unit"]), ln["amount"]])
        table.row(["Net", "", "", doc["net"]])
        table.row([f"Tax ({doc['tax_rate']})", "", "", doc["tax"]])
        table.row(["Total", "", "", f"{cur} {doc['total']}"])
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 8, f"Total due: {cur} {doc['total']}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, _t(f"{doc['rounding_rule']} Exact total {doc['exact_total']}, rounding "
                            f"difference {doc['rounding_difference']}."))
    return bytes(pdf.output())
