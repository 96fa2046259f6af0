"""The search query language: what each syntax parses to, and clear errors for malformed input."""

from __future__ import annotations

import pytest

from services.search.query import (
    EMPTY,
    Bool,
    Boost,
    Fuzzy,
    Occur,
    Phrase,
    Prefix,
    QuerySyntaxError,
    Term,
    leaves,
    parse_query,
)

S, M, N = Occur.SHOULD, Occur.MUST, Occur.MUST_NOT


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("machine", Term("machine")),
        ("machine learning", Bool(((S, Term("machine")), (S, Term("learning"))))),
        ('"machine learning"', Phrase("machine learning")),
        ('"machine learning"~2', Phrase("machine learning", slop=2)),
        ("mach*", Prefix("mach")),
        ("colour~", Fuzzy("colour", distance=1)),
        ("colour~2", Fuzzy("colour", distance=2)),
        ("colour~0", Fuzzy("colour", distance=0)),
        ("+a -b c", Bool(((M, Term("a")), (N, Term("b")), (S, Term("c"))))),
        ("a NOT b", Bool(((S, Term("a")), (N, Term("b"))))),
        ("a AND b", Bool(((M, Term("a")), (M, Term("b"))))),
        ("a AND NOT b", Bool(((M, Term("a")), (N, Term("b"))))),
        ("a OR b", Bool(((S, Term("a")), (S, Term("b"))))),
        # AND binds tighter than OR
        ("a AND b OR c", Bool(((S, Bool(((M, Term("a")), (M, Term("b"))))), (S, Term("c"))))),
        ("(a OR b) AND c", Bool(((M, Bool(((S, Term("a")), (S, Term("b"))))), (M, Term("c"))))),
        ("-spam", Bool(((N, Term("spam")),))),
        ("title:foo", Term("foo", "title")),
        ('title:"a b"', Phrase("a b", "title")),
        ("title:(a b)", Bool(((S, Term("a", "title")), (S, Term("b", "title"))))),
        ("author.name:ann", Term("ann", "author.name")),
        ("foo^2", Boost(Term("foo"), 2.0)),
        ("(a b)^0.5", Boost(Bool(((S, Term("a")), (S, Term("b")))), 0.5)),
        ("e-mail", Term("e-mail")),
        (r"c\+\+", Term("c++")),
        (r"\AND", Term("AND")),
        ("and or not", Bool(((S, Term("and")), (S, Term("or")), (S, Term("not"))))),
        ("", EMPTY),
        ("   ", EMPTY),
    ],
)
def test_parse_produces_the_expected_tree(text: str, tree: object) -> None:
    assert parse_query(text) == tree


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("(a b", "'(' is never closed", 0),
        ("a b)", "unexpected ')' without a matching '('", 3),
        ('"open phrase', "unterminated phrase", 0),
        ("a AND", "'AND' needs a clause after it", 2),
        ("OR a", "'OR' needs a clause before it", 0),
        ("a OR OR b", "'OR' needs a clause after it", 2),
        ("title:", "missing value after 'title:'", 5),
        ("foo~3", "fuzzy distance must be 0, 1 or 2", 3),
        ("foo~x", "'~' must be followed by 0, 1 or 2", 3),
        ("ma*ch", "'*' is only allowed at the end of a word", 2),
        ("*", "'*' is only allowed at the end of a word", 0),
        ("foo^", "'^' must be followed by a non-negative number", 3),
        ("foo^-1", "'^' must be followed by a non-negative number", 3),
        ('"a b"~', "'~' after a phrase needs a whole number", 5),
        ("a -", "'-' needs a clause after it", 2),
        ("a\\", "a '\\' at the end escapes nothing", 1),
        ("title:author:x", "a field name cannot be qualified twice", 12),
    ],
)
def test_malformed_query_raises_error_naming_reason_and_position(
    text: str, message: str, position: int
) -> None:
    with pytest.raises(QuerySyntaxError) as err:
        parse_query(text)
    assert message in str(err.value)
    assert err.value.position == position


def test_overlong_query_is_rejected() -> None:
    with pytest.raises(QuerySyntaxError, match="longer than"):
        parse_query("a " * 3000)


def test_leaves_marks_clauses_under_a_negation() -> None:
    tree = parse_query('+a -(b "c d") e*')
    assert leaves(tree) == [
        (Term("a"), False),
        (Term("b"), True),
        (Phrase("c d"), True),
        (Prefix("e"), False),
    ]


def test_double_negation_is_a_requirement() -> None:
    assert parse_query("NOT -a b") == Bool(((M, Term("a")), (S, Term("b"))))
