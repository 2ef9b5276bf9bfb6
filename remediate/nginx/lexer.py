"""Split nginx config bytes into tokens, following ngx_conf_read_token.

Every byte of the input lands in exactly one token (whitespace and comments
too), so joining the tokens' ``raw`` gives back the input. The rules copied
from nginx (src/core/ngx_conf_file.c):

* whitespace is space, tab, CR and LF;
* ``;``, ``{`` and ``}`` end a word; ``}`` *inside* a word is part of it;
* ``#`` starts a comment only at the start of a token;
* a quote at the start of a token opens a string; backslash escapes the next byte;
* after a closing quote only whitespace, ``;``, ``{`` or ``)`` may follow;
* ``${`` inside a word does not open a block.

``*_by_lua_block { ... }`` bodies are Lua, not nginx syntax (ngx_lua parses them
itself); their body is one LUA token, found by matching braces outside Lua
strings and comments.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

from remediate.errors import ConfigParseError

__all__ = ["Kind", "Token", "tokenize", "unescape"]


class Kind(enum.Enum):
    WORD = "word"
    STRING = "string"  # quoted; raw includes the quotes
    LBRACE = "{"
    RBRACE = "}"
    SEMI = ";"
    SPACE = "space"
    COMMENT = "comment"
    LUA = "lua"  # the raw body of a *_by_lua_block


TRIVIA = (Kind.SPACE, Kind.COMMENT)
_SPACES = re.compile(rb"[ \t\r\n]+")
# The bytes a word can run over without a rule applying: not whitespace, ';', '{', '\\' or '$'.
_PLAIN = re.compile(rb"[^ \t\r\n;{\\$]*")


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    raw: bytes
    start: int
    line: int

    @property
    def end(self) -> int:
        return self.start + len(self.raw)

    @property
    def value(self) -> str:
        """The argument as nginx sees it: quotes removed, escapes applied."""
        if self.kind is Kind.STRING:
            return unescape(self.raw[1:-1])
        if self.kind is Kind.WORD:
            return unescape(self.raw)
        return self.raw.decode("utf-8", "surrogateescape")


def unescape(raw: bytes) -> str:
    """nginx's escapes: ``\\"``, ``\\'``, ``\\\\``, ``\\t``, ``\\r``, ``\\n``; others stay as written."""
    if b"\\" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == 0x5C and i + 1 < len(raw):
            nxt = raw[i + 1 : i + 2]
            if nxt in (b'"', b"'", b"\\"):
                out += nxt
                i += 2
                continue
            if nxt in (b"t", b"r", b"n"):
                out += {b"t": b"\t", b"r": b"\r", b"n": b"\n"}[nxt]
                i += 2
                continue
        out.append(ch)
        i += 1
    return out.decode("utf-8", "surrogateescape")


def tokenize(data: bytes, filename: str = "<config>") -> list[Token]:
    return list(_Lexer(data, filename).tokens())


class _Lexer:
    def __init__(self, data: bytes, filename: str) -> None:
        self.data = data
        self.filename = filename
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int) -> ConfigParseError:
        return ConfigParseError(message, file=self.filename, line=line)

    def emit(self, kind: Kind, end: int) -> Token:
        raw = self.data[self.pos : end]
        token = Token(kind, raw, self.pos, self.line)
        self.line += raw.count(b"\n")
        self.pos = end
        return token

    def tokens(self) -> Iterator[Token]:
        data = self.data
        n = len(data)
        words_in_statement: list[str] = []
        while self.pos < n:
            ch = data[self.pos : self.pos + 1]
            if ch in (b" ", b"\t", b"\r", b"\n"):
                space = _SPACES.match(data, self.pos)
                assert space is not None
                yield self.emit(Kind.SPACE, space.end())
            elif ch == b"#":
                end = data.find(b"\n", self.pos)
                yield self.emit(Kind.COMMENT, n if end == -1 else end)
            elif ch in (b";", b"}"):
                words_in_statement = []
                yield self.emit(Kind.SEMI if ch == b";" else Kind.RBRACE, self.pos + 1)
            elif ch == b"{":
                is_lua = bool(words_in_statement) and words_in_statement[0].endswith("_by_lua_block")
                words_in_statement = []
                yield self.emit(Kind.LBRACE, self.pos + 1)
                if is_lua:
                    yield from self.lua_body()
            elif ch in (b'"', b"'"):
                token = self.emit(Kind.STRING, self.string_end(ch))
                if not words_in_statement:  # only the directive name decides anything here
                    words_in_statement.append(token.value)
                yield token
                follow = data[self.pos : self.pos + 1]
                if follow and follow not in (b" ", b"\t", b"\r", b"\n", b";", b"{", b")"):
                    raise self.error(f'unexpected "{follow.decode("latin-1")}"', self.line)
            else:
                token = self.emit(Kind.WORD, self.word_end())
                if not words_in_statement:
                    words_in_statement.append(token.value)
                yield token

    def string_end(self, quote: bytes) -> int:
        data, i, start_line = self.data, self.pos + 1, self.line
        while i < len(data):
            if data[i] == 0x5C:
                i += 2
                continue
            if data[i : i + 1] == quote:
                return i + 1
            i += 1
        raise self.error("unexpected end of file, expecting closing quote", start_line)

    def word_end(self) -> int:
        data, i = self.data, self.pos
        variable = False
        while i < len(data):
            plain = _PLAIN.match(data, i).end()  # type: ignore[union-attr]  # [^...]* always matches
            if plain > i:
                i = plain
                variable = False
                continue
            ch = data[i : i + 1]
            if ch == b"\\":
                i += 2
                variable = False
                continue
            if ch == b"{" and variable:
                i += 1
                variable = False
                continue
            if ch in (b" ", b"\t", b"\r", b"\n", b";", b"{"):
                break
            variable = ch == b"$"
            i += 1
        return min(i, len(data))

    # -- Lua ---------------------------------------------------------------------

    _LONG_OPEN = re.compile(rb"\[(=*)\[")

    def lua_body(self) -> Iterator[Token]:
        """Everything up to the ``}`` that closes the Lua block, as one LUA token."""
        data, i, depth, start_line = self.data, self.pos, 1, self.line
        while i < len(data):
            ch = data[i : i + 1]
            if ch in (b'"', b"'"):
                j = i + 1
                while j < len(data) and data[j : j + 1] != ch:
                    j += 2 if data[j] == 0x5C else 1
                i = j + 1
            elif data.startswith(b"--", i):
                long = self._LONG_OPEN.match(data, i + 2)
                if long:
                    close = data.find(b"]" + long.group(1) + b"]", long.end())
                    i = len(data) if close == -1 else close + len(long.group(1)) + 2
                else:
                    nl = data.find(b"\n", i)
                    i = len(data) if nl == -1 else nl
            elif ch == b"[" and (long := self._LONG_OPEN.match(data, i)):
                close = data.find(b"]" + long.group(1) + b"]", long.end())
                i = len(data) if close == -1 else close + len(long.group(1)) + 2
            elif ch == b"{":
                depth += 1
                i += 1
            elif ch == b"}":
                depth -= 1
                if depth == 0:
                    if i > self.pos:
                        yield self.emit(Kind.LUA, i)
                    return
                i += 1
            else:
                i += 1
        raise self.error('unexpected end of file, expecting "}" to close the lua block', start_line)
