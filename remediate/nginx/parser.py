"""Turn one config file's bytes into a tree of directives that knows where each came from.

Every byte belongs to the tree: whitespace and comments between directives
are kept as trivia, and each directive keeps its own tokens. ``dump`` walks
the tree and joins those bytes, so parse-then-dump returning the input proves
that no byte was lost or invented. Nothing here reads a disk: the text comes
from the host (``nginx -T``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from remediate.errors import ConfigParseError
from remediate.nginx.lexer import TRIVIA, Kind, Token, tokenize

__all__ = ["ConfigFile", "Directive", "Trivia", "dump", "parse"]


@dataclass(eq=False)
class Trivia:
    """Whitespace or a comment between directives."""

    token: Token

    @property
    def is_comment(self) -> bool:
        return self.token.kind is Kind.COMMENT


@dataclass(eq=False)
class Directive:
    """One directive, simple (``name args;``) or block (``name args { ... }``)."""

    name: str
    args: list[str]
    file: str
    line: int
    head: list[Token]  # name, args and the trivia between them, through ';' or '{'
    block: list[Node] | None = None
    close: Token | None = None  # the '}' of a block
    parent: Directive | None = None
    #: For ``include``: the files it pulled in, in nginx's order.
    included: list[ConfigFile] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.head[0].start

    @property
    def end(self) -> int:
        return self.close.end if self.close is not None else self.head[-1].end

    @property
    def arg_tokens(self) -> list[Token]:
        return [t for t in self.head[1:] if t.kind in (Kind.WORD, Kind.STRING, Kind.LUA)]

    @property
    def terminator(self) -> Token:
        """The ';' or '{' that ends the head."""
        return self.head[-1]

    @property
    def children(self) -> list[Directive]:
        return [n for n in self.block or () if isinstance(n, Directive)]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:
        return f"<{self.name} {' '.join(self.args)} @ {self.where}>"


Node = Directive | Trivia


@dataclass(eq=False)
class ConfigFile:
    path: str
    data: bytes
    nodes: list[Node]

    @property
    def directives(self) -> list[Directive]:
        return [n for n in self.nodes if isinstance(n, Directive)]

    @property
    def newline(self) -> bytes:
        """The file's own line ending, so inserted lines match it."""
        return b"\r\n" if b"\r\n" in self.data else b"\n"

    def walk(self) -> Iterator[Directive]:
        """Every directive in this file, depth first, in file order (includes not followed)."""
        stack: list[Iterator[Node]] = [iter(self.nodes)]
        while stack:
            node = next(stack[-1], None)
            if node is None:
                stack.pop()
            elif isinstance(node, Directive):
                yield node
                if node.block is not None:
                    stack.append(iter(node.block))


def parse(data: bytes, path: str = "<config>") -> ConfigFile:
    tokens = tokenize(data, path)
    parser = _Parser(tokens, path)
    nodes = parser.block(None)
    return ConfigFile(path, data, nodes)


class _Parser:
    def __init__(self, tokens: list[Token], path: str) -> None:
        self.tokens = tokens
        self.path = path
        self.i = 0

    def error(self, message: str, line: int) -> ConfigParseError:
        return ConfigParseError(message, file=self.path, line=line)

    def block(self, parent: Directive | None) -> list[Node]:
        nodes: list[Node] = []
        tokens = self.tokens
        while self.i < len(tokens):
            tok = tokens[self.i]
            if tok.kind in TRIVIA:
                nodes.append(Trivia(tok))
                self.i += 1
            elif tok.kind is Kind.RBRACE:
                if parent is None:
                    raise self.error('unexpected "}"', tok.line)
                return nodes
            elif tok.kind in (Kind.SEMI, Kind.LBRACE):
                raise self.error(f'unexpected "{tok.raw.decode()}"', tok.line)
            else:
                nodes.append(self.directive(parent))
        if parent is not None:
            raise self.error('unexpected end of file, expecting "}"', tokens[-1].line if tokens else 1)
        return nodes

    def directive(self, parent: Directive | None) -> Directive:
        tokens = self.tokens
        first = tokens[self.i]
        head = [first]
        self.i += 1
        while True:
            if self.i >= len(tokens):
                raise self.error('unexpected end of file, expecting ";" or "}"', first.line)
            tok = tokens[self.i]
            head.append(tok)
            self.i += 1
            if tok.kind in (Kind.SEMI, Kind.LBRACE):
                break
            if tok.kind is Kind.RBRACE:
                raise self.error('unexpected "}"', tok.line)
        node = Directive(
            name=first.value,
            args=[t.value for t in head[1:] if t.kind in (Kind.WORD, Kind.STRING)],
            file=self.path,
            line=first.line,
            head=head,
            parent=parent,
        )
        if head[-1].kind is Kind.LBRACE:
            body: list[Node] = []
            if self.i < len(tokens) and tokens[self.i].kind is Kind.LUA:
                lua = tokens[self.i]
                node.args.append(lua.value)
                body.append(Trivia(lua))  # kept as bytes; Lua is not nginx syntax
                self.i += 1
            body += self.block(node)
            node.block = body
            node.close = tokens[self.i]
            self.i += 1
        return node


def dump(nodes: list[Node]) -> bytes:
    """Rebuild the bytes of a file from its tree."""
    out = bytearray()

    def emit(items: list[Node]) -> None:
        for node in items:
            if isinstance(node, Trivia):
                out.extend(node.token.raw)
                continue
            for tok in node.head:
                out.extend(tok.raw)
            if node.block is not None:
                emit(node.block)
                assert node.close is not None
                out.extend(node.close.raw)

    emit(nodes)
    return bytes(out)
