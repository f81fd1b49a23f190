"""Reading checkpoints safely (load dispatch, torch and safetensors checks, wrappers) and writing outputs."""
