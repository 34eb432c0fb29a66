"""Importers: provider exports and mapped CSVs into the store, streaming and idempotent.

Names are loaded on first use, so that the parser process (which imports
``metrics.importers.parse``) does not pay for the store's imports.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FORMATS": "formats", "detect": "formats",
    "Mapping": "mapping", "load_mapping": "mapping",
    "FORMAT_NAMES": "run", "ImportResult": "run", "attribute_replies": "run",
    "import_file": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
