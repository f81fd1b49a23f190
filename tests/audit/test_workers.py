"""Several layers' operator work at once (audit/layers/workers.py): the same report as one at a time, in the
layers' order, one layer's failure kept to that layer, torch's threads restored, and the count held to
the cores, the device and the memory budget."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from builders import conv_operator_file
from torch import nn
from torch.nn.utils import spectral_norm

import sninspect
from sninspect.audit.layers import workers
from sninspect.audit.memory import NO_LIMIT, Budget
from sninspect.errors import UsageError

NUMBERS = ("sigma_exact", "sigma_estimate", "sigma_effective", "operator_bound", "operator_lower",
           "bracket_width", "spectral_gap", "stable_rank", "cos_error_u", "cos_error_v")


def _same(a: sninspect.Report, b: sninspect.Report, rel: float) -> None:
    assert [la.name for la in a.layers] == [lb.name for lb in b.layers]
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert la.error == lb.error and la.notes == lb.notes
        for name in NUMBERS:
            x, y = getattr(la, name), getattr(lb, name)
            assert (x is None) == (y is None), name
            if x is not None:
                # A cosine error is only as accurate as the Lanczos vector, whose angle is about
                # residual/gap (near 1e-3 in these clusters): another thread count's rounding moves it.
                tol = max(rel, 1e-3) if name.startswith("cos_error") else rel
                assert y == pytest.approx(x, rel=tol, abs=1e-12), (la.name, name)


@pytest.mark.parametrize("count", [2, 3])
def test_layers_at_once_give_the_report_of_one_at_a_time(tmp_path: Path, count: int) -> None:
    path = conv_operator_file(tmp_path / "chain.pt")
    one = sninspect.analyze(path, device="cpu", workers=1)
    many = sninspect.analyze(path, device="cpu", workers=count)
    _same(one, many, rel=1e-7)  # float32 Lanczos products on other thread counts round differently
    lip_one, lip_many = one.models[0].lipschitz, many.models[0].lipschitz
    assert lip_many.operator_product == pytest.approx(lip_one.operator_product, rel=1e-9)


def test_one_layers_failure_stays_with_that_layer(tmp_path: Path) -> None:
    path = conv_operator_file(tmp_path / "broken.pt", broken=2)
    report = sninspect.analyze(path, device="cpu", workers=3)
    errors = [layer.error for layer in report.layers]
    assert errors[2] is not None and "\n" not in errors[2]
    assert all(e is None for i, e in enumerate(errors) if i != 2)
    assert all(layer.sigma_exact is not None for i, layer in enumerate(report.layers) if i != 2)


def test_every_layer_is_announced_once(tmp_path: Path) -> None:
    path = conv_operator_file(tmp_path / "chain.pt")
    seen: list[str] = []
    sninspect.analyze(path, device="cpu", workers=3, on_layer=seen.append)
    assert sorted(seen) == [f"net.{i}.weight" for i in range(5)]


def test_run_all_keeps_order_raises_in_order_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    inside: list[int] = []

    def task(i: int) -> int:
        time.sleep(0.01 * (5 - i))  # later tasks finish first
        inside.append(torch.get_num_threads())
        return i

    assert workers.run_all([lambda i=i: task(i) for i in range(5)], 3) == list(range(5))
    assert torch.get_num_threads() == threads
    assert all(n == max(1, threads // 3) for n in inside)

    def fail() -> int:
        raise ValueError("layer 1")

    with pytest.raises(ValueError, match="layer 1"):
        workers.run_all([lambda: 0, fail, lambda: 2], 2)
    assert torch.get_num_threads() == threads
    assert workers.run_all([], 4) == [] and workers.run_all([lambda: 7], 4) == [7]


def test_tasks_really_overlap() -> None:
    """Two tasks that each wait for the other to start can only finish when run at once."""
    barrier = threading.Barrier(2, timeout=10)
    assert sorted(workers.run_all([barrier.wait, barrier.wait], 2)) == [0, 1]


def test_worker_count() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cores = min(workers.cpu_cores(), torch.get_num_threads(), workers.MAX_WORKERS)
    assert workers.worker_count(cpu, 10, lambda: 0, NO_LIMIT) == max(1, cores)
    assert workers.worker_count(cuda, 10, lambda: 0, NO_LIMIT) == 1  # one device: its kernels queue anyway
    assert workers.worker_count(cpu, 1, lambda: 0, NO_LIMIT) == 1
    assert workers.worker_count(cpu, 10, lambda: 0, NO_LIMIT, asked=3) == 3
    assert workers.worker_count(cpu, 2, lambda: 0, NO_LIMIT, asked=3) == 2
    # The budget holds two layers' largest step side by side, not three.
    assert workers.worker_count(cpu, 10, lambda: 400, Budget(1000), asked=4) == 2
    assert workers.worker_count(cpu, 10, lambda: 4000, Budget(1000), asked=4) == 1  # refused alone, as before


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_workers_option_is_checked(bad: object) -> None:
    with pytest.raises(UsageError, match="workers"):
        sninspect.Options(workers=bad)  # type: ignore[arg-type]


def test_plain_torch_sn_network_at_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(*[spectral_norm(nn.Conv2d(4, 4, 3, padding=1)) for _ in range(4)], nn.Flatten(),
                        spectral_norm(nn.Linear(4 * 36, 3)))
    net(torch.randn(2, 4, 6, 6))
    torch.save(net.state_dict(), tmp_path / "net.pt")
    _same(sninspect.analyze(tmp_path / "net.pt", device="cpu", workers=1),
          sninspect.analyze(tmp_path / "net.pt", device="cpu", workers=4), rel=1e-9)


def test_wide_layers_run_alone_first_with_all_threads() -> None:
    threads = torch.get_num_threads()
    seen: list[tuple[int, int, str]] = []

    def task(i: int) -> int:
        seen.append((i, torch.get_num_threads(), threading.current_thread().name))
        return i

    alone = [False, True, False, True]
    assert workers.run_all([lambda i=i: task(i) for i in range(4)], 2, alone) == [0, 1, 2, 3]
    first = seen[:2]
    assert [i for i, _, _ in first] == [1, 3]
    assert all(n == threads and name == threading.main_thread().name for _, n, name in first)
    assert torch.get_num_threads() == threads
