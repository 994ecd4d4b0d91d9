"""A short soak: 3 clients of mixed work and malformed messages against one server lose nothing and leak no files.

The full run (30 minutes) is `mam2 bench server --sizes '' --long-frames 0 --soak-minutes 30`; its figures are
in docs/benchmarks.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import ServerProcess  # noqa: E402

from mam2_server.bench.server_soak import ACTIONS, report, run_soak  # noqa: E402


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="samples the server through /proc")
def test_a_short_soak_loses_nothing_and_leaks_no_files(tmp_path):
    with ServerProcess(tmp_path / "cache") as server:
        result = run_soak(server.address, server.proc.pid, 20.0, tmp_path, clients=3, size=(64, 48), frames=12,
                          timeout=30.0, sample_every=2.0)
        print("\n".join(report(result)))
        assert server.proc.poll() is None
    assert result.wrong == [] and sum(result.lost.values()) == 0
    assert set(result.answered) == set(ACTIONS) and sum(result.answered.values()) > 60
    assert result.samples[-1].open_files <= result.samples[0].open_files  # every client's connection closed
