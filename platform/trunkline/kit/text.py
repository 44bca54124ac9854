"""Patterns the API's free text must match: no control characters.

PostgreSQL refuses NUL in text (an insert would fail as a 500), and the other control characters
have no place in a name: they hide in logs and terminals. Refusing them at the edge is a 400
naming the field, on every database.
"""

from __future__ import annotations

__all__ = ["ACCOUNT_NAME", "END", "ONE_LINE", "PARAGRAPHS", "shown"]

END = r"(?![\s\S])"
"""The end of the text, to close a pattern with. Python's ``$`` also matches before a final line
break, so ``^[a-z]+$`` takes ``"gold\n"``; ``\\Z`` would not, but it is not in the ECMA dialect
of JSON Schema patterns (``tenants/schema.json``), which lookaheads are."""

_INVISIBLE = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
"""Refused in any text: DEL and the C1 controls (``\\x9b`` is a terminal's CSI, ``\\x85`` a
line break), the Unicode line and paragraph separators, and the bidirectional embeddings,
overrides and isolates, which make a name read otherwise than it is written."""
_BLANK = (
    r"\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2060-\u2064"
    r"\u206a-\u206f\u3164\ufe00-\ufe0f\uffa0\ufeff"
)
"""Characters that show nothing: spaces, and the zero-width and formatting ones (soft hyphen,
combining grapheme joiner, zero-width spaces and joiners, direction marks (the Arabic letter
mark too), word joiner, the deprecated shaping controls, variation selectors, byte-order mark)
and the Hangul and Khmer fillers. Named outright: Python's ``\\s`` leaves out ``U+FEFF``, which
ECMAScript's takes. (Astral ones, as the tag characters, would need surrogate pairs in
ECMAScript without the ``u`` flag.)"""
ONE_LINE = r"^(?:(?=[" + _BLANK + "]*[^" + _BLANK + r"])[^\x00-\x1f" + _INVISIBLE + "]*)?" + END
"""Text on one line, empty or with something to see: names (a name of spaces, or of zero-width
characters, shows as none)."""
ACCOUNT_NAME = r"^(?![=+\-@])" + ONE_LINE.removeprefix("^")
""":data:`ONE_LINE`, not starting with ``=``, ``+``, ``-`` or ``@``: a name that goes into
billing exports (FOCUS ``BillingAccountName``), where a spreadsheet opening the CSV would run
it as a formula (``=HYPERLINK(…)``)."""
PARAGRAPHS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f" + _INVISIBLE + "]*" + END
"""Text that may hold tabs and line breaks: descriptions."""


_SAID = {
    ONE_LINE: "one line of text with something to see, without control or invisible characters",
    PARAGRAPHS: "text without control or invisible characters (tabs and line breaks are fine)",
    ACCOUNT_NAME: "one line of text with something to see, without control or invisible "
    "characters, not starting with =, +, - or @ (a spreadsheet would run it as a formula)",
}
"""What the free-text patterns ask, said in words: quoted, each is some 400 characters."""


def shown(message: str) -> str:
    """A validation message for people: the free-text patterns it quotes said in words, and
    :data:`END` in any other pattern (as is, or as ``repr`` doubles its backslashes) shown as
    the familiar ``$``."""
    for pattern, words in _SAID.items():
        for quoted in (f"'{pattern}'", repr(pattern)):
            message = message.replace(f"matching regex {quoted}", f"of {words}")
            message = message.replace(f"does not match {quoted}", f"is not {words}")
    return message.replace(END, "$").replace(END.replace("\\", "\\\\"), "$")
