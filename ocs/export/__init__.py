"""CDR export: file formats (formats.py) and the exactly-once exporter (exporter.py)."""

from ocs.export.exporter import CdrExporter, ExportError, export_pending, recover
from ocs.export.formats import FORMATS, FormatError, read_all, read_file

__all__ = ["FORMATS", "CdrExporter", "ExportError", "FormatError", "export_pending", "read_all",
           "read_file", "recover"]
