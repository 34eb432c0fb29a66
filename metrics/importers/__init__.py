"""Importers: provider exports and mapped CSVs into the store, streaming and idempotent."""
from .formats import FORMATS, detect
from .mapping import Mapping, load_mapping
from .run import FORMAT_NAMES, ImportResult, attribute_replies, import_file

__all__ = ["FORMATS", "FORMAT_NAMES", "ImportResult", "Mapping", "attribute_replies", "detect",
           "import_file", "load_mapping"]
