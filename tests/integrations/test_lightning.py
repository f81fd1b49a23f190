"""The Lightning callback in a real ``Trainer.fit`` on CPU: the JSON-lines log at the expected steps
(each record the audit of the checkpoint Lightning's module would save there) and a TensorBoard
event file with the scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, spectral_norm

import sninspect

lightning = pytest.importorskip("lightning")  # the test extra installs it; the message says what to do
from sninspect.integrations.lightning import SNMonitorCallback  # noqa: E402


class TinyCritic(lightning.LightningModule):  # type: ignore[misc]
    """An SN critic (hook API and parametrize API layers) trained on random data."""

    def __init__(self) -> None:
        super().__init__()
        self.critic = nn.Sequential(spectral_norm(nn.Conv2d(1, 4, 3, padding=1)), nn.LeakyReLU(0.1),
                                    nn.Flatten(), parametrizations.spectral_norm(nn.Linear(4 * 6 * 6, 1)))
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self.critic(x).square().mean() - self.critic(x.flip(-1)).mean()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # What a checkpoint at this step would hold (runs before the callbacks' hook).
        self.saved[self.global_step] = {k: v.detach().clone() for k, v in self.critic.state_dict().items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_trainer_fit_writes_the_log_and_a_tensorboard_event_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 6, 6))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    module = TinyCritic()
    log, board = tmp_path / "sn.jsonl", tmp_path / "tb"
    callback = SNMonitorCallback(every=3, module="critic", log=log, tensorboard=board,
                                 rules={"max_sigma": None, "max_cos_error": None})
    trainer = lightning.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader)

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6, 7]  # every 3 steps, and once more at the end
    for record in records:
        saved = sninspect.analyze(module.saved[record["step"]], device="cpu")
        assert [la["name"] for la in record["report"]["layers"]] == ["0.weight", "3.weight"]
        for logged, layer in zip(record["report"]["layers"], saved.layers, strict=True):
            assert logged["sigma_effective"] == pytest.approx(layer.sigma_effective, rel=1e-12)
            assert logged["cos_error_u"] == pytest.approx(layer.cos_error_u, rel=1e-9, abs=1e-15)
    events = list(board.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(board))
    accumulator.Reload()
    assert [s.step for s in accumulator.Scalars("sninspect/sigma_effective/0.weight")] == [3, 6, 7]


def test_without_log_the_callback_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 1, 6, 6)), batch_size=8)
    module = TinyCritic()
    callback = SNMonitorCallback(every=1, module="critic", rules={"max_sigma": None, "max_cos_error": None})
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback])
    trainer.fit(module, loader)
    assert callback.monitor is not None and callback.monitor.log is None
    assert callback.monitor.last_step == 2 and callback.monitor.audits == 2
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_fail_when_the_callback_is_built() -> None:
    """Attack review: every=0, every="x", an unknown option or rule were accepted by the callback and
    failed only in on_train_start, after the trainer had set up (the unknown option as a TypeError)."""
    for kwargs, message in (({"every": 0}, "every=0"), ({"every": "x"}, "every='x'"),
                            ({"every": 1, "nosuch": 1}, "unknown option 'nosuch'"),
                            ({"every": 1, "rules": {"nope": 1}}, "unknown 'nope'")):
        with pytest.raises(sninspect.UsageError, match=message):
            SNMonitorCallback(**kwargs)
