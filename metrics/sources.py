"""The sources file (``$KPIBOT_SOURCES``, TOML): which campaign a sender number or
messaging service sends for, for events and exports that do not say.

```toml
[campaign_by_sender]
"+1 415 555 0100" = "spring-sale"          # numbers are matched on their digits
MG0123456789abcdef0123456789abcdef = "welcome-series"   # a messaging service SID
```

It is read again whenever it changes (:class:`SourcesFile`), so a team can assign the
events kept as unassigned without a restart."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KpiBotError
from .importers.values import BadValue, campaign_name, sender_key

SOURCES_ENV = "KPIBOT_SOURCES"
_SECTIONS = {"campaign_by_sender", "campaign_by_code"}


class SourcesError(KpiBotError):
    pass


@dataclass
class Sources:
    path: Path | None = None
    senders: dict[str, str] = field(default_factory=dict)    # sender_key -> campaign
    codes: dict[str, str] = field(default_factory=dict)      # code (casefolded) -> campaign

    def campaign_for(self, *senders: str | None) -> str | None:
        """The campaign of the first of ``senders`` that has one."""
        for s in senders:
            if s:
                hit = self.senders.get(sender_key(s))
                if hit:
                    return hit
        return None


def load_sources(path: str | os.PathLike) -> Sources:
    """Read and check a sources file; every problem names the section and key."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourcesError(f"the sources file {p} ({SOURCES_ENV}) was not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourcesError(f"cannot read the sources file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourcesError(f"{p.name} is not valid TOML: {exc}") from None
    unknown = set(raw) - _SECTIONS
    if unknown:
        raise SourcesError(f"{p.name}: unknown section [{sorted(unknown)[0]}] "
                           f"(known: {', '.join(sorted(_SECTIONS))})")
    out = Sources(path=p)
    for section, target, key in (("campaign_by_sender", out.senders, sender_key),
                                 ("campaign_by_code", out.codes, str.casefold)):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SourcesError(f"{p.name}: [{section}] must be a table of name = campaign")
        for k, v in table.items():
            try:
                target[key(str(k).strip())] = campaign_name(str(v))
            except BadValue as exc:
                raise SourcesError(f"{p.name}: [{section}] {str(k)[:40]}: {exc}") from None
    return out


class SourcesFile:
    """The sources file named by ``$KPIBOT_SOURCES`` (or ``path``), re-read when it
    changes. With none named, no sender has a campaign."""

    def __init__(self, path: str | os.PathLike | None = None):
        named = path or os.environ.get(SOURCES_ENV)
        self.path = Path(named) if named else None
        self._stamp: tuple | None = None
        self._sources = Sources()
        self.error: str | None = None

    def get(self) -> Sources:
        """The sources as the file now says; a file that became unreadable keeps the
        last good reading (and says why in ``error``)."""
        if self.path is None:
            return self._sources
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._sources = load_sources(self.path)
                self.error = None
            except SourcesError as exc:
                self.error = str(exc)
        return self._sources

    @property
    def stamp(self) -> tuple | None:
        self.get()
        return self._stamp
