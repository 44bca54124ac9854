"""Patterns the API's free text must match: no control characters.

PostgreSQL refuses NUL in text (an insert would fail as a 500), and the other control characters
have no place in a name: they hide in logs and terminals. Refusing them at the edge is a 400
naming the field, on every database.
"""

from __future__ import annotations

__all__ = ["ONE_LINE", "PARAGRAPHS"]

ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""Text on one line: names."""
PARAGRAPHS = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Text that may hold tabs and line breaks: descriptions."""
