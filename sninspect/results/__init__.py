"""Frozen results (report, trend, check): data only."""
