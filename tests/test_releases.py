"""The release policy's pure functions: newest release in natural order, and the tags."""

from __future__ import annotations

import pytest

from kmi.errors import KmiError
from kmi.releases import build_tag, newest, tag_of


def test_the_newest_release_is_chosen_in_natural_order() -> None:
    assert newest(["9.9", "9.10", "9.2"]) == "9.10"  # max() of strings said 9.9
    assert newest(["20241231.9", "20250101.1"]) == "20250101.1"
    assert newest(["1.14", "1.7"]) == "1.14"
    assert newest([]) == ""


def test_tags_are_valid_whatever_the_release_holds() -> None:
    assert build_tag("44", "1.7") == "44-1.7"
    assert build_tag("16.0", "6c3b6b2ded57") == "16.0-6c3b6b2ded57"
    assert tag_of("12-2026/01:01") == "12-2026-01-01"
    assert len(tag_of("x" * 300)) == 128
    with pytest.raises(KmiError, match="cannot make a tag"):
        tag_of("...")
