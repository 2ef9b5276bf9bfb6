"""The lab's table of breaks: an unknown cause or variant is a usage error."""

from __future__ import annotations

import pytest

from remediate.errors import UsageError
from remediate.lab.core import find_break


def test_unknown_cause_or_variant_is_a_usage_error() -> None:
    """An unknown cause, an unknown variant, or a missing variant is refused with the choices."""
    with pytest.raises(UsageError, match="causes: down"):
        find_break("nope", None)
    with pytest.raises(UsageError, match="variants: port, slash"):
        find_break("proxy-pass", "nope")
    with pytest.raises(UsageError, match="pick one with --variant"):
        find_break("socket", None)
