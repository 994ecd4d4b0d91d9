"""Fixtures for every test.

`session_token_file`: servers and clients started by the tests (in this process or in
subprocesses, which inherit the environment) use a token file of this pytest session,
never the real ``~/.cache/mam2/token`` of whoever runs pytest.
"""
from __future__ import annotations

import pytest

from host_plugins.mam2_client.auth import TOKEN_FILE_ENV


@pytest.fixture(scope="session", autouse=True)
def session_token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mam2-auth") / "token"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_FILE_ENV, str(path))
        yield path
