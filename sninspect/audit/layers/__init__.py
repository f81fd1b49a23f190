"""Per-layer audits: load a model's SN layers, compute exact spectra, σ̂, σ_eff and cosine errors."""
