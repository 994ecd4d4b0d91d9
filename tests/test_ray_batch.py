"""`mam2 batch --ray` on a real two-node Ray cluster on this machine.

The cluster (`ray start --head` + a second `ray start --address`, one CPU each) and the driver
(`mam2 batch MANIFEST --ray ...`, as users run it) live in private network and PID namespaces
(`unshare`): Ray binds the machine's interface address otherwise, and tests talk to loopback
only. `ray stop` runs on exit, and when the namespace's first process ends the kernel ends every
process left in it, so nothing outlives the test, even on a failure or timeout. Needs root (CI is).

Mid-shot, a helper kills the worker running the first chunk of the long shot (SIGKILL, as a
crash or an OOM kill would); Ray re-runs the chunk, which writes only the frames still missing.
One shot fails inside its task (a box outside the frame) and the others go on. Then a second
batch on the same cluster is interrupted with Ctrl-C.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mam2_server.cli import main
from mam2_server.io.image import read_info

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
NAMESPACES = ["unshare", "--net", "--pid", "--kill-child", "--mount-proc"]


def namespaces_unavailable() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(NAMESPACES + ["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot make a private network namespace ({probe.stderr.strip()})"


CLUSTER = r"""
set -u
ip link set lo up
trap '"$BIN/ray" stop --force >/dev/null 2>&1' EXIT
"$BIN/ray" start --head --port 6390 --num-cpus 1 --include-dashboard=false --disable-usage-stats \
    > "$WORK/head.log" 2>&1 || { echo "ray start --head failed"; exit 90; }
"$BIN/ray" start --address 127.0.0.1:6390 --num-cpus 1 > "$WORK/node2.log" 2>&1 \
    || { echo "ray start --address failed"; exit 91; }
"$BIN/python" "$WORK/killer.py" "$WORK/cluster/alpha" "$WORK/killed.json" &
"$BIN/mam2" batch "$WORK/cluster/manifest.json" --ray 127.0.0.1:6390 --chunk-frames 6 --quiet \
    --jobs-log "$WORK/cluster/jobs.jsonl"
rc=$?
wait
# Ctrl-C: a second batch on the same cluster, interrupted once its first alpha is there
"$BIN/mam2" batch "$WORK/cancel/manifest.json" --ray 127.0.0.1:6390 --quiet \
    --jobs-log "$WORK/cancel/jobs.jsonl" &
driver=$!
"$BIN/python" "$WORK/interrupter.py" "$WORK/cancel/alpha" $driver
wait $driver
echo $? > "$WORK/cancel/rc"
sleep 2
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' | grep '^ray::mam2:' > "$WORK/cancel/busy"
exit $rc
"""

# Waits for the long shot's first alpha, kills the worker writing its first chunk, then notes
# the stamps of the frames that exist (the retry must not rewrite them).
KILLER = r"""
import json, os, signal, sys, time
alpha, out = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 200
while not os.path.exists(os.path.join(alpha, "long.1001.exr")):
    if time.monotonic() > deadline:
        json.dump({"error": "the long shot's first frame never appeared"}, open(out, "w")); sys.exit(1)
    time.sleep(0.01)
victims = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()
    except OSError:
        continue
    if title.startswith("ray::mam2:long:1/2"):
        os.kill(int(pid), signal.SIGKILL)
        victims.append(int(pid))
while any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
          for pid in victims):
    time.sleep(0.01)
stamps = {n: [s.st_ino, s.st_mtime_ns] for n in os.listdir(alpha) if n.startswith("long.")
          for s in [os.stat(os.path.join(alpha, n))]}
json.dump({"victims": victims, "stamps": stamps}, open(out, "w"))
"""

INTERRUPTER = r"""
import os, signal, sys, time
alpha, driver = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 200
while not (os.path.isdir(alpha) and any(n.endswith(".exr") for n in os.listdir(alpha))):
    if time.monotonic() > deadline:
        sys.exit("no alpha appeared")
    time.sleep(0.01)
os.kill(driver, signal.SIGINT)
"""


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    assert main(["synth", str(out), "--kinds", "solid", "--frames", "3", "--size", "96x64", "--seeds", "0,1,2"]) == 0
    assert main(["synth", str(out), "--kinds", "hair", "--frames", "12", "--size", "128x72", "--seeds", "3"]) == 0
    # a shot long enough that a Ctrl-C after its first frame lands well before its last
    assert main(["synth", str(out), "--kinds", "smoke", "--frames", "40", "--size", "128x72", "--seeds", "4"]) == 0
    return out


def write_manifest(folder: Path, clips: Path) -> Path:
    def shot(name, clip, engine, prompts=None):
        return {"name": name, "input": str(clips / clip / "plate" / "plate.####.exr"),
                "output": f"alpha/{name}.####.exr", "engine": engine,
                "prompts": prompts or str(clips / clip / "prompts.json")}
    key = json.loads((clips / "hair_3" / "prompts.json").read_text())[0]
    long_prompts = [key, {**key, "frame": 1007}]  # two passes: the shot splits into two chunks
    outside = [{"frame": 1001, "box": [500, 500, 600, 600]}]  # parses, but lies outside the 96x64 frames
    manifest = {"shots": [shot("bad", "solid_0", "baseline", outside), shot("sh10", "solid_0", "baseline"),
                          shot("sh20", "solid_1", "classic"), shot("long", "hair_3", "classic", long_prompts),
                          shot("sh30", "solid_2", "baseline")]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


@pytest.mark.skipif(namespaces_unavailable() is not None, reason=str(namespaces_unavailable()))
def test_two_node_cluster_survives_a_killed_worker_and_matches_one_machine(clips, tmp_path):
    single = write_manifest(tmp_path / "single", clips)
    assert main(["batch", str(single), "--quiet"]) == 1  # the shot "bad" fails, the others run

    # Unix socket paths must stay short (< 108 bytes): Ray's session folder goes in /tmp.
    work = Path(tempfile.mkdtemp(prefix="mam2ray", dir="/tmp"))
    try:
        write_manifest(work / "cluster", clips)
        key = json.loads((clips / "smoke_4" / "prompts.json").read_text())
        (work / "cancel").mkdir()
        (work / "cancel" / "manifest.json").write_text(json.dumps({"shots": [
            {"name": "longer", "input": str(clips / "smoke_4" / "plate" / "plate.####.exr"),
             "output": "alpha/longer.####.exr", "engine": "classic", "prompts": key}]}))
        (work / "killer.py").write_text(KILLER)
        (work / "interrupter.py").write_text(INTERRUPTER)
        env = {**os.environ, "BIN": str(BIN), "WORK": str(work), "RAY_TMPDIR": str(work),
               "RAY_USAGE_STATS_ENABLED": "0",
               # nothing outside the namespace can reach it; and a token in ~/.ray/ that another Ray
               # on this machine may rewrite meanwhile must not break the test
               "RAY_AUTH_MODE": "disabled"}
        run = subprocess.run(NAMESPACES + ["bash", "-c", CLUSTER], env=env, capture_output=True, text=True,
                             timeout=280)
        logs = f"stdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-6000:]}" + "".join(
            f"\n{name}:\n{(work / name).read_text()[-3000:]}" for name in ("head.log", "node2.log")
            if (work / name).exists())
        assert run.returncode == 1, logs  # "bad" failed in its task; the batch went on
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                    if str(work).encode() in _read(p)], "Ray processes outlived the namespace"

        killed = json.loads((work / "killed.json").read_text())
        assert killed.get("victims"), f"no worker was running the long shot's first chunk: {killed}\n{logs}"
        records = {r["shot"]: r for r in map(json.loads, (work / "cluster" / "jobs.jsonl").read_text().splitlines())}
        assert sorted(records) == ["bad", "long", "sh10", "sh20", "sh30"]
        bad = records.pop("bad")
        assert bad["status"] == "failed" and "outside" in bad["error"] and bad["written"] == 0, bad
        assert all(r["status"] == "done" and r["error"] is None for r in records.values()), records
        assert records["long"]["chunks"] == 2 and records["long"]["written"] == 12
        assert records["long"]["retried"] == 1, records["long"]  # the killed chunk, re-run by Ray
        assert len({n for r in records.values() for n in r["nodes"]}) == 2, "the shots did not use both nodes"

        ray_alpha, single_alpha = work / "cluster" / "alpha", tmp_path / "single" / "alpha"
        # frames finished before the kill were never written again
        for name, (ino, mtime) in killed["stamps"].items():
            stat = (ray_alpha / name).stat()
            assert (stat.st_ino, stat.st_mtime_ns) == (ino, mtime), f"{name} was rewritten after the kill"
        # every frame once, nothing else (no temp file of the killed write), bit-identical to one machine
        names = sorted(p.name for p in ray_alpha.iterdir())
        assert names == sorted(p.name for p in single_alpha.iterdir()) and len(names) == 3 * 3 + 12
        for name in names:
            assert (ray_alpha / name).read_bytes() == (single_alpha / name).read_bytes(), name

        # Ctrl-C: exit 130, the shot recorded as interrupted, no task left running, only whole frames
        cancel = work / "cancel"
        assert (cancel / "rc").read_text().strip() == "130", logs
        [record] = map(json.loads, (cancel / "jobs.jsonl").read_text().splitlines())
        assert record["status"] == "interrupted" and 1 <= record["written"] < 40, record
        assert not (cancel / "busy").read_text().strip(), "tasks still running after Ctrl-C"
        written = sorted(p.name for p in (cancel / "alpha").iterdir())
        assert len(written) == record["written"] and all(n.startswith("longer.") for n in written), written
        for name in written:
            assert read_info(cancel / "alpha" / name).full_width == 128, name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
