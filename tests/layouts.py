"""Checkpoint layouts met in published SN checkpoints, rebuilt from tiny real torch models (issue 23):
an unnormalized head after SN convs, the output layer stored first, BatchNorm between SN convs, and a
folder of unrelated models. Every SN layer stores its exact top singular vectors (``exact_uv``), so
σ_eff = 1 up to rounding and the tests know each factor of the network products."""

from __future__ import annotations

from pathlib import Path

import torch
from snruns import exact_uv, save, sn_chain
from torch import nn
from torch.nn.utils import spectral_norm

HEAD_SIGMA = 4.6
"""σ1 of the unnormalized head Linear of :func:`plain_head_critic`."""


def plain_head_critic(path: Path) -> Path:
    """Three SN convs (3×3, 4×4, 3×3) then an unnormalized ``head`` Linear scaled to σ1 = HEAD_SIGMA."""
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("main", nn.Sequential(
        spectral_norm(nn.Conv2d(3, 8, 3, padding=1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(8, 16, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(16, 16, 3, padding=1)), nn.LeakyReLU(0.2), nn.Flatten()))
    head = nn.Linear(16 * 4 * 4, 1)
    with torch.no_grad():
        head.weight.mul_(HEAD_SIGMA / torch.linalg.matrix_norm(head.weight, 2))
    model.add_module("head", head)
    return save(exact_uv(model), path)


class OutputFirst(nn.Module):
    """``outputDense`` is registered (so stored) before ``dcmodel``, although it runs last."""

    def __init__(self) -> None:
        super().__init__()
        self.outputDense = spectral_norm(nn.Linear(32 * 2 * 2, 1))
        self.dcmodel = nn.Sequential(
            spectral_norm(nn.Conv2d(3, 16, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(16, 32, 4, stride=2, padding=1)), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputDense(self.dcmodel(x).flatten(1))


def output_first(path: Path) -> Path:
    """A critic whose output layer is stored first (the forward runs dcmodel.0, dcmodel.2, outputDense)."""
    torch.manual_seed(2)
    return save(exact_uv(OutputFirst()), path)


def batchnorm_between(path: Path, *, depth: int = 3, var: float = 1e-4) -> Path:
    """DnCNN-like: SN 3×3 convs with an eval BatchNorm after each inner one whose running_var is ``var``
    (each BatchNorm factor is max|γ|/√(var + 1e-5), far above 1)."""
    torch.manual_seed(3)
    layers: list[nn.Module] = [spectral_norm(nn.Conv2d(1, 8, 3, padding=1)), nn.ReLU()]
    for _ in range(depth - 2):
        bn = nn.BatchNorm2d(8)
        with torch.no_grad():
            bn.running_var.fill_(var)
            bn.weight.uniform_(0.5, 1.5)
        layers += [spectral_norm(nn.Conv2d(8, 8, 3, padding=1, bias=False)), bn, nn.ReLU()]
    layers.append(spectral_norm(nn.Conv2d(8, 1, 3, padding=1)))
    return save(exact_uv(nn.Sequential(*layers)), path)


def unrelated_folder(folder: Path) -> Path:
    """Three unrelated models whose file names hold digits (flowx08, sigma10, resnet_block2)."""
    folder.mkdir(parents=True, exist_ok=True)
    save(sn_chain([6, 5, 1], seed=0), folder / "flowx08.pt")
    save(sn_chain([4, 7, 3, 1], seed=1), folder / "sigma10.pt")
    plain_head_critic(folder / "resnet_block2.pt")
    return folder
