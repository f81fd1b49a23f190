"""The audit pipeline: inventory, per-layer audits, batching, runs of checkpoints, check rules."""
