"""docs/protocol.md is enough to write a client: its example exchange runs against a real server."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import ROOT, ServerProcess  # noqa: E402


@pytest.mark.timeout(60)
def test_the_documented_example_exchange_works(tmp_path):
    doc = (ROOT / "docs" / "protocol.md").read_text()
    code = doc.split("## Example exchange")[1].split("```python")[1].split("```")[0]
    with ServerProcess(tmp_path / "cache") as server:
        namespace: dict = {}
        exec(code.replace("tcp://127.0.0.1:5557", server.address), namespace)  # noqa: S102 - our own doc
        assert namespace["reply"]["kind"] == "reply" and namespace["reply"]["computed"] == [1, 2]
