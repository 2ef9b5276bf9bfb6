"""Where the data that ships with remediate lives: playbooks/ and templates/."""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir", "playbooks_dir", "templates_dir"]

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The shipped folder ``name``.

    A regular install has it inside the package (pyproject force-includes it);
    a source checkout or editable install has it beside the package.
    """
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"remediate is installed without its {name}/ folder (looked in {_PACKAGE})")


def playbooks_dir() -> Path:
    return data_dir("playbooks")


def templates_dir() -> Path:
    return data_dir("templates")
