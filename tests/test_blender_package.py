"""`mam2 package blender`: the extension zips, and the Linux zip installed and used in real Blender.

The wheels come from the folder `install.py --dev` fills once from PyPI (<venv>/host-wheels, see
mam2_server.package.prefetch), with `--find-links DIR --offline`, so the tests need no network.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_blender_addon import FIRST, N, bpy_python, play, plates, server_command  # noqa: E402,F401
from test_server_support import free_port  # noqa: E402

from mam2_server.package import blender as package  # noqa: E402
from mam2_server.package.prefetch import DEFAULT_DIR as HOST_WHEELS  # noqa: E402
from mam2_server.package.wheels import WheelError, fetch_wheels  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def wheels() -> Path:
    if not HOST_WHEELS.is_dir():
        pytest.skip(f"no host wheels in {HOST_WHEELS}: run `python3 install.py --dev` (it downloads them once)")
    return HOST_WHEELS


@pytest.fixture(scope="module")
def linux_zip(wheels, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "mam2_server.cli", "package", "blender", str(out),
                           "--platform", "linux-x64", "--find-links", str(wheels), "--offline"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    zips = sorted(out.glob("*.zip"))
    assert [z.name for z in zips] == ["mam2_matte-0.1.0-linux_x64.zip"] and zips[0].name in proc.stdout
    return zips[0]


def test_the_zip_holds_the_addon_the_client_and_the_wheels_it_declares(linux_zip):
    with zipfile.ZipFile(linux_zip) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        sources = {n: zf.read(n).decode() for n in names if n.endswith(".py")}
    assert manifest["id"] == "mam2_matte" and manifest["platforms"] == ["linux-x64"]
    assert manifest["blender_version_min"] == "4.2.0" and manifest["blender_version_max"] == "5.1.0"
    assert set(manifest["permissions"]) == {"network", "files"} and len(manifest["tagline"]) <= 64
    wheels = [w.removeprefix("./") for w in manifest["wheels"]]
    assert sorted(Path(w).name.split("-")[0] for w in wheels) == ["msgpack", "pyzmq"] and set(wheels) <= names
    assert all("cp311" in w and "manylinux" in w for w in wheels)
    assert {"__init__.py", "ops.py", "mam2_client/__init__.py", "mam2_client/track.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # the client is vendored and imported relatively: no sys.path edits, no top-level mam2_client
    for name, text in sources.items():
        assert "sys.path" not in text, name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith(("mam2_client", "mam2_server", "host_plugins")), name
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("mam2_client", "mam2_server")) for a in node.names), name


def test_every_platform_gets_its_own_wheels(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(requirements, platforms, python_versions, dest, pip_args=()):
        calls.append((tuple(requirements), tuple(platforms), tuple(python_versions)))
        made = []
        for req in requirements:
            path = Path(dest) / f"{req}-1.0-cp311-cp311-{platforms[0]}.whl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"wheel")
            made.append(path)
        return made

    monkeypatch.setattr(package, "fetch_wheels", fake_fetch)
    zips = package.build(tmp_path, list(package.PLATFORMS))
    assert [z.name for z in zips] == [f"mam2_matte-0.1.0-{p.replace('-', '_')}.zip" for p in package.PLATFORMS]
    assert calls == [(("pyzmq", "msgpack"), (tag,), ("3.11",)) for tag in package.PLATFORMS.values()]
    for platform, path in zip(package.PLATFORMS, zips):
        with zipfile.ZipFile(path) as zf:
            manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        assert manifest["platforms"] == [platform]
        assert all(package.PLATFORMS[platform] in w for w in manifest["wheels"])
    with pytest.raises(ValueError, match="unknown Blender platform"):
        package.build(tmp_path, ["linux-arm64"])


def test_fetch_wheels_from_a_local_folder_and_a_clear_error_without_one(wheels, tmp_path):
    offline = ["--find-links", str(wheels), "--no-index"]
    found = fetch_wheels(["pyzmq", "msgpack"], ["manylinux_2_28_x86_64"], ["3.11"], tmp_path / "w", pip_args=offline)
    assert sorted(w.name.split("-")[0] for w in found) == ["msgpack", "pyzmq"] and all(w.exists() for w in found)
    assert fetch_wheels(["msgpack"], ["manylinux_2_28_x86_64"], ["3.11"], tmp_path / "w", pip_args=offline)[0] in found
    with pytest.raises(WheelError, match="no wheels of pyzmq for Python 3.8 on win_amd64"):
        fetch_wheels(["pyzmq"], ["win_amd64"], ["3.8"], tmp_path / "w", pip_args=offline)


@pytest.mark.parametrize("version", ["5.0", "4.5"])
def test_the_zip_installs_in_blender_and_tracks_a_shot(version, linux_zip, plates, tmp_path):
    blender = bpy_python(version)
    command, _ = server_command(tmp_path)
    r = play(blender, "installed_extension", tmp_path, zip=str(linux_zip), plates=str(plates),
             own_address=f"tcp://127.0.0.1:{free_port()}", server_command=str(command), hide_venv_modules=True)
    extensions = tmp_path / "blender-user" / "extensions"
    assert r["install"] == [["FINISHED"], ""] and r["enabled"]
    assert all(Path(w).is_relative_to(extensions / ".local") for w in r["wheels"]), r["wheels"]  # its own wheels
    assert Path(r["addon_file"]).is_relative_to(extensions / "user_default" / "mam2_matte")
    assert r["client_module"] == "bl_ext.user_default.mam2_matte.mam2_client.track"
    assert r["track"][0] == ["FINISHED"] and r["track"][2].startswith("Done: 6 frames computed"), r["track"]
    assert r["track"][3] == [f"alpha.{f}.exr" for f in range(FIRST, FIRST + N)]
    assert r["state"].startswith("Started here (pid ")
    assert r["disabled"] == [True, True]  # disabling the extension stops the server it started
