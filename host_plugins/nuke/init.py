# MAM2 for Nuke. Put this folder on NUKE_PATH (or nuke.pluginAddPath it from ~/.nuke/init.py).
# Runs in GUI and headless (`nuke -t`, farm) sessions. nuke.pluginAddPath puts the node's folders first on
# Nuke's plugin path and on sys.path (Foundry: nuke.pluginAddPath); the pyzmq/msgpack folder goes last on
# sys.path, so a studio's own copies, already importable, keep winning in every later import.
#
# Two layouts:
#  * a folder written by `mam2 package nuke DIR`: DIR/python (mam2_nuke, mam2_client), DIR/gizmos, and
#    DIR/site/cpXY-<os>-<arch>: pyzmq + msgpack installed there by `pip install --target` for each Nuke
#    Python (Nuke 14/15/16 = Python 3.9/3.10/3.11) and platform, chosen here at start-up;
#  * the source tree, host_plugins/nuke: pyzmq and msgpack must then already be importable.
# Nuke may run every init.py in one namespace: names defined here start with mam2/_mam2.
import inspect
import json
import os
import platform
import sys

import nuke


def _mam2_here():
    """This file's folder: from the code object (a shared namespace may hold another file's __file__)."""
    path = inspect.currentframe().f_code.co_filename
    return os.path.dirname(os.path.abspath(path if os.path.isfile(path) else globals().get("__file__", "")))


_MAM2_HERE = _mam2_here()


def mam2_site(version=None, system=None, machine=None):
    """The site folder name for a Python version and platform, e.g. 'cp311-linux-x86_64'."""
    major, minor = (version or sys.version_info)[:2]
    system = system or sys.platform
    machine = (machine or platform.machine()).lower()
    name = "linux" if system.startswith("linux") else {"darwin": "macos", "win32": "windows"}.get(system, system)
    arch = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return "cp%d%d-%s-%s" % (major, minor, name, arch)


def _mam2_setup():
    packaged = os.path.join(_MAM2_HERE, "python")
    if not os.path.isdir(packaged):  # the source tree: mam2_client is in host_plugins, the gizmo in gizmos/
        nuke.pluginAddPath(os.path.dirname(_MAM2_HERE))
        nuke.pluginAddPath(os.path.join(os.path.dirname(os.path.dirname(_MAM2_HERE)), "gizmos"))
        return
    site = os.path.join(_MAM2_HERE, "site", mam2_site())
    if os.path.isdir(site):
        if site not in sys.path:
            sys.path.append(site)
    else:
        folder = os.path.join(_MAM2_HERE, "site")
        have = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        sys.stderr.write("MAM2: no pyzmq/msgpack for %s in %s (packaged: %s); run `mam2 package nuke` again with "
                         "--python %d.%d\n" % (mam2_site(), _MAM2_HERE, ", ".join(have) or "none", *sys.version_info[:2]))
    nuke.pluginAddPath(packaged)
    nuke.pluginAddPath(os.path.join(_MAM2_HERE, "gizmos"))
    config = os.path.join(_MAM2_HERE, "config.json")
    if os.path.isfile(config):
        with open(config) as fh:
            python = json.load(fh).get("server_python")
        if python and os.path.exists(python):  # the MAM2 install that wrote this folder runs `mam2 serve`
            os.environ.setdefault("MAM2_PYTHON", python)


_mam2_setup()
