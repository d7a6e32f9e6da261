"""CDR export: file formats (cdr_files.py), the exactly-once, per-consumer exporter (exporter.py) and
the server export's failing/working state for the log (health.py)."""

from ocs.billing.export.cdr_files import FORMATS, FormatError, read_all, read_file
from ocs.billing.export.exporter import (
    DEFAULT_CONSUMER,
    SERVER_FILES,
    CdrExporter,
    ExportError,
    ExportResult,
    export_pending,
    recover,
)

__all__ = ["DEFAULT_CONSUMER", "FORMATS", "SERVER_FILES", "CdrExporter", "ExportError", "ExportResult",
           "FormatError", "export_pending", "read_all", "read_file", "recover"]
