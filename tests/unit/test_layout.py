"""The README's Layout section is the tree: every package and module under remediate/ is named there,
and every name it gives exists."""

from __future__ import annotations

import re

import pytest
from support import ROOT

pytestmark = pytest.mark.unit

PACKAGE = ROOT / "remediate"


def _layout() -> dict[str, str]:
    """The Layout block: each entry under remediate/ (``cli/``, ``api.py``) → its description."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout") :]
    block = block[block.index("```\nremediate/\n") + len("```\nremediate/\n") : block.index("\nplaybooks/")]
    entries: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        head = re.match(r"^  (\S+)\s+(.*)$", line)
        if head:
            name = head.group(1)
            entries[name] = head.group(2)
        else:
            entries[name] += " " + line.strip()
    return entries


def test_every_entry_of_the_layout_exists_and_every_module_is_in_it() -> None:
    entries = _layout()
    tree = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    tree |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert set(entries) == tree, (
        f"README names {sorted(set(entries) - tree)}; the tree has {sorted(tree - set(entries))}"
    )
    for folder in (e for e in entries if e.endswith("/")):
        modules = {p.stem for p in (PACKAGE / folder).glob("*.py")} - {"__init__", "__main__"}
        said = set(re.findall(r"[a-z_]+", entries[folder]))
        assert modules <= said, f"{folder}: the README does not name {sorted(modules - said)}"
