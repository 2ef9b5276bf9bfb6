"""Minimal edits: a change to a config file is a patch at known byte offsets.

Every byte outside a patch's span stays as it was: comments, indentation,
tabs, CRLF. Lines remediate adds carry ``# managed by remediate`` so a human
(and the next run) can tell them apart.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from remediate.nginx.lexer import Kind
from remediate.nginx.parser import ConfigFile, Directive, Trivia

__all__ = [
    "MARKER",
    "Patch",
    "apply_patches",
    "insert_in_block",
    "quote",
    "remove_directive",
    "render_directive",
    "replace_args",
]

MARKER = "# managed by remediate"
_SAFE_WORD = re.compile(r"^[^\s;{}\"'#\\]+$")


@dataclass(frozen=True)
class Patch:
    """Replace ``data[start:end]`` with ``text``."""

    path: str
    start: int
    end: int
    text: bytes


def apply_patches(data: bytes, patches: Sequence[Patch]) -> bytes:
    ordered = sorted(patches, key=lambda p: (p.start, p.end))
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise ValueError(f"overlapping patches at bytes {before.start}-{before.end} and {after.start}")
    out = bytearray()
    pos = 0
    for patch in ordered:
        if not 0 <= patch.start <= patch.end <= len(data):
            raise ValueError(f"patch span {patch.start}-{patch.end} is outside the file")
        out += data[pos : patch.start] + patch.text
        pos = patch.end
    out += data[pos:]
    return bytes(out)


def quote(arg: str) -> str:
    """An argument as nginx must read it back: bare when safe, else double-quoted with escapes."""
    if arg and _SAFE_WORD.match(arg) and not arg.endswith("$"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_directive(name: str, args: Sequence[str], *, marker: bool = True) -> str:
    text = " ".join([name, *(quote(a) for a in args)]) + ";"
    return f"{text}  {MARKER}" if marker else text


def replace_args(directive: Directive, args: Sequence[str]) -> Patch:
    """Rewrite a simple directive's arguments in place; its name and terminator stay."""
    tokens = directive.arg_tokens
    text = " ".join(quote(a) for a in args).encode()
    if tokens:
        return Patch(directive.file, tokens[0].start, tokens[-1].end, text)
    return Patch(directive.file, directive.terminator.start, directive.terminator.start, b" " + text)


def remove_directive(file: ConfigFile, directive: Directive) -> Patch:
    """Remove a directive and the rest of its line when the line holds nothing else."""
    start, end = directive.start, directive.end
    data = file.data
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", end)
    line_end = len(data) if line_end == -1 else line_end + 1
    before, after = data[line_start:start], data[end:line_end]
    trailing = after.strip()
    if not before.strip() and (not trailing or trailing.startswith(b"#" + MARKER[1:].encode())):
        return Patch(file.path, line_start, line_end, b"")
    return Patch(file.path, start, end, b"")


def insert_in_block(file: ConfigFile, block: Directive, lines: Sequence[str], *, at_end: bool = False) -> Patch:
    """Insert whole lines into ``block``, indented like its children, in the file's line ending."""
    newline = file.newline
    indent = _child_indent(file, block)
    text = b"".join(indent + line.encode() + newline for line in lines)
    data = file.data
    if at_end:
        assert block.close is not None
        pos = data.rfind(b"\n", 0, block.close.start) + 1
        if data[pos : block.close.start].strip():
            # "}" shares its line with content: start a new line first.
            return Patch(file.path, block.close.start, block.close.start, newline + text)
        return Patch(file.path, pos, pos, text)
    open_end = block.terminator.end
    eol = data.find(b"\n", open_end)
    if eol == -1 or (data[open_end:eol].strip(b" \t\r") and not data[open_end:eol].strip().startswith(b"#")):
        return Patch(file.path, open_end, open_end, newline + text.rstrip(b"\r\n"))
    return Patch(file.path, eol + 1, eol + 1, text)


def _child_indent(file: ConfigFile, block: Directive) -> bytes:
    data = file.data
    for node in block.block or ():
        if isinstance(node, Trivia) and node.token.kind is Kind.SPACE:
            continue
        start = node.token.start if isinstance(node, Trivia) else node.start
        line_start = data.rfind(b"\n", 0, start) + 1
        prefix = data[line_start:start]
        if not prefix.strip():
            return prefix
    line_start = data.rfind(b"\n", 0, block.start) + 1
    own = data[line_start : block.start]
    own = own if not own.strip() else b""
    unit = b"\t" if own.startswith(b"\t") else b"    "
    return own + unit
