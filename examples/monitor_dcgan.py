"""Watch spectral normalization while the bundled DCGAN trains (the training of
sample_checkpoints/make_samples.py: 16x16 blobs and rings, hinge loss, D under
``torch.nn.utils.spectral_norm``), with :class:`sninspect.monitor.SNMonitor`.

    python examples/monitor_dcgan.py [--steps 300] [--every 50] [--out runs/dcgan] [--tensorboard]
    sninspect report runs/dcgan/sn.jsonl                  # the run as a table
    sninspect report runs/dcgan/sn.jsonl -o runs/dcgan/sn.html   # ... with trend plots

Every ``--every`` steps the live discriminator is audited (on its device, without running a power
step), one JSON line is appended to ``OUT/sn.jsonl`` and, with ``--tensorboard``, scalars are
written to ``OUT/tb`` (``tensorboard --logdir OUT/tb``). A broken rule (σ_eff > 1.1, a stale u)
prints a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn.utils import spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sample_checkpoints"))
import make_samples as samples  # noqa: E402  (the bundled training)

from sninspect.monitor import SNMonitor  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--every", type=int, default=50, help="audit every N steps")
    parser.add_argument("--out", type=Path, default=Path("runs/dcgan"), help="folder for sn.jsonl (and tb/)")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to OUT/tb")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    data = samples.blobs_and_rings(samples.DATASET, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    batches = samples.Batches(data, torch.Generator().manual_seed(1))
    D, G = samples.DCGANDiscriminator(spectral_norm), samples.Generator()

    log = args.out / "sn.jsonl"
    with SNMonitor(D, every=args.every, log=log, tensorboard=args.out / "tb" if args.tensorboard else None) as monitor:
        samples.train_gan("dcgan-sn", D, G, batches, args.steps, seed=1, on_step=monitor.step)
    print(f"{monitor.audits} audits appended to {log}; see them with: sninspect report {log}")
    return log


if __name__ == "__main__":
    main()
