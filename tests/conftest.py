"""Shared fixtures: tiny models trained a few steps under every SN dialect, and their eval σ̂.

``build_trained(kind, dialect)`` returns a :class:`Trained` (the model, its detached state dict, the
eval divisor of each SN layer read off the real module, an input factory); the ``make_trained``
fixture does the same and also saves the state dict under ``tmp_path``. ``CASES`` lists the
supported (kind, dialect) pairs for ``pytest.mark.parametrize``.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize, spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm
from typer.testing import Result

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
import reflayers  # noqa: E402  (tests/ is not a package)

# CI runs hypothesis derandomized (a fixed seed per test), so a red run is reproducible; locally the
# default profile keeps exploring.
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

KINDS = ("linear", "conv1d", "conv2d", "convT_square", "embedding", "vector")
"""Tiny layers: Linear(7, 5); Conv1d(3, 4, 3); Conv2d(3, 6, 3, stride 2); ConvTranspose2d(6, 6, 4)
(in == out: both dims fit the u/v lengths); Embedding(9, 5); a 1-D parameter ``gain`` (5,)."""

DIALECTS = ("torch", "torch-none", "torch-parametrize", "mimicry", "biggan", "cosgrove")
"""``torch-none``: a ``torch`` state dict rewritten as PyTorch 0.4.x saved it (version None)."""

SUPPORTED: dict[str, tuple[str, ...]] = {
    "torch": ("linear", "conv1d", "conv2d", "convT_square", "embedding"),
    "torch-none": ("linear", "conv1d", "conv2d", "convT_square", "embedding"),
    "torch-parametrize": KINDS,
    "mimicry": ("linear", "conv2d", "embedding"),
    "biggan": ("linear", "conv2d", "embedding"),
    "cosgrove": ("linear", "conv1d", "conv2d", "convT_square", "embedding"),
}
"""Which kinds exist under which dialect (mimicry and BigGAN ship Linear, Conv2d and Embedding only;
the 1-D case is the parametrize API's exact-norm path)."""

CASES: list[tuple[str, str]] = [(k, d) for d in DIALECTS for k in SUPPORTED[d]]


class Gain(nn.Module):
    """y = x * gain: a module whose only parameter is 1-D and not called ``weight``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain


def _inputs(kind: str) -> Callable[[], Tensor]:
    return {
        "linear": lambda: torch.randn(8, 7),
        "conv1d": lambda: torch.randn(4, 3, 9),
        "conv2d": lambda: torch.randn(4, 3, 9, 9),
        "convT_square": lambda: torch.randn(4, 6, 5, 5),
        "embedding": lambda: torch.randint(0, 9, (12,)),
        "vector": lambda: torch.randn(8, 5),
    }[kind]


def plain_layer(kind: str) -> nn.Module:
    """The layer of ``kind`` without SN (what ``strip`` should load into)."""
    return {
        "linear": lambda: nn.Linear(7, 5),
        "conv1d": lambda: nn.Conv1d(3, 4, 3),
        "conv2d": lambda: nn.Conv2d(3, 6, 3, stride=2),
        "convT_square": lambda: nn.ConvTranspose2d(6, 6, 4),
        "embedding": lambda: nn.Embedding(9, 5),
        "vector": lambda: Gain(5),
    }[kind]()


def sn_dim(kind: str, dialect: str) -> int:
    """The axis SN puts first: 1 for ConvTranspose under the torch APIs, 0 otherwise."""
    return 1 if kind == "convT_square" and dialect.startswith("torch") else 0


def sn_layer(kind: str, dialect: str) -> nn.Module:
    """One layer of ``kind`` under ``dialect`` (untrained)."""
    if kind not in SUPPORTED[dialect]:
        raise ValueError(f"{kind!r} has no {dialect!r} form; supported: {SUPPORTED[dialect]}")
    r = reflayers
    if dialect == "mimicry":
        return {"linear": lambda: r.MimicrySNLinear(7, 5),
                "conv2d": lambda: r.MimicrySNConv2d(3, 6, 3, stride=2),
                "embedding": lambda: r.MimicrySNEmbedding(9, 5)}[kind]()
    if dialect == "biggan":
        return {"linear": lambda: r.BigGANSNLinear(7, 5),
                "conv2d": lambda: r.BigGANSNConv2d(3, 6, 3, stride=2),
                "embedding": lambda: r.BigGANSNEmbedding(9, 5)}[kind]()
    layer = plain_layer(kind)
    name = "gain" if kind == "vector" else "weight"
    if dialect == "cosgrove":
        return r.CosgroveSN(layer, name)
    if dialect == "torch-parametrize":
        return parametrizations.spectral_norm(layer, name, dim=sn_dim(kind, dialect))
    return spectral_norm(layer, name, dim=sn_dim(kind, dialect))  # torch, torch-none


@dataclass
class Trained:
    """A model trained a few steps under one SN dialect."""

    kind: str
    dialect: str
    model: nn.Module
    """``nn.Sequential(layer)``, so keys start with ``0.``; for ``torch-none`` a fresh version-1
    module that loaded ``state`` through PyTorch's load hook (v recovered)."""
    state: OrderedDict[str, Tensor]
    """Detached copy of the state dict (``_metadata`` kept), as a checkpoint would hold it."""
    sigmas: dict[str, float]
    """Eval divisor σ̂ of each SN parameter, from the real module (see :func:`eval_sigmas`)."""
    make_input: Callable[[], Tensor]
    dim: int
    """The SN axis (1 for a ConvTranspose under the torch APIs)."""
    path: Path | None = None
    """Where the ``make_trained`` fixture saved ``state`` (torch.save)."""


def train_steps(model: nn.Module, make_input: Callable[[], Tensor], steps: int = 3, lr: float = 0.05) -> None:
    """A few SGD steps in train mode on random data (so u/v are away from their initial values);
    two forwards per step, like D(real) and D(fake)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.5)
    model.train()
    for _ in range(steps):
        out_a, out_b = model(make_input()), model(make_input())
        loss = F.softplus(-out_a.float()).mean() + F.softplus(out_b.float()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def train(model: nn.Module, make_input: Callable[[], Tensor], steps: int = 3) -> None:
    """A few plain SGD steps in train mode on a square loss, one forward per step, so that u/v move
    away from their initial values (simpler than :func:`train_steps`)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        loss = model(make_input()).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def detached_state(model: nn.Module) -> OrderedDict[str, Tensor]:
    """``model.state_dict()`` with every tensor detached and cloned; ``_metadata`` kept."""
    state = model.state_dict()
    out: OrderedDict[str, Tensor] = OrderedDict((k, v.detach().clone()) for k, v in state.items())
    out._metadata = state._metadata  # type: ignore[attr-defined]
    return out


def to_version_none(model: nn.Module) -> OrderedDict[str, Tensor]:
    """The state dict PyTorch 0.4.1 would have saved for a legacy-SN ``model`` after its last
    training forward: ``P_orig``, the normalized weight as buffer ``P`` (= W_orig / σ of that
    forward, i.e. before the optimizer step that followed), ``P_u``; no ``P_v``; and no
    ``spectral_norm`` version in the metadata. Keys in 0.4.1's order: params, then P, then P_u."""
    state = detached_state(model)
    buffers: dict[str, Tensor] = {}  # P_u key → the P buffer that goes right before it
    for name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                base = (f"{name}." if name else "") + hook.name
                # The eval weight 0.4.1 kept as a buffer: the attribute the last training forward set.
                buffers[base + "_u"] = getattr(module, hook.name).detach().clone()
                del state[base + "_v"]
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        if key in buffers:
            out[key[: -len("_u")]] = buffers[key]
        out[key] = value
    metadata = {k: dict(v) for k, v in state._metadata.items()}  # type: ignore[attr-defined]
    for local in metadata.values():
        local.pop("spectral_norm", None)
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


def eval_sigmas(model: nn.Module) -> dict[str, float]:
    """The divisor each SN parameter's next eval forward uses, read off the real module in float64.

    Keys follow sninspect's ``plain_key``: ``<module path>.<param>`` (cosgrove: the wrapped module's
    path, ``...module.weight``). torch legacy: u · (W v) from the stored buffers, W reshaped by the
    hook's own ``reshape_weight_to_matrix`` (exactly what ``compute_weight`` does without
    iterating). parametrize: vdot(u, W v) with the parametrization's own reshape; a 1-D weight
    divides by max(‖W‖, eps). Reference layers: their ``eval_divisor()``.
    """
    sigmas: dict[str, float] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                w = hook.reshape_weight_to_matrix(getattr(module, hook.name + "_orig").detach()).double()
                u = getattr(module, hook.name + "_u").double()
                v = getattr(module, hook.name + "_v").double()
                sigmas[prefix + hook.name] = float(torch.dot(u, w @ v))
        if parametrize.is_parametrized(module):
            for param, chain in module.parametrizations.items():  # type: ignore[union-attr]
                for p in chain:
                    if type(p).__name__ != "_SpectralNorm":
                        continue
                    original = chain.original.detach().double()
                    if original.ndim == 1:
                        sigmas[prefix + param] = max(float(torch.linalg.vector_norm(original)), p.eps)
                    else:
                        w = p._reshape_weight_to_matrix(original)
                        sigmas[prefix + param] = float(torch.vdot(p._u.double(), w @ p._v.double()))
                    break
        if isinstance(module, reflayers.CosgroveSN):
            sigmas[f"{prefix}module.{module.name}"] = module.eval_divisor()
        elif isinstance(module, (reflayers._MimicrySN, reflayers._BigGANSN)):
            sigmas[prefix + "weight"] = module.eval_divisor()
        elif isinstance(module, reflayers.SoftSN):
            sigmas[prefix + "layer.weight"] = module.eval_divisor()
    return sigmas


def build_trained(kind: str, dialect: str, *, steps: int = 3, seed: int = 0) -> Trained:
    """``nn.Sequential(sn_layer(kind, dialect))`` trained ``steps`` SGD steps; its state and σ̂."""
    torch.manual_seed(seed)
    make_input = _inputs(kind)
    model = nn.Sequential(sn_layer(kind, dialect))
    train_steps(model, make_input, steps)
    if dialect == "torch-none":
        state = to_version_none(model)
        fresh = nn.Sequential(sn_layer(kind, "torch"))
        fresh.load_state_dict(state, strict=True)  # the load hook recovers v from u and the buffer
        model = fresh
    else:
        state = detached_state(model)
    model.eval()
    return Trained(kind, dialect, model, state, eval_sigmas(model), make_input, sn_dim(kind, dialect))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every process it starts) keeps sninspect's bound cache in a folder of its own,
    never the user's ~/.cache: ``XDG_CACHE_HOME`` points there."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def bound_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """A spy on the certified conv bound: the shape of every kernel it is computed for."""
    from sninspect.linalg import conv_bounds

    seen: list[tuple[int, ...]] = []
    real = conv_bounds.conv_operator_bound

    def spy(kernel: Tensor, **kwargs: object) -> conv_bounds.ConvBound:
        seen.append(tuple(kernel.shape))
        return real(kernel, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(conv_bounds, "conv_operator_bound", spy)
    return seen


@pytest.fixture
def make_trained(tmp_path: Path) -> Callable[..., Trained]:
    """Factory fixture: ``make_trained(kind, dialect, steps=3, seed=0)`` → :class:`Trained`, its
    state dict also saved with ``torch.save`` to ``tmp_path / f"{kind}-{dialect}.pt"``."""

    def make(kind: str, dialect: str, *, steps: int = 3, seed: int = 0) -> Trained:
        trained = build_trained(kind, dialect, steps=steps, seed=seed)
        trained.path = tmp_path / f"{kind}-{dialect}.pt"
        torch.save(trained.state, trained.path)
        return trained

    return make


def cli(*args: str | os.PathLike[str], device: str | None = "cpu", env: Mapping[str, str] | None = None) -> Result:
    """``sninspect *args`` run in-process through typer's CliRunner (paths may be ``Path``s); its
    ``Result`` (``exit_code``, ``stdout``, ``stderr``, ``output``). A command that audits (one with a
    ``--device`` option) gets ``--device cpu`` unless ``args`` give a device or ``device`` is None, so
    its numbers do not depend on the machine's GPU."""
    import typer.main
    from typer.testing import CliRunner

    from sninspect.cli import app

    argv = [os.fspath(a) for a in args]
    group = typer.main.get_command(app)
    sub = getattr(group, "commands", {}).get(argv[0]) if argv else None
    takes_device = sub is not None and any("--device" in p.opts for p in sub.params)
    if device is not None and takes_device and not any(a == "--device" or a.startswith("--device=") for a in argv):
        argv += ["--device", device]
    return CliRunner().invoke(app, argv, env=env)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/render/golden/ from this run.")
