"""Named statement parameters compile once to positional ones, in the order of first use."""

from __future__ import annotations

import pytest

from occurrence_store.sql import bind, compile_named


def test_names_become_numbers_in_order_of_first_use_and_a_repeated_name_is_one() -> None:
    text, names = compile_named(
        "UPDATE t SET a = :a, b = :b WHERE id = :id AND (a <> :a OR ids = ANY(:ids::text[]))")
    assert text == ("UPDATE t SET a = $1, b = $2 WHERE id = $3 "
                    "AND (a <> $1 OR ids = ANY($4::text[]))")
    assert names == ("a", "b", "id", "ids")


def test_casts_and_positional_statements_are_left_alone() -> None:
    assert compile_named("SELECT $1::int, now()::date") == ("SELECT $1::int, now()::date", ())


def test_compiled_once_per_statement() -> None:
    sql = "SELECT :only_once_here"
    compile_named(sql)
    hits = compile_named.cache_info().hits
    assert bind(sql, {"only_once_here": 1}) == ("SELECT $1", (1,))
    assert compile_named.cache_info().hits == hits + 1


def test_a_missing_or_unused_parameter_is_an_error() -> None:
    with pytest.raises(TypeError, match="'b' not given"):
        bind("SELECT :a, :b", {"a": 1})
    with pytest.raises(TypeError, match=r"not used: \['c'\]"):
        bind("SELECT :a", {"a": 1, "c": 2})
