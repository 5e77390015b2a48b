"""data.num_workers: null picks loader workers from the cores a rank may use."""

from __future__ import annotations

import pytest

from helix.core.threads import GPU_LOADER_WORKERS_MAX, default_loader_workers
from helix.training.loop import Trainer


@pytest.mark.parametrize("device, cores, world, expected", [
    ("cuda", 16, 1, GPU_LOADER_WORKERS_MAX),  # capped
    ("cuda", 16, 2, 7),                        # 8 cores per rank, one for the rank itself
    ("cuda", 2, 1, 1),
    ("cuda", 1, 1, 0),                         # a single core loads in the main process
    ("cpu", 2, 1, 1),                          # the model wants the cores
    ("cpu", 64, 1, 2),
    ("cpu", 1, 1, 0),
])
def test_default_loader_workers(device, cores, world, expected):
    n, why = default_loader_workers(device, world, cores=cores)
    assert n == expected and f"{n} loader worker" in why


def test_a_run_without_num_workers_says_what_it_chose(tmp_path, capsys):
    from tests.training.conftest import tiny_config

    cfg = tiny_config(tmp_path / "run", "data.num_workers=null", "optim.epochs=1")
    assert cfg.data.num_workers is None
    trainer = Trainer(cfg, verbose=True, print_summary=False)
    trainer.fit()
    assert trainer.num_workers == default_loader_workers("cpu")[0]
    assert "loader worker(s) per process" in capsys.readouterr().out
