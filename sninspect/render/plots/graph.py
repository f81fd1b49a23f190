"""The graph bound by depth: the upper bound from the input to each operator along the graph."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from sninspect.render.escape import for_plot
from sninspect.results.graph import GraphReport

__all__ = ["graph_depth_figure"]


def graph_depth_figure(report: GraphReport) -> Figure:
    """Bound by depth (log scale), block boundaries shaded, the lower bound and chain product as lines."""
    fig = Figure(figsize=(max(6.0, min(16.0, 0.25 * len(report.nodes) + 4)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    depth = np.array([n.depth for n in report.nodes], dtype=float)
    bound = np.array([n.bound for n in report.nodes], dtype=float)
    ax.plot(depth, bound, marker="o", markersize=3, color="#1f77b4", label="upper bound up to the node")
    tops = [n.module.split(".")[0] if n.module else "" for n in report.nodes]
    start = 0
    for i in range(1, len(tops) + 1):
        if i == len(tops) or tops[i] != tops[start]:
            if tops[start] and (i - start) > 0:
                ax.axvspan(start - 0.5, i - 0.5, color="#eeeeee" if len(set(tops[:start])) % 2 else "#f7f7f7",
                           zorder=0)
                ax.text((start + i - 1) / 2, 1.0, for_plot(tops[start]), transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8, color="#555")
            start = i
    if report.lower:
        ax.axhline(report.lower, color="#2e7d32", linestyle="--", label=f"certified lower bound {report.lower:.4g}")
    ax.axhline(report.chain_product, color="#999", linestyle=":", label=f"chain product {report.chain_product:.4g}")
    if len(bound) and np.all(bound > 0):
        ax.set_yscale("log")
    ax.set_xlabel("depth along the graph (operators on the input's path)")
    ax.set_ylabel("Lipschitz upper bound")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.suptitle(for_plot(f"{report.file}: upper {report.upper:.4g}"), fontsize=10)
    return fig
