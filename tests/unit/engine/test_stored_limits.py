"""The transport-free parts of stored limits: preconditions, validation messages and change summaries."""

from __future__ import annotations

import pytest

from ratelimitd.engine.stored_limits import LimitsEditor, LimitsError, parse_precondition

LIVE = "domain: live\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: %d}\n"


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "expected"),
    [(None, "*", "*"), ('"12"', None, "12"), ("12", None, "12"), ('W/"7"', None, "7"), ('"3"', " * ", "*")],
)
def test_preconditions(if_match: str | None, if_none_match: str | None, expected: str) -> None:
    assert parse_precondition(if_match, if_none_match) == expected


@pytest.mark.parametrize(("if_match", "if_none_match"), [(None, None), ('"abc"', None), ("", None), (None, "x")])
def test_a_missing_or_unreadable_precondition_is_refused(if_match: str | None, if_none_match: str | None) -> None:
    with pytest.raises(LimitsError) as err:
        parse_precondition(if_match, if_none_match)
    assert err.value.kind == "precondition_required"


def test_validation_names_the_domain_path_and_reason() -> None:
    editor = LimitsEditor.__new__(LimitsEditor)  # validate() uses no state
    assert editor.validate("live", LIVE % 3).rules[0].requests_per_unit == 3
    with pytest.raises(LimitsError) as err:
        editor.validate("live", LIVE.replace("minute", "fortnight") % 3)
    assert err.value.kind == "invalid"
    assert err.value.problems == ["live: descriptors[0].rate_limit: invalid rate limit unit 'fortnight'"]
    with pytest.raises(LimitsError) as err:
        editor.validate("live", "domain: live\ndescriptors: [")
    assert err.value.problems[0].startswith("live: (yaml): invalid YAML")


def test_the_summary_says_what_changed() -> None:
    editor = LimitsEditor.__new__(LimitsEditor)
    old, new = editor.validate("live", LIVE % 3), editor.validate("live", LIVE % 30)
    assert LimitsEditor._summary(None, old) == "+ live.user: 3 per minute, fixed_window"
    assert (
        LimitsEditor._summary(old, new)
        == "~ live.user: 3 per minute, fixed_window -> live.user: 30 per minute, fixed_window"
    )
    assert LimitsEditor._summary(old, None) == "- live.user: 3 per minute, fixed_window"
    assert LimitsEditor._summary(old, old) == "no change in limits"
