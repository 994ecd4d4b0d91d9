"""`mam2 serve --device`: one server per GPU; a device the machine lacks stops it before anything starts."""
import logging

import pytest

from mam2_server.cli import main
from mam2_server.cli.serve import check_device


def test_a_missing_or_malformed_device_is_refused_before_the_server_starts(capsys):
    assert main(["serve", "--engine", "mam2", "--device", "cuda:99", "--address", "tcp://127.0.0.1:0"]) == 2
    assert "--device cuda:99: this machine has" in capsys.readouterr().err
    assert main(["serve", "--device", "gpu0", "--address", "tcp://127.0.0.1:0"]) == 2
    assert "cpu, cuda or cuda:N" in capsys.readouterr().err


def test_device_checks(caplog):
    check_device(None, "mam2")
    check_device("cpu", "mam2")
    with caplog.at_level(logging.WARNING):
        check_device("cuda:3", "classic")  # weights-free: runs on the CPU whatever the flag says
    assert "the classic engine runs on the CPU" in caplog.text
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        from mam2_server.cli import CLIError
        with pytest.raises(CLIError, match="no CUDA device"):
            check_device("cuda", None)  # an --engine-factory engine: checked as well
    else:
        check_device("cuda:0", "mam2")
        assert torch.cuda.current_device() == 0
