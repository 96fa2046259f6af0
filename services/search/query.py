"""The search query language: a small Lucene-like syntax parsed into an immutable tree.

===================== ================================================================
``machine learning``  either word (the default operator is OR; BM25 ranks docs with both higher)
``"machine learning"`` the phrase; ``"machine learning"~2`` allows two positions of slack
``mach*``             any word starting with ``mach``
``colour~`` ``~2``    words within edit distance 1 (the default) or 2 (``~0`` is exact)
``+a -b`` ``NOT b``   ``a`` must occur, ``b`` must not
``a AND b``, ``a OR b`` boolean operators (NOT binds tighter than AND, AND tighter than OR,
                      and OR tighter than juxtaposition); parentheses group
``title:foo``         look only in field ``title`` (also ``title:"a b"``, ``title:(a OR b)``)
``foo^2``             multiply the clause's score (also phrases and groups)
``\\``                escapes the next character (``c\\+\\+``)
===================== ================================================================

A query with only negative clauses (``-spam``) matches every document without them.
Parsing never consults the index; analysis (lower-casing, stemming) happens when the tree is
turned into a tantivy query or matched against a document, per target field.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


class QuerySyntaxError(ValueError):
    """The query string is malformed; ``position`` is the 0-based character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


class Occur(enum.Enum):
    MUST = "must"
    SHOULD = "should"
    MUST_NOT = "must_not"


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Phrase:
    text: str
    field: str | None = None
    slop: int = 0


@dataclass(frozen=True, slots=True)
class Prefix:
    text: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Fuzzy:
    text: str
    field: str | None = None
    distance: int = 1


@dataclass(frozen=True, slots=True)
class Boost:
    node: Node
    factor: float


@dataclass(frozen=True, slots=True)
class Bool:
    """tantivy's boolean semantics: with a MUST clause the SHOULDs only add score; without one at
    least one SHOULD must match; with neither, every document not excluded matches."""

    clauses: tuple[tuple[Occur, Node], ...]


Leaf = Term | Phrase | Prefix | Fuzzy
Node = Leaf | Boost | Bool

EMPTY = Bool(())
MAX_FUZZY_DISTANCE = 2
MAX_QUERY_LENGTH = 4096
_SPECIAL = set('()":^~*\\')
_KEYWORDS = {"AND", "OR", "NOT"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # WORD PHRASE LPAREN RPAREN PLUS MINUS AND OR NOT COLON CARET TILDE STAR EOF
    text: str
    pos: int
    escaped: bool = False  # a WORD that contained escapes is never a keyword


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
        elif c == "(":
            toks.append(_Tok("LPAREN", c, i))
            i += 1
        elif c == ")":
            toks.append(_Tok("RPAREN", c, i))
            i += 1
        elif c == ":":
            toks.append(_Tok("COLON", c, i))
            i += 1
        elif c == "^":
            toks.append(_Tok("CARET", c, i))
            i += 1
        elif c == "~":
            toks.append(_Tok("TILDE", c, i))
            i += 1
        elif c == "*":
            toks.append(_Tok("STAR", c, i))
            i += 1
        elif c in "+-" and _starts_clause(s, i):
            toks.append(_Tok("PLUS" if c == "+" else "MINUS", c, i))
            i += 1
        elif c == '"':
            j = i + 1
            buf = []
            while j < n and s[j] != '"':
                if s[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(s[j])
                j += 1
            if j >= n:
                raise QuerySyntaxError("unterminated phrase: this '\"' has no closing quote", i)
            toks.append(_Tok("PHRASE", "".join(buf), i))
            i = j + 1
        else:
            j = i
            buf = []
            escaped = False
            while j < n:
                ch = s[j]
                if ch == "\\":
                    if j + 1 >= n:
                        raise QuerySyntaxError("a '\\' at the end escapes nothing", j)
                    buf.append(s[j + 1])
                    escaped = True
                    j += 2
                    continue
                if ch.isspace() or ch in _SPECIAL:
                    break
                buf.append(ch)
                j += 1
            word = "".join(buf)
            kind = word if word in _KEYWORDS and not escaped else "WORD"
            toks.append(_Tok(kind, word, i, escaped))
            i = j
    toks.append(_Tok("EOF", "", n))
    return toks


def _starts_clause(s: str, i: int) -> bool:
    """A '+' or '-' is an operator only at the start of a clause (after space or '(')."""
    return i == 0 or s[i - 1].isspace() or s[i - 1] == "("


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def parse(self) -> Node:
        node = self.sequence(top=True)
        t = self.peek()
        if t.kind != "EOF":
            raise QuerySyntaxError(f"unexpected {t.text!r}", t.pos)
        return node

    def sequence(self, top: bool) -> Node:
        """Juxtaposed clauses: SHOULD unless prefixed with + (MUST) or - / NOT (MUST_NOT)."""
        clauses: list[tuple[Occur, Node]] = []
        while True:
            t = self.peek()
            if t.kind == "EOF":
                break
            if t.kind == "RPAREN":
                if top:
                    raise QuerySyntaxError("unexpected ')' without a matching '('", t.pos)
                break
            clauses.append(self.or_expr())
        if len(clauses) == 1 and clauses[0][0] is Occur.SHOULD:
            return clauses[0][1]
        return Bool(tuple(clauses))

    def or_expr(self) -> tuple[Occur, Node]:
        first = self.and_expr()
        if self.peek().kind != "OR":
            return first
        items = [first]
        while self.peek().kind == "OR":
            op = self.take()
            self._expect_operand(op)
            items.append(self.and_expr())
        return Occur.SHOULD, Bool(tuple((Occur.SHOULD, _standalone(o, n)) for o, n in items))

    def and_expr(self) -> tuple[Occur, Node]:
        first = self.unary()
        if self.peek().kind != "AND":
            return first
        items = [first]
        while self.peek().kind == "AND":
            op = self.take()
            self._expect_operand(op)
            items.append(self.unary())
        clauses = tuple(
            (Occur.MUST_NOT if o is Occur.MUST_NOT else Occur.MUST, n) for o, n in items
        )
        return Occur.SHOULD, Bool(clauses)

    def _expect_operand(self, op: _Tok) -> None:
        t = self.peek()
        if t.kind in ("EOF", "RPAREN", "AND", "OR"):
            raise QuerySyntaxError(f"'{op.text}' needs a clause after it", op.pos)

    def unary(self) -> tuple[Occur, Node]:
        t = self.peek()
        if t.kind in ("PLUS", "MINUS", "NOT"):
            self.take()
            nxt = self.peek()
            if nxt.kind in ("EOF", "RPAREN", "AND", "OR"):
                raise QuerySyntaxError(f"'{t.text}' needs a clause after it", t.pos)
            occur, node = self.unary()
            if t.kind == "PLUS":
                return (Occur.MUST_NOT if occur is Occur.MUST_NOT else Occur.MUST), node
            # a double negation is an affirmation
            return (Occur.MUST if occur is Occur.MUST_NOT else Occur.MUST_NOT), node
        return Occur.SHOULD, self.boosted()

    def boosted(self) -> Node:
        node = self.primary()
        if self.peek().kind == "CARET":
            caret = self.take()
            num = self.peek()
            try:
                adjacent = num.kind == "WORD" and num.pos == caret.pos + 1
                factor = float(num.text) if adjacent else float("nan")
            except ValueError:
                factor = float("nan")
            if not factor >= 0 or factor == float("inf"):
                raise QuerySyntaxError("'^' must be followed by a non-negative number", caret.pos)
            self.take()
            node = Boost(node, factor)
        return node

    def primary(self, field: str | None = None) -> Node:
        t = self.peek()
        if t.kind == "LPAREN":
            self.take()
            inner = self.sequence(top=False)
            close = self.peek()
            if close.kind != "RPAREN":
                raise QuerySyntaxError("'(' is never closed", t.pos)
            self.take()
            return _with_field(inner, field, t.pos) if field else inner
        if t.kind == "PHRASE":
            self.take()
            slop = 0
            if self.peek().kind == "TILDE":
                tilde = self.take()
                slop = self._int_after(tilde, "'~' after a phrase needs a whole number (the slop)")
            return Phrase(t.text, field, slop)
        if t.kind == "WORD":
            self.take()
            if self.peek().kind == "COLON":
                colon = self.take()
                if field is not None:
                    raise QuerySyntaxError("a field name cannot be qualified twice", colon.pos)
                if not t.text:
                    raise QuerySyntaxError("missing field name before ':'", colon.pos)
                nxt = self.peek()
                if nxt.kind not in ("WORD", "PHRASE", "LPAREN"):
                    raise QuerySyntaxError(f"missing value after '{t.text}:'", colon.pos)
                return self.primary(field=t.text)
            if self.peek().kind == "STAR":
                star = self.take()
                after = self.peek()
                if after.kind == "WORD" and after.pos == star.pos + 1:
                    raise QuerySyntaxError(
                        "'*' is only allowed at the end of a word (prefix)", star.pos
                    )
                return Prefix(t.text, field)
            if self.peek().kind == "TILDE":
                tilde = self.take()
                distance = 1
                nxt = self.peek()
                if nxt.kind == "WORD" and nxt.pos == tilde.pos + 1:
                    if not nxt.text.isdigit():
                        raise QuerySyntaxError("'~' must be followed by 0, 1 or 2", tilde.pos)
                    distance = int(self.take().text)
                if distance > MAX_FUZZY_DISTANCE:
                    raise QuerySyntaxError(
                        f"fuzzy distance must be 0, 1 or {MAX_FUZZY_DISTANCE}", tilde.pos
                    )
                return Fuzzy(t.text, field, distance)
            return Term(t.text, field)
        if t.kind == "EOF":
            raise QuerySyntaxError("the query ends where a clause was expected", t.pos)
        if t.kind in ("AND", "OR"):
            raise QuerySyntaxError(f"'{t.text}' needs a clause before it", t.pos)
        if t.kind == "STAR":
            raise QuerySyntaxError("'*' is only allowed at the end of a word (prefix)", t.pos)
        raise QuerySyntaxError(f"unexpected {t.text!r}", t.pos)

    def _int_after(self, tok: _Tok, message: str) -> int:
        nxt = self.peek()
        if nxt.kind != "WORD" or not nxt.text.isdigit():
            raise QuerySyntaxError(message, tok.pos)
        self.take()
        return int(nxt.text)


def _standalone(occur: Occur, node: Node) -> Node:
    """A clause lifted out of its occur context: ``-x`` alone means 'everything except x'."""
    if occur is Occur.MUST_NOT:
        return Bool(((Occur.MUST_NOT, node),))
    return node


def _with_field(node: Node, field: str, pos: int) -> Node:
    """``title:(a b)`` — qualify every unqualified leaf of a group with the field."""
    if isinstance(node, Bool):
        return Bool(tuple((o, _with_field(n, field, pos)) for o, n in node.clauses))
    if isinstance(node, Boost):
        return Boost(_with_field(node.node, field, pos), node.factor)
    if node.field is not None and node.field != field:
        raise QuerySyntaxError(f"field {node.field!r} inside a group for field {field!r}", pos)
    return dataclasses.replace(node, field=field)


def parse_query(text: str) -> Node:
    """Parse ``text``; raises ``QuerySyntaxError`` with a position and a readable reason."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"query longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    return _Parser(text).parse()


def leaves(node: Node, negated: bool = False) -> list[tuple[Leaf, bool]]:
    """Every leaf with whether it sits under a MUST_NOT (so cannot contribute matched terms)."""
    if isinstance(node, Bool):
        out: list[tuple[Leaf, bool]] = []
        for occur, child in node.clauses:
            out.extend(leaves(child, negated or occur is Occur.MUST_NOT))
        return out
    if isinstance(node, Boost):
        return leaves(node.node, negated)
    return [(node, negated)]
