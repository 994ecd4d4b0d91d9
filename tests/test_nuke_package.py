"""`mam2 package nuke DIR`: the folder an artist puts on NUKE_PATH, checked the way Nuke uses it.

The wheels come from the folder `install.py --dev` fills once from PyPI (<venv>/host-wheels, see
mam2_server.package.prefetch); the packages are built from there offline (--find-links, --offline),
the same code path as a studio mirror, so the tests need no network.
The decisive test runs the packaged init.py in a clean Python 3.11 (Nuke 16's), with no
site-packages and a `nuke` module that only has pluginAddPath, and imports the node's code,
zmq and msgpack from the package, then talks to a real MAM2 server with them.
"""
from __future__ import annotations

import ast
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mam2_server.package.nuke import NUKE_PYTHONS, PLATFORMS
from mam2_server.package.prefetch import DEFAULT_DIR as HOST_WHEELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_server_support import ServerProcess  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def mam2(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mam2_server.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, **kwargs)


@pytest.fixture(scope="session")
def wheel_cache() -> Path:
    if not HOST_WHEELS.is_dir():
        pytest.skip(f"no host wheels in {HOST_WHEELS}: run `python3 install.py --dev` (it downloads them once)")
    return HOST_WHEELS


@pytest.fixture(scope="module")
def package(wheel_cache, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("nuke_path") / "mam2"
    out = mam2("package", "nuke", str(dest), "--find-links", str(wheel_cache), "--offline")
    assert out.returncode == 0, out.stderr
    assert "put " + str(dest) + " on NUKE_PATH" in out.stdout
    return dest


def test_the_folder_has_the_node_its_python_and_wheels_for_every_nuke(package):
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["nuke"] == {"3.9": "Nuke 14", "3.10": "Nuke 15", "3.11": "Nuke 16"}
    expected = {f"cp{v.replace('.', '')}-{p}" for v in NUKE_PYTHONS for p in PLATFORMS}
    assert set(manifest["sites"]) == expected == {p.name for p in (package / "site").iterdir()}
    binaries = {"linux": "*.cpython-{v}-x86_64-linux-gnu.so", "macos": "*.cpython-{v}-darwin.so",
                "windows": "*.cp{v}-win_amd64.pyd"}
    for site in expected:
        folder = package / "site" / site
        version, system = site[2:].split("-")[0], site.split("-")[1]
        for module in ("zmq", "msgpack"):
            assert (folder / module / "__init__.py").is_file(), (site, module)
        assert list(folder.glob(f"zmq/**/{binaries[system].format(v=version)}")), site  # the compiled backend
        assert len(list(folder.glob("*.dist-info"))) == 2
    for source, packaged in (("gizmos/MAM2.gizmo", "gizmos/MAM2.gizmo"), ("gizmos/README.md", "README.md"),
                             ("host_plugins/nuke/init.py", "init.py"), ("host_plugins/nuke/menu.py", "menu.py")):
        assert filecmp.cmp(ROOT / source, package / packaged, shallow=False), packaged
    for tree, packaged in (("host_plugins/nuke/mam2_nuke", "python/mam2_nuke"),
                           ("host_plugins/mam2_client", "python/mam2_client")):
        names = sorted(p.name for p in (ROOT / tree).glob("*.py"))
        assert names == sorted(p.name for p in (package / packaged).iterdir()), packaged
    assert json.loads((package / "config.json").read_text())["server_python"] == sys.executable


def test_the_packaged_python_is_python_39_syntax(package):
    """Nuke 14 embeds Python 3.9: nothing newer in what runs inside Nuke."""
    for path in [package / "init.py", package / "menu.py", *(package / "python").rglob("*.py")]:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


_CLEAN = r"""
import os, sys
package, stub, address = sys.argv[1:4]
sys.path.insert(0, stub)
import nuke
init = os.path.join(package, "init.py")
found = {"__name__": "__main__"}
exec(compile(open(init).read(), init, "exec"), found)  # as Nuke runs an init.py (here without __file__)
import mam2_nuke, zmq, msgpack
from mam2_client import Client
for module in (mam2_nuke, zmq, msgpack):
    assert module.__file__.startswith(package), module.__file__
with Client(address, timeout=20) as client:
    hello = client.hello()
print(zmq.zmq_version(), ".".join(map(str, msgpack.version)), hello["engine"], os.environ["MAM2_PYTHON"],
      callable(mam2_nuke.track))
sites = [found["mam2_site"](v, s, m) for v in ((3, 9), (3, 10), (3, 11))
         for s, m in (("linux", "x86_64"), ("darwin", "x86_64"), ("darwin", "arm64"), ("win32", "AMD64"))]
print(" ".join(sites))
"""

_STUB = '''import sys


def pluginAddPath(args, addToSysPath=True):
    """What Nuke's does for imports: the folder(s) go first on sys.path."""
    for path in args if isinstance(args, list) else [args]:
        if addToSysPath:
            sys.path.insert(0, path)
'''


def clean_python_311() -> str:
    base = getattr(sys, "_base_executable", sys.executable)
    candidates = [base if sys.version_info[:2] == (3, 11) else None, shutil.which("python3.11")]
    found = next((c for c in candidates if c), None)
    if found is None:
        pytest.skip("no Python 3.11 on this machine")
    return found


def test_init_py_in_a_clean_python_311_makes_the_node_zmq_and_msgpack_importable(package, tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "nuke.py").write_text(_STUB)
    with ServerProcess(tmp_path / "cache") as server:
        out = subprocess.run([clean_python_311(), "-I", "-S", "-c", _CLEAN, str(package), str(stub), server.address],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    zmq_version, msgpack_version, engine, server_python, callable_track, *_ = out.stdout.split("\n")[0].split()
    assert engine == "testfast" and server_python == sys.executable and callable_track == "True"
    sites = out.stdout.split("\n")[1].split()
    assert sites[:4] == ["cp39-linux-x86_64", "cp39-macos-x86_64", "cp39-macos-arm64", "cp39-windows-x86_64"]
    assert all((package / "site" / s).is_dir() for s in sites)


_STUDIO = r"""
import os, sys
package, stub, studio = sys.argv[1:4]
sys.path.insert(0, stub)
sys.path.insert(0, studio)  # a studio's pinned msgpack, already on the path before Nuke runs init.py
import nuke
init = os.path.join(package, "init.py")
exec(compile(open(init).read(), init, "exec"), {"__name__": "__main__"})
import msgpack, zmq
print(msgpack.__file__)
print(zmq.__file__)
"""


def test_a_studios_own_packages_keep_precedence_over_the_packaged_ones(package, tmp_path):
    stub, studio = tmp_path / "stub", tmp_path / "studio"
    (studio / "msgpack").mkdir(parents=True)
    (studio / "msgpack" / "__init__.py").write_text("version = (0, 0, 0)\n")
    stub.mkdir()
    (stub / "nuke.py").write_text(_STUB)
    out = subprocess.run([clean_python_311(), "-I", "-S", "-c", _STUDIO, str(package), str(stub), str(studio)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    msgpack_file, zmq_file = out.stdout.split()
    assert msgpack_file.startswith(str(studio))  # the studio's copy wins
    assert zmq_file.startswith(str(package / "site"))  # what the studio lacks comes from the package


def test_a_failed_package_leaves_the_previous_one_and_foreign_folders_are_refused(package, wheel_cache, tmp_path):
    before = sorted(p.relative_to(package) for p in package.rglob("*"))
    out = mam2("package", "nuke", str(package), "--python", "3.8", "--platform", "linux-x86_64",
               "--find-links", str(wheel_cache), "--offline")
    assert out.returncode == 1 and "no wheels of pyzmq msgpack for Python 3.8 on manylinux2014_x86_64" in out.stderr
    assert sorted(p.relative_to(package) for p in package.rglob("*")) == before
    assert not [p for p in package.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    foreign = tmp_path / "nuke_tools"
    foreign.mkdir()
    (foreign / "other.gizmo").write_text("x")
    out = mam2("package", "nuke", str(foreign), "--offline", "--find-links", str(wheel_cache))
    assert out.returncode == 2 and "is not a MAM2 package folder" in out.stderr
    assert [p.name for p in foreign.iterdir()] == ["other.gizmo"]


def test_at_most_a_few_pip_processes_run_at_once_however_the_calls_nest(tmp_path, monkeypatch):
    """A 2-core machine runs PARALLEL (2-4) pips at a time: for the Nuke package's 12 sites, and for
    fetch_wheels calls made from a thread pool of their own."""
    import json as json_
    import threading
    import time as time_
    from concurrent.futures import ThreadPoolExecutor

    from mam2_server.package import nuke, wheels
    lock, running, peak = threading.Lock(), [0], [0]

    def fake_run(cmd, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time_.sleep(0.05)
        tag = cmd[cmd.index("--platform") + 1]
        abi = cmd[cmd.index("--abi") + 1]
        name = f"pyzmq-1.0-{abi}-{abi}-{tag}.whl"
        if cmd[3] == "download":
            dest = Path(cmd[cmd.index("--dest") + 1])
            dest.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(b"wheel")
        else:
            Path(cmd[cmd.index("--target") + 1]).mkdir(parents=True)
            report = {"install": [{"download_info": {"url": f"file:///wheels/{name}"}}]}
            Path(cmd[cmd.index("--report") + 1]).write_text(json_.dumps(report))
        with lock:
            running[0] -= 1
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(wheels.subprocess, "run", fake_run)
    assert 2 <= wheels.PARALLEL <= 4
    manifest = nuke.build(tmp_path / "pkg")
    assert len(manifest["sites"]) == 12 and peak[0] <= wheels.PARALLEL
    assert manifest["sites"]["cp39-windows-x86_64"] == ["pyzmq-1.0-cp39-cp39-win_amd64.whl"]
    peak[0] = 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: wheels.fetch_wheels(["pyzmq"], list(PLATFORMS.values()), list(NUKE_PYTHONS),
                                                    tmp_path / f"w{i}"), range(4)))
    assert 2 <= peak[0] <= wheels.PARALLEL


def test_prefetch_fills_one_folder_for_both_hosts_and_fetches_only_what_it_lacks(tmp_path, monkeypatch):
    from mam2_server.package import prefetch
    from mam2_server.package.wheels import WheelError
    asked, broken = [], {"win_arm64"}

    def fake_fetch(requirements, platforms, versions, dest, pip_args=()):
        asked.append((versions[0], platforms[0]))
        if platforms[0] in broken:
            raise WheelError(f"no wheels of {' '.join(requirements)} for Python {versions[0]} on {platforms[0]}:\nx")
        return []
    monkeypatch.setattr(prefetch, "fetch_wheels", fake_fetch)
    assert prefetch.prefetch(tmp_path) == ["no wheels of pyzmq msgpack for Python 3.11 on win_arm64:"]
    nuke_combos = {(v, p) for v in NUKE_PYTHONS for p in PLATFORMS.values()}
    assert nuke_combos <= set(asked) and ("3.11", "manylinux_2_28_x86_64") in asked and len(asked) == 15  # 2 shared
    asked.clear()
    broken.clear()
    assert prefetch.prefetch(tmp_path) == [] and asked == [("3.11", "win_arm64")]  # only what failed before
    asked.clear()
    assert prefetch.main([str(tmp_path)]) == 0 and asked == []
