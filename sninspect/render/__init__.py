"""Showing results: terminal, text formats, HTML, plots. Renderers compute nothing."""
