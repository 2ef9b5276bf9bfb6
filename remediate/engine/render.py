"""The templates every line remediate adds comes from (templates/), rendered with a backstop: no value
may change the structure of the config it is written into."""

from __future__ import annotations

from typing import Any

from remediate.errors import Refused
from remediate.hosts.values import UNSAFE_IN_CONFIG

__all__ = ["Verbatim", "render_template"]


def render_template(template: str, **context: Any) -> str:
    """A template from templates/: every block remediate adds comes from there."""
    import jinja2

    from remediate.resources import templates_dir

    def finalize(value: Any) -> Any:
        # The backstop behind remediate.hosts.values: no value may end a directive, open a block or a
        # comment, or start a new line. Only text copied from the config itself is Verbatim.
        if isinstance(value, str) and not isinstance(value, Verbatim) and UNSAFE_IN_CONFIG.intersection(value) - {" "}:
            raise Refused(f"refusing to write {value!r} into {template}: it would change the config's structure")
        return value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
    )
    return env.get_template(template).render(**context)


class Verbatim(str):
    """Text copied byte for byte from the host's own config (a location's body): written as it is."""
