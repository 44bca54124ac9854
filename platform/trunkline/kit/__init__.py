"""Small shared utilities: logging, ids, clocks."""
