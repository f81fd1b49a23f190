"""Training runs: folders and logs of checkpoints audited in order, and their trends."""
