"""Composition roots: the only place that reads settings and wires features together."""
