"""sninspect: audit spectral normalization in PyTorch checkpoints and live models.

>>> import sninspect
>>> report = sninspect.analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu")
>>> report.to_dataframe()[["name", "sigma_exact", "sigma_effective", "cos_error_u"]]

``analyze`` takes a path, a binary file object, a state dict or an ``nn.Module``; ``analyze_run`` a
folder of checkpoints, a monitor log or a list of sources; ``analyze_graph`` a ``torch.export``
archive (``.pt2``); ``sninspect.monitor.SNMonitor`` audits a model while it trains.
"""

from __future__ import annotations

from sninspect._version import __version__
from sninspect.audit.graph.analysis import GraphOptions, analyze_graph
from sninspect.audit.layers.inventory import inventory
from sninspect.audit.options import Options
from sninspect.audit.sources import analyze, analyze_run, check, trend
from sninspect.errors import InputError, MissingFileError, SninspectError, UnknownKeyError, UsageError
from sninspect.results.check import Rules, Verdict
from sninspect.results.graph import GraphReport
from sninspect.results.report import LayerAudit, ModelAudit, NetworkBound, Report
from sninspect.results.trend import Trend
from sninspect.rewrite import RewriteOptions, apply, convert, strip

__all__ = [
    "GraphOptions",
    "GraphReport",
    "InputError",
    "LayerAudit",
    "MissingFileError",
    "ModelAudit",
    "NetworkBound",
    "Options",
    "Report",
    "RewriteOptions",
    "Rules",
    "SninspectError",
    "Trend",
    "UnknownKeyError",
    "UsageError",
    "Verdict",
    "__version__",
    "analyze",
    "analyze_graph",
    "analyze_run",
    "apply",
    "check",
    "convert",
    "inventory",
    "strip",
    "trend",
]
