"""The graph interpreter: a network bound from an exported program (`.pt2`) or a live module's graph."""
