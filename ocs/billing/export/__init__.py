"""CDR export: file formats (cdr_files.py) and the exactly-once exporter (exporter.py)."""

from ocs.billing.export.cdr_files import FORMATS, FormatError, read_all, read_file
from ocs.billing.export.exporter import CdrExporter, ExportError, export_pending, recover

__all__ = ["FORMATS", "CdrExporter", "ExportError", "FormatError", "export_pending", "read_all",
           "read_file", "recover"]
