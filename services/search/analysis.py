"""Text analyzers: how text becomes index terms, shared by indexing, query building and matching.

Every analyzer is registered on each tantivy index under ``tg_<name>`` and the very same
``TextAnalyzer`` object tokenizes query text and changed documents in Python, so the three can
never disagree about what a term is.

Names a map configuration may use:

============== ===========================================================================
``default``    split on non-alphanumerics, drop tokens over 40 bytes, lower-case (tantivy's own)
``en_stem``    ``default`` plus the English Snowball stemmer (``running`` → ``run``)
``ascii_fold`` ``default`` plus folding accents to ASCII (``café`` → ``cafe``)
``whitespace`` split on whitespace only, lower-case
``raw``        the whole string is one term, unchanged (identifiers, tags)
============== ===========================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tantivy

MAX_TOKEN_BYTES = 40


def _simple() -> tantivy.TextAnalyzerBuilder:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_TOKEN_BYTES))
        .filter(tantivy.Filter.lowercase())
    )


_BUILDERS: dict[str, Callable[[], tantivy.TextAnalyzer]] = {
    "default": lambda: _simple().build(),
    "en_stem": lambda: _simple().filter(tantivy.Filter.stemmer("english")).build(),
    "ascii_fold": lambda: _simple().filter(tantivy.Filter.ascii_fold()).build(),
    "whitespace": lambda: (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace())
        .filter(tantivy.Filter.lowercase())
        .build()
    ),
    "raw": lambda: tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.raw()).build(),
}

ANALYZER_NAMES: tuple[str, ...] = tuple(sorted(_BUILDERS))


class UnknownAnalyzer(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown analyzer {name!r}; choose one of {', '.join(ANALYZER_NAMES)}")


def tokenizer_name(analyzer: str) -> str:
    """The name the analyzer is registered under in every index."""
    return f"tg_{analyzer}"


@functools.cache
def analyzer(name: str) -> tantivy.TextAnalyzer:
    """The (shared, immutable) analyzer called ``name``."""
    build = _BUILDERS.get(name)
    if build is None:
        raise UnknownAnalyzer(name)
    return build()


def register_all(index: tantivy.Index) -> None:
    """Register every analyzer on ``index``; needed after each open, tantivy does not persist them."""
    for name in ANALYZER_NAMES:
        index.register_tokenizer(tokenizer_name(name), analyzer(name))


def analyze(name: str, text: str) -> list[str]:
    return analyzer(name).analyze(text)
