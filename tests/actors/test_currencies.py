"""The embedded ISO 4217 list: real codes in Stripe's lower case, nothing else."""

from __future__ import annotations

import pytest

from actors.currencies import ISO_4217_CODES, is_currency


@pytest.mark.parametrize("code", ["eur", "usd", "gbp", "jpy", "chf", "idr", "sle", "xcg", "zwg"])
def test_current_codes_are_currencies(code: str) -> None:
    assert is_currency(code)


@pytest.mark.parametrize(
    "code",
    ["EUR", "Eur", "xx", "euro", "", "abc", "xts", "xxx", "hrk", "sll", "ang", "zwl", " eur"],
)
def test_upper_case_unknown_withdrawn_and_non_money_codes_are_not(code: str) -> None:
    assert not is_currency(code)


def test_list_is_list_one_of_2026_minus_testing_and_no_currency() -> None:
    assert len(ISO_4217_CODES) == 176
    assert all(len(code) == 3 and code.isascii() and code.islower() for code in ISO_4217_CODES)
