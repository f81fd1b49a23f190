"""Training-framework integrations built on :class:`sninspect.monitor.SNMonitor` (optional extras)."""
