"""Train the small GANs whose checkpoints live in this folder (CPU, synthetic data, deterministic).

    python sample_checkpoints/make_samples.py [--out DIR] [--steps N]

Data: 16x16 one-channel images of a random Gaussian blob or ring (values in [-1, 1]), drawn from
a seeded generator: nothing is downloaded. Every model really trains (generator and discriminator
alternating, Adam, hinge or margin losses); losses are printed every 100 steps. With
``torch.set_num_threads(1)`` and fixed seeds the files are byte-identical across runs on the same
machine (torch.save's archive name comes from the file name, so keep the names).

Writes:
- ``dcgan_sn_torch.pt``: DCGAN discriminator under ``torch.nn.utils.spectral_norm`` (version 1),
  as ``{"netD", "netG", "optD", "step", "epoch"}``.
- ``mlp_sn_parametrize.safetensors``: an EBGAN-style autoencoder critic under
  ``torch.nn.utils.parametrizations.spectral_norm``: conv encoder, MLP bottleneck with a square
  Linear(64, 64), ConvTranspose decoder with a square ConvTranspose2d(16, 16) (SN dim=1).
- ``plain_discriminator.pt``: the DCGAN discriminator trained without SN (plain state dict).
- ``biggan_style_sn.pt``: the DCGAN discriminator built from BigGAN-style ``layers.SN`` layers
  (tests/reflayers.py; one layer with num_svs=2), saved as BigGAN saves ``D.pth``.
- ``soft_sn_dcgan.pt``: the DCGAN discriminator under soft SN (i-ResNet / DUE ``spectral_norm_fc``:
  eval divides by max(1, σ / coeff)) with coeff = 0.9, from the reference layer ``SoftSN``
  (tests/reflayers.py); a plain state dict. The coefficient is not stored: audit with ``--coeff 0.9``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from torch.nn.utils import parametrizations, spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reflayers import BigGANSNConv2d, BigGANSNLinear, SoftSN  # noqa: E402  (reference layers)

SIZE = 16
Z_DIM = 32
BATCH = 32
DATASET = 4096
LOG_EVERY = 100
SOFT_COEFF = 0.9
"""The soft-SN sample's coefficient (not stored in the file)."""

Wrap = Callable[[nn.Module], nn.Module]


def no_sn(module: nn.Module) -> nn.Module:
    return module


# ----------------------------------------------------------------------------------------------
# data


def blobs_and_rings(n: int, generator: torch.Generator) -> Tensor:
    """n images (n, 1, 16, 16) in [-1, 1]: a Gaussian blob or a ring at a random place and size."""
    coords = torch.arange(SIZE, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (16, 16)
    centre = 4 + 8 * torch.rand(n, 2, generator=generator)  # (n, 2)
    radius = 1.5 + 3.0 * torch.rand(n, generator=generator)  # (n,)
    ring = torch.rand(n, generator=generator) < 0.5  # (n,)
    dy, dx = yy - centre[:, 0, None, None], xx - centre[:, 1, None, None]  # (n, 16, 16)
    dist = torch.sqrt(dy**2 + dx**2)
    blob = torch.exp(-0.5 * (dist / radius[:, None, None]) ** 2)
    band = torch.exp(-0.5 * ((dist - 1.5 * radius[:, None, None]) / 0.8) ** 2)
    image = torch.where(ring[:, None, None], band, blob)
    return (2 * image - 1).unsqueeze(1)


class Batches:
    """Shuffled minibatches of a fixed tensor, epoch by epoch, from a seeded generator."""

    def __init__(self, data: Tensor, generator: torch.Generator) -> None:
        self.data = data
        self.generator = generator
        self.order = torch.randperm(len(data), generator=generator)
        self.pos = 0
        self.epoch = 0

    def next(self) -> Tensor:
        if self.pos + BATCH > len(self.data):
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.pos = 0
            self.epoch += 1
        batch = self.data[self.order[self.pos : self.pos + BATCH]]
        self.pos += BATCH
        return batch


# ----------------------------------------------------------------------------------------------
# models


class DCGANDiscriminator(nn.Module):
    """16x16 → score: four 3x3 / 4x4 convs (two strided, one with in == out), a linear head."""

    def __init__(self, sn: Wrap = no_sn, ch: int = 8, conv: Callable[..., nn.Module] = nn.Conv2d,
                 linear: Callable[..., nn.Module] = nn.Linear) -> None:
        super().__init__()
        self.main = nn.Sequential(
            sn(conv(1, ch, 3, 1, 1)), nn.LeakyReLU(0.1),  # 16x16
            sn(conv(ch, 2 * ch, 4, 2, 1)), nn.LeakyReLU(0.1),  # 8x8
            sn(conv(2 * ch, 2 * ch, 3, 1, 1)), nn.LeakyReLU(0.1),  # 8x8, in == out
            sn(conv(2 * ch, 4 * ch, 4, 2, 1)), nn.LeakyReLU(0.1),  # 4x4
            nn.Flatten(),
        )
        self.head = sn(linear(4 * ch * 16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.main(x)).squeeze(1)


class Generator(nn.Module):
    """z → 16x16 image: linear to 4x4, two ConvTranspose2d upsamplings with BatchNorm, a 3x3 conv."""

    def __init__(self, ch: int = 8) -> None:
        super().__init__()
        self.ch = ch
        self.fc = nn.Linear(Z_DIM, 4 * ch * 16)
        self.main = nn.Sequential(
            nn.BatchNorm2d(4 * ch), nn.ReLU(),
            nn.ConvTranspose2d(4 * ch, 2 * ch, 4, 2, 1), nn.BatchNorm2d(2 * ch), nn.ReLU(),  # 8x8
            nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(),  # 16x16
            nn.Conv2d(ch, 1, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.main(self.fc(z).view(-1, 4 * self.ch, 4, 4))


class AECritic(nn.Module):
    """EBGAN-style critic: energy = per-image reconstruction error of an autoencoder.

    Encoder 16→8→4 (strided convs), MLP bottleneck 256→64→64→256 (the middle Linear is square),
    decoder 4→8→16 with ConvTranspose2d(16, 16) (square: SN's dim=1 and dim=0 both fit) and
    ConvTranspose2d(16, 1).
    """

    def __init__(self, sn: Wrap = no_sn) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            sn(nn.Conv2d(1, 8, 4, 2, 1)), nn.LeakyReLU(0.1),  # 8x8
            sn(nn.Conv2d(8, 16, 4, 2, 1)), nn.LeakyReLU(0.1),  # 4x4
            nn.Flatten(),
        )
        self.bottleneck = nn.Sequential(
            sn(nn.Linear(256, 64)), nn.LeakyReLU(0.1),
            sn(nn.Linear(64, 64)), nn.LeakyReLU(0.1),  # in == out
            sn(nn.Linear(64, 256)), nn.LeakyReLU(0.1),
        )
        self.decoder = nn.Sequential(
            sn(nn.ConvTranspose2d(16, 16, 4, 2, 1)), nn.LeakyReLU(0.1),  # 8x8, in == out
            sn(nn.ConvTranspose2d(16, 1, 4, 2, 1)),  # 16x16
        )

    def forward(self, x: Tensor) -> Tensor:
        code = self.bottleneck(self.encoder(x)).view(-1, 16, 4, 4)
        return (self.decoder(code) - x).square().mean(dim=(1, 2, 3))  # (batch,) energies


# ----------------------------------------------------------------------------------------------
# training


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: Tensor) -> Tensor:
    return -fake.mean()


MARGIN = 0.5


def margin_d(real: Tensor, fake: Tensor) -> Tensor:
    """EBGAN: low energy on real images, at least MARGIN on generated ones."""
    return real.mean() + F.relu(MARGIN - fake).mean()


def margin_g(fake: Tensor) -> Tensor:
    return fake.mean()


def train_gan(name: str, D: nn.Module, G: nn.Module, batches: Batches, steps: int, seed: int,
              d_loss: Callable[[Tensor, Tensor], Tensor] = hinge_d,
              g_loss: Callable[[Tensor], Tensor] = hinge_g, on_step: Callable[[int], object] | None = None,
              log_every: int = LOG_EVERY) -> torch.optim.Optimizer:
    """Alternate one D step and one G step, ``steps`` times; return D's optimizer. ``on_step(step)``
    is called after each step (``SNMonitor.step``: examples/monitor_dcgan.py)."""
    noise = torch.Generator().manual_seed(seed)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    D.train()
    G.train()
    for step in range(1, steps + 1):
        real = batches.next()
        fake = G(torch.randn(BATCH, Z_DIM, generator=noise))
        loss_d = d_loss(D(real), D(fake.detach()))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss(D(fake))  # the same fakes, now through G too (as the PyTorch DCGAN example)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if on_step is not None:
            on_step(step)
        if log_every and (step % log_every == 0 or step == steps):
            print(f"  {name:<10} step {step:4d}  loss_D {loss_d.item():7.4f}  loss_G {loss_g.item():7.4f}")
    return opt_d


def save_safetensors(state: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with a reproducible header.

    safetensors 0.8 writes ``__metadata__`` from a Rust HashMap, so with two or more entries their
    order (hence the file's bytes) changes from run to run. Rewrite the JSON header with the
    metadata sorted; same length, same tensors, same offsets.
    """
    blob = safetensors_bytes(state, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(text) <= n  # Precondition: only the order changed
    path.write_bytes(blob[:8] + text.ljust(n, b" ") + blob[8 + n :])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = blobs_and_rings(DATASET, torch.Generator().manual_seed(0))
    written: list[Path] = []

    # 1. DCGAN under torch.nn.utils.spectral_norm (legacy hooks, version 1)
    torch.manual_seed(1)
    batches = Batches(data, torch.Generator().manual_seed(1))
    D, G = DCGANDiscriminator(spectral_norm), Generator()
    opt_d = train_gan("dcgan-sn", D, G, batches, args.steps, seed=1)
    path = out / "dcgan_sn_torch.pt"
    torch.save({"netD": D.state_dict(), "netG": G.state_dict(), "optD": opt_d.state_dict(),
                "step": args.steps, "epoch": batches.epoch}, path)
    written.append(path)

    # 2. EBGAN autoencoder critic under torch.nn.utils.parametrizations.spectral_norm
    torch.manual_seed(2)
    batches = Batches(data, torch.Generator().manual_seed(2))
    critic, G = AECritic(parametrizations.spectral_norm), Generator()
    train_gan("ae-param", critic, G, batches, args.steps, seed=2, d_loss=margin_d, g_loss=margin_g)
    path = out / "mlp_sn_parametrize.safetensors"
    state = {k: v.detach().contiguous() for k, v in critic.state_dict().items()}
    save_safetensors(state, path, metadata={"step": str(args.steps), "source": "sninspect sample"})
    written.append(path)

    # 3. the DCGAN discriminator without SN
    torch.manual_seed(3)
    batches = Batches(data, torch.Generator().manual_seed(3))
    D, G = DCGANDiscriminator(), Generator()
    train_gan("plain", D, G, batches, args.steps, seed=3)
    path = out / "plain_discriminator.pt"
    torch.save(D.state_dict(), path)
    written.append(path)

    # 4. the DCGAN discriminator from BigGAN-style SN layers (u0/sv0 buffers; num_svs=2 on the head)
    torch.manual_seed(4)
    batches = Batches(data, torch.Generator().manual_seed(4))
    D = DCGANDiscriminator(conv=BigGANSNConv2d, linear=lambda i, o: BigGANSNLinear(i, o, num_svs=2))
    G = Generator()
    train_gan("biggan", D, G, batches, args.steps, seed=4)
    path = out / "biggan_style_sn.pt"
    torch.save(D.state_dict(), path)
    written.append(path)

    # 5. the DCGAN discriminator under soft SN (i-ResNet / DUE), coeff 0.9
    torch.manual_seed(5)
    batches = Batches(data, torch.Generator().manual_seed(5))
    D, G = DCGANDiscriminator(lambda m: SoftSN(m, coeff=SOFT_COEFF)), Generator()
    train_gan("soft", D, G, batches, args.steps, seed=5)
    path = out / "soft_sn_dcgan.pt"
    torch.save(D.state_dict(), path)
    written.append(path)

    for path in written:
        print(f"{path.name:<34} {path.stat().st_size / 1024:8.1f} KiB  sha256 {digest(path)}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
