"""Pure math, no I/O: SN matrices, exact spectra, the Gram path, conv bounds, network products."""
