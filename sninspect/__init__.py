"""sninspect: audit spectral normalization in PyTorch checkpoints.

>>> import sninspect
>>> report = sninspect.analyze("sample_checkpoints/dcgan_sn_torch.pt", device="cpu")
>>> report.to_dataframe()[["name", "sigma_exact", "sigma_effective", "cos_error_u"]]
"""

from __future__ import annotations

from sninspect._version import __version__
from sninspect.audit.graph import GraphOptions, graph_report
from sninspect.audit.inventory import inventory
from sninspect.audit.options import Options
from sninspect.audit.pipeline import analyze
from sninspect.errors import SninspectError
from sninspect.results.graph import GraphReport
from sninspect.results.report import LayerAudit, ModelAudit, NetworkBound, Report
from sninspect.rewrite import apply, convert, strip

__all__ = [
    "LayerAudit",
    "ModelAudit",
    "NetworkBound",
    "Options",
    "Report",
    "SninspectError",
    "__version__",
    "analyze",
    "apply",
    "convert",
    "inventory",
    "strip",
    "GraphOptions",
    "GraphReport",
    "graph_report",
]
