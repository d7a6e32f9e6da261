"""CDR export: the exactly-once, per-consumer exporter (exporter.py) and the server export's
failing/working state for the log (health.py). The file formats it writes are ocs.billing.cdr.files
(FORMATS, FormatError and the readers are re-exported here for the export's users)."""

from ocs.billing.cdr.files import FORMATS, FormatError, read_all, read_file
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
