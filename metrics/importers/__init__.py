"""Importers: provider exports and mapped CSVs into the store, streaming and idempotent.

Names are loaded on first use, so that the parser process (which imports
``metrics.importers.child``) does not pay for the store's imports. Importing this package
(or any module in it) changes no process-wide state: see
:func:`metrics.importers.source.prepare_csv_reading`.

The modules, leaves first: ``fields`` (canonical fields, formats, header detection),
``values`` (single values), ``source`` (reading and checking a CSV file), ``mapping``
(mapping files), ``binding`` (a format bound to a header), ``rows`` (row builders),
``formats`` (the two put together, and the names above in one place), ``parse`` (a file
as a stream of row batches), ``child`` (the same in a second process), ``writer`` (one
batch into its table), ``bulk`` (the settings of a bulk load), ``run`` (one file in one
transaction).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FORMATS": ".fields", "detect": ".fields",
    "Mapping": ".mapping", "load_mapping": ".mapping",
    "prepare_csv_reading": ".source",
    "FORMAT_NAMES": ".run", "ImportResult": ".run", "import_file": ".run",
    "attribute_replies": "..replies",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
