"""A farm cancels a task with SIGTERM (OpenJD's NOTIFY_THEN_TERMINATE): `mam2 batch` finishes the frame
it is writing, records the shot as interrupted and exits 130, leaving only whole frames.

The engine is slowed by a delay per frame, so the signal always lands mid-shot (12 frames take >= 6 s,
the signal comes once the first alpha is there), however fast the machine is."""
import json
import signal
import subprocess
import sys
import time

import pytest

from mam2_server.cli import main
from mam2_server.io.image import read_info

pytestmark = pytest.mark.slow

FRAME_DELAY_S = 0.5
# `mam2 batch` with every engine's frames delayed (the argv after the delay is the command line)
SLOW_BATCH = """
import sys, time
from mam2_server.engines.base import Engine
run = Engine.run
def delayed(self, *args, **kwargs):
    for result in run(self, *args, **kwargs):
        time.sleep(float(sys.argv[1]))
        yield result
Engine.run = delayed
from mam2_server.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_stops_after_the_current_frame(tmp_path):
    assert main(["synth", str(tmp_path / "clips"), "--kinds", "hair", "--frames", "12", "--size", "128x72",
                 "--seeds", "0"]) == 0
    clip = tmp_path / "clips" / "hair_0"
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"shots": [{"name": "s", "input": str(clip / "plate" / "plate.####.exr"),
                                               "output": "alpha/s.####.exr", "prompts": str(clip / "prompts.json")}]}))
    log = tmp_path / "jobs.jsonl"
    driver = subprocess.Popen([sys.executable, "-c", SLOW_BATCH, str(FRAME_DELAY_S), "batch", str(manifest),
                               "--quiet", "--jobs-log", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    alpha = tmp_path / "alpha"
    deadline = time.monotonic() + 120
    while not (alpha.is_dir() and any(alpha.glob("s.*.exr"))):
        assert driver.poll() is None and time.monotonic() < deadline, "no alpha was written"
        time.sleep(0.02)
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, out + err
    assert "stopping after the current frame" in err
    [record] = map(json.loads, log.read_text().splitlines())
    written = sorted(alpha.iterdir())
    assert record["status"] == "interrupted" and 1 <= record["written"] == len(written) < 12, record
    for path in written:  # whole frames only: no temp file, every header reads
        assert path.name.startswith("s.") and read_info(path).full_width == 128
