"""The set of map indexes: which maps are searchable, where each index lives, opening them lazily.

A map's index is created the first time a change for it arrives (or a rebuild asks for it). On
start-up the indexes named in the saved state are reopened; one whose layout no longer matches
the configuration, or that cannot be opened, is reset and flagged for a rebuild from a scan.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from services.search.index import DEFAULT_HEAP_BYTES, MapIndex
from services.search.mapspec import SearchableMaps
from services.search.state import MapState, SearchState

log = logging.getLogger(__name__)


def directory_name(map_name: str) -> str:
    """A file-system-safe, collision-free directory name for a map (readable prefix + hash)."""
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", map_name)[:40]
    return f"{slug}-{hashlib.sha1(map_name.encode()).hexdigest()[:10]}"


class IndexCatalog:
    def __init__(
        self,
        maps: SearchableMaps,
        root: Path | None,
        *,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
    ) -> None:
        """``root`` None keeps every index in RAM."""
        self.maps = maps
        self.root = root
        self.heap_bytes = heap_bytes
        self._indexes: dict[str, MapIndex] = {}
        self._unsearchable: set[str] = set()

    def __iter__(self) -> Iterator[MapIndex]:
        return iter(list(self._indexes.values()))

    def __len__(self) -> int:
        return len(self._indexes)

    def restore(self, state: SearchState) -> list[str]:
        """Reopen the indexes of a saved state; returns the maps that need a rebuild."""
        stale = []
        for name, ms in state.maps.items():
            spec = self.maps.spec_for(name)
            if spec is None:
                log.info("map %r is no longer searchable; dropping its index", name)
                if self.root is not None:
                    shutil.rmtree(self.root / ms.directory, ignore_errors=True)
                continue
            same_layout = ms.fingerprint == spec.fingerprint()
            if not same_layout and self.root is not None:
                log.info("index layout of map %r changed; rebuilding it", name)
                shutil.rmtree(self.root / ms.directory, ignore_errors=True)
            missing = self.root is not None and not (self.root / ms.directory).exists()
            idx = self._create(name)
            if idx is None:
                continue
            if not same_layout or missing or idx.needs_rebuild:
                stale.append(name)
        return stale

    def get(self, map_name: str) -> MapIndex | None:
        return self._indexes.get(map_name)

    def open(self, map_name: str) -> MapIndex | None:
        """The map's index, created on first use; None when the map is not searchable."""
        idx = self._indexes.get(map_name)
        if idx is not None or map_name in self._unsearchable:
            return idx
        return self._create(map_name)

    def _create(self, map_name: str) -> MapIndex | None:
        spec = self.maps.spec_for(map_name)
        if spec is None:
            self._unsearchable.add(map_name)
            return None
        path = None if self.root is None else self.root / directory_name(map_name)
        idx = MapIndex(map_name, spec, path, heap_bytes=self.heap_bytes)
        self._indexes[map_name] = idx
        return idx

    def map_states(self) -> dict[str, MapState]:
        return {
            name: MapState(directory_name(name), idx.spec.fingerprint())
            for name, idx in self._indexes.items()
        }

    def close(self) -> None:
        for idx in self._indexes.values():
            idx.close()
        self._indexes.clear()
