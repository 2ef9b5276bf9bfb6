"""nginx's regexes (PCRE2, no UTF, no UCP) in Python's re: exactly, or not at all.

nginx compiles ``location ~``/``~*`` and ``server_name ~`` patterns with PCRE (ngx_regex_compile:
no PCRE2_UTF unless the pattern asks, so classes are ASCII and matching is byte-wise). Python's
``re`` reads most of that syntax the same way; :func:`translate` rewrites what it spells
differently and refuses what it cannot express. A pattern it refuses raises
:class:`Untranslatable`: routing then answers "cannot route" instead of guessing.

Rewritten exactly: ``(?<name>…)`` and ``(?'name'…)``, ``\\k<name>``/``\\k'name'``/``\\k{name}``/
``\\g{name}``, ``\\Q…\\E``, ``\\x{HH…}`` and one-digit ``\\xH``, ``\\o{…}``, ``\\e``, ``\\cX``,
``\\h \\H \\v \\V \\R \\N``, ``\\z \\Z``, POSIX classes (``[[:digit:]]``, ``[[:^space:]]``), inline
and flags anywhere (``a(?i)b`` → ``a(?i:b)``). Refused: ``{,n}`` (a literal before PCRE2 10.43, a
quantifier since: it depends on the host's library), ``\\p{…}``/``\\P``/``\\X`` (Unicode properties), ``(?|…)``
(branch reset), recursion and subroutine calls, ``\\G``, ``\\K``, ``\\C``, relative back
references, ``(*VERB)``s, and flags other than ``imsx``.
"""

from __future__ import annotations

import re

__all__ = ["Untranslatable", "compile_pcre", "translate"]


class Untranslatable(ValueError):
    """A PCRE pattern Python's re cannot match exactly the way nginx does."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{reason} in {pattern!r}")
        self.pattern = pattern
        self.reason = reason


_POSIX = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\x0b\\f\\r ",
    "upper": "A-Z",
    "word": "a-zA-Z0-9_",
    "xdigit": "0-9A-Fa-f",
}
_POSIX_NEGATED = {"digit": "\\D", "space": "\\S", "word": "\\W"}
_HSPACE = "\\t \\xa0"  # PCRE's \h without UTF
_VSPACE = "\\n\\x0b\\f\\r\\x85"  # PCRE's \v without UTF
_REFUSED_ESCAPES = {
    "p": "a Unicode property (\\p)",
    "P": "a Unicode property (\\P)",
    "X": "an extended grapheme (\\X)",
    "C": "a single code unit (\\C)",
    "G": "a match-start anchor (\\G)",
    "K": "a match-start reset (\\K)",
}
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compile_pcre(pattern: str, *, caseless: bool = False) -> re.Pattern[str]:
    """``pattern`` compiled as nginx would match it (ASCII classes); raises Untranslatable."""
    source = translate(pattern)
    try:
        return re.compile(source, re.ASCII | (re.IGNORECASE if caseless else 0))
    except re.error as exc:
        raise Untranslatable(pattern, f"Python's re cannot read it ({exc})") from None


def translate(pattern: str) -> str:
    """``pattern`` in Python's re syntax, or Untranslatable."""
    return _Translator(pattern).run()


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.wraps = [0]  # per open group: how many "(?flags:" wrappers to close with it

    def refuse(self, reason: str) -> Untranslatable:
        return Untranslatable(self.p, reason)

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if c == "\\":
                self.out.append(self.escape(in_class=False))
            elif c == "[":
                self.char_class()
            elif c == "(":
                self.group()
            elif c == ")":
                if len(self.wraps) == 1:
                    raise self.refuse("an unbalanced ')'")
                self.out.append(")" * self.wraps.pop() + ")")
                self.i += 1
            elif c == "{":
                if re.match(r"\{\s*,\s*\d+\s*\}", p[self.i :]):
                    raise self.refuse("{,n}, a literal before PCRE2 10.43 and a quantifier since")
                m = _QUANTIFIER.match(p, self.i)
                self.out.append(m.group(0) if m else "\\{")
                self.i = m.end() if m else self.i + 1
            else:
                self.out.append(c)
                self.i += 1
        if len(self.wraps) != 1:
            raise self.refuse("an unclosed '('")
        return "".join(self.out) + ")" * self.wraps[0]

    # -- groups --------------------------------------------------------------------

    def group(self) -> None:
        p, i = self.p, self.i
        if p.startswith("(*", i):
            raise self.refuse("a (*VERB)")
        if not p.startswith("(?", i):
            self.open("(", i + 1)
            return
        rest = p[i + 2 :]
        if rest.startswith("#"):
            end = p.find(")", i)
            if end < 0:
                raise self.refuse("an unclosed comment")
            self.i = end + 1
            return
        for start in ("<=", "<!", "=", "!", ":", ">"):
            if rest.startswith(start):
                self.open("(?" + start, i + 2 + len(start))
                return
        named = re.match(r"(?:P?<|')([A-Za-z_][A-Za-z0-9_]*)[>']", rest)
        if named:
            self.open(f"(?P<{named.group(1)}>", i + 2 + named.end())
            return
        if rest.startswith("|"):
            raise self.refuse("a branch reset (?|...)")
        if re.match(r"(?:R|[+-]?\d|&|P>|P=)", rest):
            if rest.startswith("P="):  # (?P=name): a back reference Python reads the same way
                end = p.find(")", i)
                self.out.append(p[i : end + 1])
                self.i = end + 1
                return
            raise self.refuse("a recursion or subroutine call")
        if rest.startswith("("):
            cond = re.match(r"\((\d+|<[A-Za-z_]\w*>|'[A-Za-z_]\w*'|[A-Za-z_]\w*)\)", rest)
            if not cond or cond.group(1) in ("R", "DEFINE") or cond.group(1).startswith("R"):
                raise self.refuse("a condition Python's re does not have")
            self.open(f"(?({cond.group(1).strip(chr(39) + '<>')})", i + 2 + cond.end())
            return
        flags = re.match(r"([A-Za-z]*)(?:-([A-Za-z]*))?([:)])", rest)
        if not flags:
            raise self.refuse("an unknown group")
        on, off, closer = flags.group(1), flags.group(2) or "", flags.group(3)
        bad = set(on + off) - set("imsx")
        if bad:
            raise self.refuse(f"the flag {''.join(sorted(bad))} (only i, m, s and x have a match in Python)")
        spelled = on + (f"-{off}" if off else "")
        if closer == ":":
            self.open(f"(?{spelled}:", i + 2 + flags.end())
        else:
            # (?i) in the middle of a group applies to the rest of that group: wrap the rest
            self.out.append(f"(?{spelled}:" if spelled else "(?:")
            self.wraps[-1] += 1
            self.i = i + 2 + flags.end()

    def open(self, text: str, next_index: int) -> None:
        self.out.append(text)
        self.wraps.append(0)
        self.i = next_index

    # -- classes -------------------------------------------------------------------

    def char_class(self) -> None:
        p = self.p
        self.i += 1
        parts = ["["]
        if p.startswith("^", self.i):
            parts.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(p):
                raise self.refuse("an unclosed '['")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "\\":
                parts.append(self.escape(in_class=True))
            elif c == "[" and p.startswith("[:", self.i):
                m = re.match(r"\[:(\^?)([a-z]+):\]", p[self.i :])
                if not m or m.group(2) not in _POSIX:
                    raise self.refuse("an unknown POSIX class")
                if m.group(1):
                    if m.group(2) not in _POSIX_NEGATED:
                        raise self.refuse(f"a negated POSIX class [:^{m.group(2)}:]")
                    parts.append(_POSIX_NEGATED[m.group(2)])
                else:
                    parts.append(_POSIX[m.group(2)])
                self.i += m.end()
            elif c in "[&~|" or (c == "]"):
                parts.append("\\" + c)  # literal in PCRE; Python reads "[", "&&", "~~", "||" as set syntax
                self.i += 1
            else:
                parts.append(c)
                self.i += 1
        self.out.append("".join(parts) + "]")

    # -- escapes -------------------------------------------------------------------

    def escape(self, *, in_class: bool) -> str:
        p = self.p
        if self.i + 1 >= len(p):
            raise self.refuse("a trailing backslash")
        c = p[self.i + 1]
        self.i += 2
        if c in _REFUSED_ESCAPES:
            raise self.refuse(_REFUSED_ESCAPES[c])
        if c == "Q":
            end = p.find("\\E", self.i)
            literal = p[self.i : end if end >= 0 else len(p)]
            self.i = end + 2 if end >= 0 else len(p)
            return "".join(_literal(ch) for ch in literal)
        if c == "E":
            return ""  # an \E without \Q is ignored
        if c == "x":
            m = re.match(r"\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{1,2})", p[self.i :])
            if not m:
                return "\\x00"
            self.i += m.end()
            return _literal(chr(int(m.group(1) or m.group(2), 16)))
        if c == "o":
            m = re.match(r"\{([0-7]+)\}", p[self.i :])
            if not m:
                raise self.refuse("a malformed \\o{...}")
            self.i += m.end()
            return _literal(chr(int(m.group(1), 8)))
        if c == "e":
            return "\\x1b"
        if c == "c":
            if self.i >= len(p):
                raise self.refuse("a malformed \\c")
            self.i += 1
            return _literal(chr(ord(p[self.i - 1].upper()) ^ 0x40))
        if c in "hH":
            if in_class:
                if c == "H":
                    raise self.refuse("\\H inside a class")
                return _HSPACE
            return f"[{'^' if c == 'H' else ''}{_HSPACE}]"
        if c in "vV":
            if in_class:
                if c == "V":
                    raise self.refuse("\\V inside a class")
                return _VSPACE
            return f"[{'^' if c == 'V' else ''}{_VSPACE}]"
        if in_class and c in "RNzZAbB":
            raise self.refuse(f"\\{c} inside a class")
        if c == "R":
            return f"(?:\\r\\n|[{_VSPACE}])"
        if c == "N":
            if p.startswith("{", self.i):
                raise self.refuse("a named character \\N{...}")
            return "[^\\n]"
        if c == "z":
            return "\\Z"
        if c == "Z":
            return "(?=\\n?\\Z)"
        if c in "kg":
            m = re.match(r"<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\}|\{?(\d+)\}?", p[self.i :])
            if m and c == "g" and p.startswith("{-", self.i):
                m = None
            if not m or (c == "k" and m.group(4)):
                raise self.refuse(f"a back reference \\{c} Python cannot read")
            self.i += m.end()
            name = m.group(1) or m.group(2) or m.group(3)
            return f"(?P={name})" if name else f"\\{m.group(4)}"
        return "\\" + c


def _literal(ch: str) -> str:
    """One character, escaped so it means itself anywhere in a Python pattern (inside a class too)."""
    if ch.isalnum() and ch.isascii():
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
