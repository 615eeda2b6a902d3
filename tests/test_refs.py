"""Names, aliases, tags and NAME[:VERSION|@ALIAS] references."""

from __future__ import annotations

import pytest

from mlops_magics.errors import InvalidInputError
from mlops_magics.registry.refs import ModelRef, check_alias, check_name, parse_ref, parse_tag, parse_tags


@pytest.mark.parametrize("text, expected", [
    ("iris", ModelRef("iris")),
    ("iris:3", ModelRef("iris", version=3)),
    ("iris:latest", ModelRef("iris")),
    ("iris@production", ModelRef("iris", alias="production")),
    ("  my.model-v2_x:12 ", ModelRef("my.model-v2_x", version=12)),
])
def test_parse_ref_accepts_the_three_forms(text: str, expected: ModelRef) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("iris:0", "whole number from 1"),
    ("iris:two", "whole number from 1"),
    ("iris@", "Invalid alias ''"),
    ("", "A model reference is needed"),
    ("bad name:1", "Invalid model name 'bad name'"),
])
def test_parse_ref_rejects_malformed_references_saying_the_allowed_forms(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        parse_ref(text)


@pytest.mark.parametrize("name", ["", "-iris", "iris classifier", "a/b", "x" * 129, "iris:1"])
def test_invalid_model_names_get_the_allowed_pattern(name: str) -> None:
    with pytest.raises(InvalidInputError, match="letters, digits, '.', '_' or '-'"):
        check_name(name)


def test_alias_must_start_with_a_letter_and_latest_is_reserved() -> None:
    assert check_alias("production") == "production"
    with pytest.raises(InvalidInputError, match="starting with a letter"):
        check_alias("2")
    with pytest.raises(InvalidInputError, match="reserved"):
        check_alias("latest")


def test_parse_tag_splits_on_the_first_equals_and_keeps_empty_values() -> None:
    assert parse_tag("query=a=b") == ("query", "a=b")
    assert parse_tag("note=") == ("note", "")
    assert parse_tags(["a=1", "b=2", "a=3"]) == {"a": "3", "b": "2"}


@pytest.mark.parametrize("text, fragment", [
    ("team", "write tags as key=value"),
    ("=cv", "Invalid tag key ''"),
    ("bad key=1", "Invalid tag key 'bad key'"),
])
def test_malformed_tags_are_refused_with_the_expected_form(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        parse_tag(text)


@pytest.mark.parametrize("text", ["x:99999999999999999999999", "x:9223372036854775808", "x:" + "9" * 5000, "x:²",
                                  "x:\u0661"])
def test_a_version_beyond_64_bits_or_not_in_ascii_digits_is_refused_with_the_range(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"a version is a whole number from 1 to 9223372036854775807") as caught:
        parse_ref(text)
    assert len(str(caught.value)) < 300  # a 5,000-digit value is not echoed whole


def test_the_largest_64_bit_version_is_a_valid_reference() -> None:
    assert parse_ref("x:9223372036854775807") == ModelRef("x", version=2**63 - 1)
    with pytest.raises(InvalidInputError, match="from 1 to"):
        ModelRef("x", version=2**63)
