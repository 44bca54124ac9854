"""Patterns the API's text must match: no control characters in free text, addresses a client
can connect to.

PostgreSQL refuses NUL in text (an insert would fail as a 500), and the other control characters
have no place in a name: they hide in logs and terminals. Refusing them at the edge is a 400
naming the field, on every database.
"""

from __future__ import annotations

__all__ = [
    "ACCOUNT_NAME", "CATALOG_NAME", "END", "ONE_LINE", "PARAGRAPHS", "PORT", "URL_PATTERN",
    "ZMQ_ADDRESS_PATTERN", "shown",
]  # fmt: skip

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


PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
"""A port a client can connect to, 1 to 65535."""
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s\x00-\x1f\x7f/?#@\[\]:]+)"
"""A host name or IPv4 address, or an IPv6 address in brackets."""
URL_PATTERN = (
    r"^https?://(?:[^\s\x00-\x1f\x7f/?#@\[\]]+@)?" + _HOST + r"(?::" + PORT + r")?"
    r"(?:[/?#][^\s\x00-\x1f\x7f]*)?" + END
)
"""An ``http(s)://`` URL a client can connect to: a host, then a port from 1 to 65535 if any."""
ZMQ_ADDRESS_PATTERN = (
    r"^(tcp://(?:\[[0-9A-Fa-f:.]+\]|[!-)+\--9;<>-~]+):" + PORT + r"|ipc://[!-)+\--<>-~]+)" + END
)
"""``tcp://HOST:PORT`` or ``ipc://PATH`` to connect to: printable, no spaces, no ``,`` or ``=``
(the CLI's separators), no ``*`` (vLLM binds ``tcp://*:PORT``; a subscriber cannot connect
there); the port from 1 to 65535, after a host without ``:`` or an IPv6 address in brackets."""


CATALOG_NAME = (
    r"^[A-Za-z0-9][A-Za-z0-9._:-]*(?:/(?!\.\.?(?:/|" + END + r"))[A-Za-z0-9._:-]+)*" + END
)
"""A model's or an alias's name: segments of letters, digits, ``.``, ``_``, ``:`` and ``-``
joined by single ``/`` (``org/model``). The API's URLs carry it as a path
(``/catalog/models/{name}``), where a trailing or doubled ``/`` and a ``.`` or ``..`` segment
do not survive (the router, or the client normalising the URL, drops them): such a name could
be created and then never read, changed nor deleted."""


_SAID = {
    ONE_LINE: "one line of text with something to see, without control or invisible characters",
    PARAGRAPHS: "text without control or invisible characters (tabs and line breaks are fine)",
    ACCOUNT_NAME: "one line of text with something to see, without control or invisible "
    "characters, not starting with =, +, - or @ (a spreadsheet would run it as a formula)",
    URL_PATTERN: "an http:// or https:// URL with a host (an IPv6 address in brackets) and, "
    "if it gives one, a port from 1 to 65535",
    ZMQ_ADDRESS_PATTERN: "tcp://HOST:PORT with a port from 1 to 65535, or ipc://PATH, without "
    "spaces, ',', '=' or '*'",
    CATALOG_NAME: "a name of letters, digits, '.', '_', ':' and '-', starting with a letter or "
    "digit, in parts joined by single '/' (org/model), none of them '.' or '..'",
}
"""What the patterns ask, said in words: quoted, each is some 300 or 400 characters."""


def shown(message: str) -> str:
    """A validation message for people: the free-text patterns it quotes said in words, and
    :data:`END` in any other pattern (as is, or as ``repr`` doubles its backslashes) shown as
    the familiar ``$``."""
    for pattern, words in _SAID.items():
        for quoted in (f"'{pattern}'", repr(pattern)):
            message = message.replace(f"matching regex {quoted}", f"of {words}")
            message = message.replace(f"does not match {quoted}", f"is not {words}")
    return message.replace(END, "$").replace(END.replace("\\", "\\\\"), "$")
