"""How team-supplied text is shown: control characters (terminal escapes, bidi overrides, line breaks) as their
Python escapes, so a team's name or error message cannot restyle, reorder or split a terminal, a log or a table.
Standard library only: the CLI imports it at start (and so every stage that runs it)."""

from __future__ import annotations


def escape(text: str) -> str:
    """``text`` with every non-printable character as its Python escape (``\\x1b``, ``\\u202e``, ``\\n``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def escaped_line(text: object) -> str:
    """``str(text)`` on one line (each run of whitespace one space), non-printable characters escaped."""
    return escape(" ".join(str(text).split()))
