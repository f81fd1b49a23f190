"""Small networks for the graph-bound tests: export helpers and the SNGAN-ResNet discriminator layout
(Miyato et al. 2018; residual blocks of two 3×3 SN convs + a 1×1 SN shortcut, average-pool
downsampling, ReLU, global sum pooling, a final SN linear)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations


def export(module: nn.Module, example: Tensor, path: Path) -> Path:
    """``module`` in eval mode exported with torch.export and saved to ``path``."""
    module.eval()
    program = torch.export.export(module, (example,))
    torch.export.save(program, str(path))
    return path


def dense_norm(function, x: Tensor) -> float:  # noqa: ANN001
    """‖J‖ at x by a dense Jacobian and its SVD: the ground truth for linear or piecewise-linear f."""
    jac = torch.autograd.functional.jacobian(lambda t: function(t).reshape(-1), x.double())
    return float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))


def sn(layer: nn.Module) -> nn.Module:
    return parametrizations.spectral_norm(layer)


class DBlock(nn.Module):
    """SNGAN discriminator block: [ReLU] conv3×3 ReLU conv3×3 [avgpool] + shortcut 1×1 [avgpool]."""

    def __init__(self, c_in: int, c_out: int, *, downsample: bool, first: bool) -> None:
        super().__init__()
        self.c1 = sn(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.c2 = sn(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.sc = sn(nn.Conv2d(c_in, c_out, 1)) if (c_in != c_out or downsample) else None
        self.downsample, self.first = downsample, first

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.c2(F.relu(self.c1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # the optimized first block pools before its shortcut conv
            s = self.sc(F.avg_pool2d(s, 2)) if self.sc is not None else s
        elif self.sc is not None:
            s = self.sc(s)
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


class ResNetD(nn.Module):
    """SNGAN-ResNet discriminator for size×size images: 4 blocks, sum pooling, SN linear."""

    def __init__(self, ch: int = 16) -> None:
        super().__init__()
        self.block1 = DBlock(3, ch, downsample=True, first=True)
        self.block2 = DBlock(ch, ch, downsample=True, first=False)
        self.block3 = DBlock(ch, ch, downsample=False, first=False)
        self.block4 = DBlock(ch, ch, downsample=False, first=False)
        self.fc = sn(nn.Linear(ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.block4(self.block3(self.block2(self.block1(x))))
        h = F.relu(h).sum(dim=(2, 3))
        return self.fc(h)


def trained_resnet_d(ch: int = 16, size: int = 16, steps: int = 5, seed: int = 0, batch: int = 8) -> ResNetD:
    """A ResNetD trained a few hinge-loss steps on random 'real' and 'fake' batches (not at init)."""
    torch.manual_seed(seed)
    model = ResNetD(ch)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.0, 0.9))
    for _ in range(steps):
        real = torch.randn(batch, 3, size, size).tanh()
        fake = torch.rand(batch, 3, size, size) * 2 - 1
        loss = F.relu(1 - model(real)).mean() + F.relu(1 + model(fake)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def rewrite_archive(source: Path, target: Path, change) -> Path:  # noqa: ANN001
    """Copy a .pt2 zip, letting ``change(members)`` edit its {name: bytes} dict first."""
    import zipfile

    with zipfile.ZipFile(source) as zin:
        members = {info.filename: zin.read(info.filename) for info in zin.infolist()}
    change(members)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for name, data in members.items():
            zout.writestr(name, data)
    return target


def edit_json(source: Path, target: Path, suffix: str, change) -> Path:  # noqa: ANN001
    """Copy a .pt2 zip letting ``change(record)`` edit the JSON record whose name ends with ``suffix``
    (``models/model.json``, ``model_weights_config.json``)."""
    import json

    def edit(members: dict[str, bytes]) -> None:
        name = next(n for n in members if n.endswith(suffix))
        record = json.loads(members[name])
        change(record)
        members[name] = json.dumps(record).encode()
    return rewrite_archive(source, target, edit)
