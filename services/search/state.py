"""What the search service remembers across restarts: the change-feed position per partition and,
per map, where its index lives and the layout it was built with.

Written only after the commits it describes, atomically (write to a temporary file, fsync,
rename), so after a crash the file describes indexed state, never state still in a writer. A
restart resumes the feeds from these positions; changes replayed from just before a crash are
upserts by key and leave no duplicates.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class MapState:
    directory: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SearchState:
    positions: Mapping[int, int] = field(default_factory=dict)  # partition -> last indexed seq
    maps: Mapping[str, MapState] = field(default_factory=dict)


class StateStore(Protocol):
    def load(self) -> SearchState: ...

    def save(self, state: SearchState) -> None: ...


class MemoryStateStore:
    """For the in-RAM backend: nothing survives a restart, which then rebuilds from scratch."""

    def __init__(self) -> None:
        self._state = SearchState()

    def load(self) -> SearchState:
        return self._state

    def save(self, state: SearchState) -> None:
        self._state = state


class FileStateStore:
    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> SearchState:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return SearchState()
        except (OSError, ValueError) as e:
            log.warning("search state %s is unreadable (%s); starting from scratch", self.path, e)
            return SearchState()
        if doc.get("version") != STATE_VERSION:
            log.warning(
                "search state %s has version %r; starting from scratch",
                self.path,
                doc.get("version"),
            )
            return SearchState()
        positions = {int(p): int(s) for p, s in doc.get("positions", {}).items()}
        maps = {
            name: MapState(m["directory"], m["fingerprint"])
            for name, m in doc.get("maps", {}).items()
        }
        return SearchState(positions, maps)

    def save(self, state: SearchState) -> None:
        doc = {
            "version": STATE_VERSION,
            "positions": {str(p): s for p, s in sorted(state.positions.items())},
            "maps": {
                name: {"directory": m.directory, "fingerprint": m.fingerprint}
                for name, m in sorted(state.maps.items())
            },
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
