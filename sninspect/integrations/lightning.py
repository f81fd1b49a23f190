"""A PyTorch Lightning callback that audits SN during ``Trainer.fit``: ``pip install 'sninspect[lightning]'``.

>>> from sninspect.integrations.lightning import SNMonitorCallback
>>> trainer = lightning.Trainer(callbacks=[SNMonitorCallback(every=100, log="sn.jsonl")])

Every ``every`` optimizer steps (``trainer.global_step``) the LightningModule (or its submodule
``module="discriminator"``) is audited by :class:`~sninspect.monitor.SNMonitor`, on its device, on
the global-zero process only; once more when training ends, unless that step was just audited.
Scalars go to ``tensorboard`` when given, else to the trainer's TensorBoard logger when it has one;
the JSON-lines ``log`` is written only when given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sninspect.audit.options import as_rules, with_overrides
from sninspect.errors import UsageError
from sninspect.monitor import SNMonitor, check_every
from sninspect.results.check import Rules

try:
    import lightning.pytorch as pl
except ImportError as err:  # an optional extra
    raise ImportError("sninspect.integrations.lightning needs PyTorch Lightning 2 (the `lightning` package): "
                      "pip install 'sninspect[lightning]'") from err

__all__ = ["SNMonitorCallback"]


class SNMonitorCallback(pl.Callback):  # type: ignore[misc]
    """Audit SN every ``every`` training steps (arguments as :class:`~sninspect.monitor.SNMonitor`).

    ``module``: the attribute path of the submodule to audit (``"discriminator"``, ``"model.netD"``);
    None audits the whole LightningModule. Spectra, σ̂, σ_eff and cosine errors at every audit; the
    certified conv bounds with ``bounds=True`` (or when ``rules`` set ``max_lipschitz``)."""

    def __init__(self, every: int = 100, *, module: str | None = None,
                 rules: Rules | Mapping[str, Any] | None = None,
                 log: str | os.PathLike[str] | None = None, tensorboard: Any = None,
                 fail_fast: bool = False, **overrides: object) -> None:
        super().__init__()
        check_every(every)  # a bad setting fails here, not after the trainer has set up
        as_rules(rules)
        with_overrides(None, overrides)
        self.every, self.module, self.tensorboard = every, module, tensorboard
        self._settings: dict[str, Any] = {"rules": rules, "log": log, "fail_fast": fail_fast, **overrides}
        self.monitor: SNMonitor | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        tensorboard = self.tensorboard
        if tensorboard is None:
            tensorboard = _tensorboard_of(trainer)
        self.monitor = SNMonitor(_submodule(pl_module, self.module), self.every, tensorboard=tensorboard,
                                 **self._settings)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self.monitor is not None and step > 0 and step != self.monitor.last_step:
            self.monitor.step(step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is None:
            return
        if trainer.global_step != self.monitor.last_step:
            self.monitor.audit(trainer.global_step)
        self.monitor.close()


def _submodule(root: Any, path: str | None) -> Any:
    if path is None:
        return root
    found = root
    for part in path.split("."):
        if not hasattr(found, part):
            raise UsageError(f"module={path!r}: {type(root).__name__} has no attribute {part!r}")
        found = getattr(found, part)
    return found


def _tensorboard_of(trainer: Any) -> Any:
    """The SummaryWriter of the trainer's TensorBoard logger, else None."""
    for logger in getattr(trainer, "loggers", []) or []:
        experiment = getattr(logger, "experiment", None)
        if type(logger).__name__ == "TensorBoardLogger" and hasattr(experiment, "add_scalar"):
            return experiment
    return None
