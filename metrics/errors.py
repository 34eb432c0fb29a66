"""Small domain exceptions, translated into readable replies at the edge (CLI, Slack)."""
from __future__ import annotations

from dataclasses import dataclass


class KpiBotError(Exception):
    """Base class for every error a user can be shown as-is."""


@dataclass
class RowError:
    """One rejected input row: where it is and why."""

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.column:
            where += f", column '{self.column}'"
        return f"{where}: {self.reason}"


class ImportRejected(KpiBotError):
    """A file (or a row of it) could not be imported; nothing was changed."""

    def __init__(self, message: str, file: str | None = None, errors: list[RowError] | None = None,
                 total_errors: int | None = None):
        self.file = file
        self.errors = errors or []
        self.total_errors = total_errors if total_errors is not None else len(self.errors)
        super().__init__(message)

    def __str__(self) -> str:
        head = self.args[0]
        if self.file:
            head = f"{self.file}: {head}"
        if not self.errors:
            return head
        lines = [head] + [f"  {e}" for e in self.errors]
        more = self.total_errors - len(self.errors)
        if more > 0:
            lines.append(f"  … and {more:,} more")
        return "\n".join(lines)


class MappingError(KpiBotError):
    """A mapping file is malformed or does not fit the file it maps."""


class NoData(KpiBotError):
    """A campaign exists but has no events or totals yet."""


class UnknownCampaign(KpiBotError):
    """No campaign by that name; carries the closest matches."""

    def __init__(self, name: str, suggestions: list[str] | None = None):
        self.name = name
        self.suggestions = suggestions or []
        msg = f"No campaign called '{name}'."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg)


class HashKeyMismatch(KpiBotError):
    """The phone-number hash key differs from the one this database was built with."""


class StoreError(KpiBotError):
    """The database cannot be opened or written (disk full, read-only, not a database).
    The message says what, where and what to do; nothing was changed."""


class SchemaTooNew(StoreError):
    """The database was written by a newer kpibot, with a schema this one does not know."""

    def __init__(self, path: str, theirs: int, ours: int):
        self.path, self.theirs, self.ours = path, theirs, ours
        super().__init__(f"{path} was written by a newer kpibot (schema {theirs}; this kpibot "
                         f"knows schema {ours}): upgrade kpibot (pip install -U kpibot)")
