"""The network bound: per-layer certified operator bounds, their widths and cache, the layers' chain order."""
