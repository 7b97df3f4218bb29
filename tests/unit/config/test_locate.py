"""Problems shown at their line in the console's editor."""

from __future__ import annotations

from ratelimitd.config.locate import line_of

TEXT = """domain: live
descriptors:
  - key: user
    rate_limit: {unit: fortnight, requests_per_unit: 3}
  - key: ip
    colour: red
"""


def test_a_path_is_found_at_its_line() -> None:
    assert line_of(TEXT, "descriptors[0].rate_limit") == 4
    assert line_of(TEXT, "descriptors[1].colour") == 6
    assert line_of(TEXT, "domain") == 1


def test_a_missing_part_points_at_the_deepest_existing_one() -> None:
    assert line_of(TEXT, "descriptors[1].rate_limit.unit") == 5  # the descriptor that lacks it
    assert line_of(TEXT, "descriptors[7]") == 2


def test_syntax_errors_and_empty_texts() -> None:
    assert line_of("domain: live\ndescriptors: [\n", "(yaml)") == 3
    assert line_of("", "domain") is None
    assert line_of(TEXT, "(root)") == 1
