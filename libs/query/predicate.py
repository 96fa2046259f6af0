"""Predicate trees and where-maps compiled once into nested closures.

``compile_filter(predicate, where, principal=...)`` turns a TopGun ``PredicateNode`` tree
(PROTOCOL.md 6.2) or a ``where`` map into a function ``(key, value) -> bool``. All the
decisions that do not depend on the row — which operator, which field path, the kind of the
comparison value, a compiled regex, a membership set — are taken here, so evaluating a row is
a handful of dictionary lookups and comparisons, never a walk over the tree.

Semantics (HEAD ``predicate.rs`` unless said otherwise; value rules in :mod:`.values`):

* ``attribute`` is a dot path into the record value; ``"_key"`` is the record key.
* SQL-style nulls: every leaf operator is false when the field is missing or ``null``
  (``neq`` included), except ``isNull`` (true when missing or null) and ``isNotNull``.
  A leaf whose comparison value is missing or ``null`` is false as well (HEAD decodes a
  ``null`` value as "no value").
* ``valueRef`` (``"data.<path>"`` against the record, ``"auth.<path>"`` against the
  principal given to :func:`compile_filter`) takes precedence over ``value``; a reference
  that does not resolve makes the leaf false. ``isNull``/``isNotNull`` on an attribute
  ``"auth"`` or ``"auth.<path>"`` test the principal, as HEAD does.
* ``like``: SQL ``%`` and ``_``, whole string, case-insensitive. ``regex``: unanchored search,
  Python ``re`` syntax, compiled once; a pattern that does not compile is a
  :class:`QueryError`. ``startsWith``/``endsWith`` are case-sensitive.
* ``in``: with an array value, the field equals one of its items; with a scalar value, the
  field is an array holding it. ``between``: ``[low, high]``, inclusive.
  ``containsAll``/``containsAny``: the field is an array; the value an array or a scalar
  (``containsAll`` of nothing is true, ``containsAny`` of nothing false).
* ``and``/``or`` over ``children`` (empty ``and`` true, empty ``or`` false); ``not`` negates
  its first child (no child: true).
* Operators this server does not implement — the full-text ``contains``, ``match``,
  ``matchPhrase``, ``matchPrefix`` and any unknown name — compile to a filter that matches
  nothing; they never raise, at compile time or per row.
* A leaf without ``attribute`` matches nothing (as at HEAD).
* Malformed trees — a node that is not a map, ``op``/``attribute``/``valueRef`` that are not
  strings, ``children`` that is not an array — raise :class:`QueryError` naming the place.
* ``where`` (used only when ``predicate`` is absent): every entry must equal the top-level
  field of the same name (a present ``null`` equals ``null``); an empty map matches all.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from libs.query.errors import QueryError
from libs.query.values import MISSING, get_path, is_number, values_equal

Filter = Callable[[str, Any], bool]
"""A compiled filter: ``(record key, decoded record value) -> bool``."""

KEY_FIELD: Final = "_key"
MAX_DEPTH: Final = 128

LEAF_OPS: Final = frozenset(
    {
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "like",
        "regex",
        "in",
        "between",
        "containsAll",
        "containsAny",
        "startsWith",
        "endsWith",
    }
)
NULL_OPS: Final = frozenset({"isNull", "isNotNull"})
LOGIC_OPS: Final = frozenset({"and", "or", "not"})
KNOWN_OPS: Final = LEAF_OPS | NULL_OPS | LOGIC_OPS

_ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def match_all(key: str, value: Any) -> bool:
    """The filter of a query with neither ``predicate`` nor ``where``."""
    return True


def match_none(key: str, value: Any) -> bool:
    """The filter of an operator this server does not implement."""
    return False


def compile_filter(
    predicate: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    *,
    principal: Mapping[str, Any] | None = None,
) -> Filter:
    """Compile ``predicate`` (preferred) or ``where`` into a ``(key, value) -> bool`` filter.

    ``principal`` is the caller's identity (e.g. JWT claims) that ``valueRef: "auth.<path>"``
    resolves against. Raises :class:`QueryError` for a malformed tree or a bad regex.
    """
    if predicate is not None:
        return _compile_node(predicate, principal, "predicate", 0)
    if where is not None:
        return compile_where(where)
    return match_all


# ---------------------------------------------------------------------------
# where-maps
# ---------------------------------------------------------------------------


def compile_where(where: Mapping[str, Any]) -> Filter:
    """A conjunction of exact equalities on top-level fields."""
    if not isinstance(where, Mapping):
        raise QueryError(f"where: must be a map of field to value, got {_kind(where)}")
    items: list[tuple[str, Any]] = []
    for field, expected in where.items():
        if not isinstance(field, str):
            raise QueryError(f"where: field names must be strings, got {_kind(field)}")
        items.append((field, expected))
    if not items:
        return match_all
    if len(items) == 1:
        field, expected = items[0]
        if type(expected) is str:
            exp_s: str = expected

            def where_one_str(key: str, value: Any) -> bool:
                try:
                    return bool(value.get(field) == exp_s)
                except AttributeError:
                    return False

            return where_one_str
    pairs = tuple(items)

    def where_all(key: str, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name, exp in pairs:
            actual = value.get(name, MISSING)
            if actual is MISSING or not values_equal(actual, exp):
                return False
        return True

    return where_all


# ---------------------------------------------------------------------------
# predicate trees
# ---------------------------------------------------------------------------


def _compile_node(node: Any, principal: Mapping[str, Any] | None, where: str, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise QueryError(f"{where}: predicate nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise QueryError(f"{where}: a predicate node must be a map, got {_kind(node)}")
    op = node.get("op")
    if not isinstance(op, str):
        raise QueryError(f"{where}.op: must be a string operator name, got {_kind(op)}")
    attribute = node.get("attribute")
    if attribute is not None and not isinstance(attribute, str):
        raise QueryError(f"{where}.attribute: must be a string path, got {_kind(attribute)}")
    value_ref = node.get("valueRef")
    if value_ref is not None and not isinstance(value_ref, str):
        raise QueryError(f"{where}.valueRef: must be a string, got {_kind(value_ref)}")
    children = node.get("children")
    if children is not None and not isinstance(children, list | tuple):
        raise QueryError(f"{where}.children: must be an array of nodes, got {_kind(children)}")

    if op in LOGIC_OPS:
        compiled = [
            _compile_node(child, principal, f"{where}.children[{i}]", depth + 1)
            for i, child in enumerate(children or ())
        ]
        if op == "and":
            return _and(compiled)
        if op == "or":
            return _or(compiled)
        return _not(compiled[0]) if compiled else match_all
    if op in NULL_OPS:
        return _compile_null_check(op, attribute, principal)
    if op in LEAF_OPS:
        if attribute is None:
            return match_none
        return _compile_leaf(op, attribute, node, value_ref, principal, where)
    return match_none


def _and(fs: Sequence[Filter]) -> Filter:
    if not fs:
        return match_all
    if len(fs) == 1:
        return fs[0]
    if len(fs) == 2:
        f0, f1 = fs

        def and2(key: str, value: Any) -> bool:
            return f0(key, value) and f1(key, value)

        return and2
    fs_t = tuple(fs)

    def and_n(key: str, value: Any) -> bool:
        return all(f(key, value) for f in fs_t)

    return and_n


def _or(fs: Sequence[Filter]) -> Filter:
    if not fs:
        return match_none
    if len(fs) == 1:
        return fs[0]
    if len(fs) == 2:
        f0, f1 = fs

        def or2(key: str, value: Any) -> bool:
            return f0(key, value) or f1(key, value)

        return or2
    fs_t = tuple(fs)

    def or_n(key: str, value: Any) -> bool:
        return any(f(key, value) for f in fs_t)

    return or_n


def _not(f: Filter) -> Filter:
    def negate(key: str, value: Any) -> bool:
        return not f(key, value)

    return negate


def _compile_null_check(
    op: str, attribute: str | None, principal: Mapping[str, Any] | None
) -> Filter:
    if attribute is None:
        return match_none
    want_null = op == "isNull"
    if attribute == "auth" or attribute.startswith("auth."):
        # Resolved against the principal once: the answer is the same for every row.
        if attribute == "auth":
            is_null = principal is None
        else:
            found = MISSING if principal is None else get_path(principal, attribute[5:].split("."))
            is_null = found is MISSING or found is None
        return match_all if is_null == want_null else match_none
    getter = field_getter(attribute)
    if want_null:

        def is_null_fn(key: str, value: Any) -> bool:
            return getter(key, value) is None

        return is_null_fn

    def is_not_null_fn(key: str, value: Any) -> bool:
        return getter(key, value) is not None

    return is_not_null_fn


def field_getter(attribute: str) -> Callable[[str, Any], Any]:
    """``(key, value) -> field`` for a dot path or ``_key``; ``None`` when missing or null."""
    if attribute == KEY_FIELD:
        return _get_key
    segments = attribute.split(".")
    if len(segments) == 1:
        name = segments[0]

        def get_top(key: str, value: Any) -> Any:
            try:
                return value.get(name)
            except AttributeError:
                return None

        return get_top
    segs = tuple(segments)

    def get_nested(key: str, value: Any) -> Any:
        current = value
        for segment in segs:
            try:
                current = current.get(segment)
            except AttributeError:
                return None
            if current is None:
                return None
        return current

    return get_nested


def _get_key(key: str, value: Any) -> Any:
    return key


def _compile_leaf(
    op: str,
    attribute: str,
    node: Mapping[str, Any],
    value_ref: str | None,
    principal: Mapping[str, Any] | None,
    where: str,
) -> Filter:
    getter = field_getter(attribute)
    if value_ref is not None:
        namespace, _, rest = value_ref.partition(".")
        if namespace == "auth":
            if principal is None:
                return match_none
            expected = principal if not rest else get_path(principal, rest.split("."))
            if expected is MISSING or expected is None:
                return match_none
            return _with_constant(op, getter, attribute, expected, where)
        if namespace == "data":
            return _with_record_ref(op, getter, tuple(rest.split(".")) if rest else ())
        return match_none
    expected = node.get("value")
    if expected is None:
        return match_none
    return _with_constant(op, getter, attribute, expected, where)


def _with_record_ref(op: str, getter: Callable[[str, Any], Any], ref: tuple[str, ...]) -> Filter:
    """A leaf whose comparison value is another field of the same record."""

    def compare_to_field(key: str, value: Any) -> bool:
        actual = getter(key, value)
        if actual is None:
            return False
        expected = get_path(value, ref) if ref else value
        if expected is MISSING or expected is None:
            return False
        return _dynamic_test(op, actual, expected)

    return compare_to_field


def _dynamic_test(op: str, actual: Any, expected: Any) -> bool:
    """Evaluate one operator on two values known only per row (``valueRef: data.*``)."""
    if op == "like" or op == "regex":
        if not isinstance(actual, str) or not isinstance(expected, str):
            return False
        try:
            rx = _cached_like(expected) if op == "like" else _cached_regex(expected)
        except re.error:
            return False
        return rx(actual) is not None
    return _constant_test(op, expected)(actual)


@functools.lru_cache(maxsize=256)
def _cached_like(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return like_to_regex(pattern).fullmatch


@functools.lru_cache(maxsize=256)
def _cached_regex(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(pattern).search


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """SQL LIKE → a case-insensitive regex over the whole string (``%`` any run, ``_`` one)."""
    parts = []
    for ch in pattern:
        if ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _with_constant(
    op: str, getter: Callable[[str, Any], Any], attribute: str, expected: Any, where: str
) -> Filter:
    """A leaf whose comparison value is known now; the hot ops get hand-specialised closures."""
    top = attribute if attribute != KEY_FIELD and "." not in attribute else None
    if top is not None:
        fast = _fast_top_level(op, top, expected)
        if fast is not None:
            return fast
    if op == "regex":
        if not isinstance(expected, str):
            return match_none
        try:
            search = re.compile(expected).search
        except re.error as exc:
            raise QueryError(f"{where}.value: invalid regex {expected!r}: {exc}") from None

        def regex_fn(key: str, value: Any) -> bool:
            actual = getter(key, value)
            return isinstance(actual, str) and search(actual) is not None

        return regex_fn
    test = _constant_test(op, expected)
    if test is _never:
        return match_none

    def leaf(key: str, value: Any) -> bool:
        actual = getter(key, value)
        return actual is not None and test(actual)

    return leaf


def _fast_top_level(op: str, name: str, expected: Any) -> Filter | None:
    """Single-field equality and ordering against a string or number, inlined."""
    t = type(expected)
    if op == "eq" and t is str:

        def eq_str(key: str, value: Any) -> bool:
            try:
                return bool(value.get(name) == expected)
            except AttributeError:
                return False

        return eq_str
    if t is not int and t is not float:
        return None
    if isinstance(expected, float) and math.isnan(expected):
        return None
    if op == "eq":

        def eq_num(key: str, value: Any) -> bool:
            try:
                actual = value.get(name)
            except AttributeError:
                return False
            ta = type(actual)
            return (ta is int or ta is float) and actual == expected

        return eq_num
    cmp = _ORDERED.get(op)
    if cmp is None:
        return None

    def ordered_num(key: str, value: Any) -> bool:
        try:
            actual = value.get(name)
        except AttributeError:
            return False
        ta = type(actual)
        return (ta is int or ta is float) and cmp(actual, expected)

    return ordered_num


def _never(actual: Any) -> bool:
    return False


def _constant_test(op: str, expected: Any) -> Callable[[Any], bool]:
    """``actual -> bool`` for a non-null ``actual`` and a fixed, non-null ``expected``."""
    if op == "eq":
        return _equals_test(expected)
    if op == "neq":
        eq = _equals_test(expected)
        return lambda actual: not eq(actual)
    if op in _ORDERED:
        return _ordered_test(op, expected)
    if op == "between":
        return _between_test(expected)
    if op == "in":
        if isinstance(expected, list | tuple):
            return _membership_test(expected)
        return _array_holds_test(expected)
    if op == "containsAll" or op == "containsAny":
        items = list(expected) if isinstance(expected, list | tuple) else [expected]
        want_all = op == "containsAll"

        def contains(actual: Any) -> bool:
            if not isinstance(actual, list | tuple):
                return False
            hits = (any(values_equal(a, item) for a in actual) for item in items)
            return all(hits) if want_all else any(hits)

        return contains
    if op == "startsWith" or op == "endsWith":
        if not isinstance(expected, str):
            return _never
        prefix: str = expected
        if op == "startsWith":
            return lambda actual: isinstance(actual, str) and actual.startswith(prefix)
        return lambda actual: isinstance(actual, str) and actual.endswith(prefix)
    if op == "like":
        if not isinstance(expected, str):
            return _never
        full = like_to_regex(expected).fullmatch
        return lambda actual: isinstance(actual, str) and full(actual) is not None
    return _never


def _equals_test(expected: Any) -> Callable[[Any], bool]:
    t = type(expected)
    if t is str:
        return lambda actual: bool(actual == expected)
    if t is bool:
        return lambda actual: actual is expected or (type(actual) is bool and actual == expected)
    if is_number(expected):
        if isinstance(expected, float) and math.isnan(expected):
            return _never
        return lambda actual: is_number(actual) and bool(actual == expected)
    return lambda actual: values_equal(actual, expected)


def _ordered_test(op: str, expected: Any) -> Callable[[Any], bool]:
    if is_number(expected):
        cmp = _ORDERED[op]
        return lambda actual: is_number(actual) and bool(cmp(actual, expected))
    if isinstance(expected, str):
        cmp = _ORDERED[op]
        return lambda actual: isinstance(actual, str) and bool(cmp(actual, expected))
    return _never


def _between_test(expected: Any) -> Callable[[Any], bool]:
    if not isinstance(expected, list | tuple) or len(expected) != 2:
        return _never
    low, high = expected
    if is_number(low) and is_number(high):
        return lambda actual: is_number(actual) and bool(low <= actual <= high)
    if isinstance(low, str) and isinstance(high, str):
        return lambda actual: isinstance(actual, str) and low <= actual <= high
    return _never  # mixed or non-orderable bounds: nothing is between them


def _membership_test(items: Sequence[Any]) -> Callable[[Any], bool]:
    """The field equals one of ``items``; strings and numbers via one set lookup."""
    fast: set[Any] = set()
    bools: set[bool] = set()
    others: list[Any] = []
    for item in items:
        if isinstance(item, bool):
            bools.add(item)
        elif isinstance(item, str) or is_number(item):
            if not (isinstance(item, float) and math.isnan(item)):
                fast.add(item)
        elif item is not None:
            others.append(item)
    fast_f = frozenset(fast)

    def member(actual: Any) -> bool:
        ta = type(actual)
        if ta is str or ta is int or ta is float:
            return actual in fast_f
        if ta is bool:
            return actual in bools
        if isinstance(actual, str) or is_number(actual):
            return actual in fast_f
        return any(values_equal(actual, other) for other in others)

    return member


def _array_holds_test(expected: Any) -> Callable[[Any], bool]:
    def holds(actual: Any) -> bool:
        return isinstance(actual, list | tuple) and any(values_equal(a, expected) for a in actual)

    return holds


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "a map",
    }.get(type(value), type(value).__name__)
