"""examples/monitor_dcgan.py runs the bundled DCGAN training under the monitor: one record per
``--every`` steps, each the audit of the discriminator the training holds at that step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from builders import assert_same_numbers
from torch.nn.utils import spectral_norm

import sninspect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "sample_checkpoints"))
import make_samples as samples  # noqa: E402
import monitor_dcgan  # noqa: E402


@pytest.mark.filterwarnings("ignore::sninspect.monitor.SNHealthWarning")  # u lags at step 10: expected
def test_the_example_logs_the_discriminator_of_the_bundled_training(tmp_path: Path) -> None:
    log = monitor_dcgan.main(["--steps", "12", "--every", "5", "--out", str(tmp_path), "--tensorboard"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    # The oracle: the same training without the monitor, stopped at step 10.
    torch.set_num_threads(1)
    data = samples.blobs_and_rings(samples.DATASET, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    batches = samples.Batches(data, torch.Generator().manual_seed(1))
    D, G = samples.DCGANDiscriminator(spectral_norm), samples.Generator()
    samples.train_gan("oracle", D, G, batches, 10, seed=1, log_every=0)
    # The monitor audits without the certified bounds unless asked: so does the oracle.
    assert_same_numbers(records[1]["report"], sninspect.analyze(D.state_dict(), bounds=False).to_dict())


@pytest.mark.filterwarnings("ignore::sninspect.monitor.SNHealthWarning")
def test_the_readme_training_example_runs_and_its_log_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = (ROOT / "README.md").read_text().split("## During training", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 14  # about ten lines
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    run = sninspect.analyze_run(tmp_path / "runs" / "sn.jsonl")
    assert run.steps == (100.0, 200.0, 300.0) and list((tmp_path / "runs" / "tb").glob("events.out.*"))
