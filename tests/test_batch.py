"""`mam2 batch`: manifests of tiny synthetic shots, resume, failures, farm chunks and the jobs log."""
import json
import os
import threading
from pathlib import Path

import pytest

from mam2_server import batch
from mam2_server.batch import runner
from mam2_server.cli import main

FRAMES = (1001, 1002, 1003)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 3-frame 96x64 clips: clips/solid_{0,1,2}/plate/plate.####.exr and prompts.json."""
    out = tmp_path_factory.mktemp("clips")
    assert main(["synth", str(out), "--kinds", "solid", "--frames", "3", "--size", "96x64", "--seeds", "0,1,2"]) == 0
    return out


def shot(clips, i, name=None, **extra):
    entry = {"name": name or f"sh{i + 1}0", "input": str(clips / f"solid_{i}" / "plate" / "plate.####.exr"),
             "output": f"alpha/{name or f'sh{i + 1}0'}.####.exr",
             "prompts": str(clips / f"solid_{i}" / "prompts.json")}
    entry.update(extra)
    return entry


def write_manifest(folder, shots, engine="baseline"):
    path = Path(folder) / "manifest.json"
    path.write_text(json.dumps({"defaults": {"engine": engine}, "shots": shots}))
    return path


def alphas(folder, name):
    return sorted(p.name for p in (Path(folder) / "alpha").glob(f"{name}.*.exr"))


def expected(name):
    return [f"{name}.{f}.exr" for f in FRAMES]


def test_two_shots_write_every_alpha_relative_to_the_manifest(clips, tmp_path, capsys):
    inline = json.loads((clips / "solid_1" / "prompts.json").read_text())  # inline prompt list
    manifest = write_manifest(tmp_path, [shot(clips, 0), shot(clips, 1, prompts=inline, frames="1001-1003")],
                              engine="classic")
    assert main(["batch", str(manifest), "--quiet"]) == 0
    assert alphas(tmp_path, "sh10") == expected("sh10") and alphas(tmp_path, "sh20") == expected("sh20")
    out = capsys.readouterr().out
    assert "sh10: done, 3 frames" in out and "sh20: done, 3 frames" in out and "s/frame" in out
    assert "2 shots: 2 done, 0 skipped, 0 failed" in out
    assert not list((tmp_path / "alpha").glob(".*")), "temp files left behind"


def test_resume_skips_a_finished_shot_and_completes_a_partial_one(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [shot(clips, 0), shot(clips, 1)])
    assert main(["batch", str(manifest), "--quiet"]) == 0
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "alpha").glob("sh10.*.exr")}
    partial = tmp_path / "alpha" / "sh20.1002.exr"
    partial.unlink()  # as if the run stopped before this frame
    (tmp_path / "alpha" / "sh20.1003.exr").write_bytes(b"not an exr")  # a corrupt file is not "done"
    kept = tmp_path / "alpha" / "sh20.1001.exr"
    old = 1_000_000_000_000_000_000
    for path in [*finished, kept]:
        os.utime(path, ns=(old, old))
    capsys.readouterr()
    log = tmp_path / "jobs.jsonl"
    assert main(["batch", str(manifest), "--quiet", "--jobs-log", str(log)]) == 0
    assert all(p.stat().st_mtime_ns == old for p in finished), "a finished shot was rewritten"
    assert kept.stat().st_mtime_ns == old, "a finished frame of a partial shot was rewritten"
    assert alphas(tmp_path, "sh20") == expected("sh20")
    assert (tmp_path / "alpha" / "sh20.1003.exr").read_bytes()[:4] == b"\x76\x2f\x31\x01"  # EXR magic
    out = capsys.readouterr().out
    assert "sh10: skipped" in out and "sh20: done, 2 frames written of 3" in out and "1 already done" in out
    records = {r["shot"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert records["sh10"]["status"] == "skipped" and records["sh20"]["written"] == 2
    assert records["sh20"]["kept"] == 1

    assert main(["batch", str(manifest), "--quiet", "--no-resume"]) == 0  # recomputes everything
    assert kept.stat().st_mtime_ns != old and all(p.stat().st_mtime_ns != old for p in finished)


def test_a_failing_shot_does_not_stop_the_others(clips, tmp_path, capsys):
    bad_prompt = [{"frame": 1001, "box": [500, 500, 600, 600]}]  # parses, but lies outside the 96x64 frame
    manifest = write_manifest(tmp_path, [
        shot(clips, 0, name="missing", input=str(tmp_path / "nowhere" / "plate.####.exr")),
        shot(clips, 1, name="badprompt", prompts=bad_prompt),
        shot(clips, 2, name="good"),
    ])
    log = tmp_path / "logs" / "jobs.jsonl"
    assert main(["batch", str(manifest), "--quiet", "--jobs-log", str(log)]) == 1
    assert alphas(tmp_path, "good") == expected("good")
    captured = capsys.readouterr()
    assert "missing: failed:" in captured.err and "nowhere" in captured.err
    assert "badprompt: failed:" in captured.err and "outside" in captured.err
    assert "failed: missing, badprompt" in captured.err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["shot"], r["status"]) for r in records] == [("missing", "failed"), ("badprompt", "failed"),
                                                           ("good", "done")]
    assert "nowhere" in records[0]["error"] and records[2]["error"] is None
    assert records[2]["frame_count"] == 3 and records[2]["seconds"] >= 0 and records[2]["engine"] == "baseline"


def test_manifest_errors_are_all_reported_before_any_work(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [
        shot(clips, 0, name="a"),
        shot(clips, 1, name="a"),                                   # duplicate name
        shot(clips, 2, name="b", output="alpha/a.####.exr"),        # same files as shot a
        shot(clips, 0, name="c", output="alpha/c.exr"),             # no frame token
        {"name": "d", "input": "x.####.exr", "prompts": "p.json", "colour": "x"},  # no output, unknown key
        shot(clips, 1, name="e", output=str(clips / "solid_1" / "plate" / "plate.####.exr")),  # over plates
    ])
    assert main(["batch", str(manifest), "--quiet"]) == 2
    err = capsys.readouterr().err
    for text in ("shot a: duplicate name", "shot b: output", "writes the same files as shot a",
                 "shot c: output", "no frame number token", "shot d: 'output' is required",
                 "shot d: unknown keys ['colour']", "shot e: output", "is the input of"):
        assert text in err, text
    assert not (tmp_path / "alpha").exists(), "work was done despite an invalid manifest"

    # data problems of single shots are listed up front too; then those shots fail and the rest run
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="r", frames="1001-10x"),
                                         shot(clips, 1, name="p", prompts="no_such_prompts.json"),
                                         shot(clips, 2, name="k", frames="1001-1002",
                                              prompts=[{"frame": 1003, "box": [10, 10, 50, 50]}])])
    assert main(["batch", str(manifest), "--check"]) == 2
    err = capsys.readouterr().err
    assert "shot r: frames: bad frame range" in err and "shot p: prompts: prompt file not found" in err
    assert "shot k: prompts: keyframe(s) 1003 outside" in err
    assert not (tmp_path / "alpha").exists()


def test_chunks_cover_every_shot_exactly_once_and_only_filters(clips, tmp_path, capsys):
    shots = [shot(clips, i % 3, name=f"s{i}") for i in range(5)]
    manifest = write_manifest(tmp_path, shots)
    loaded = batch.load_manifest(manifest)
    names = [[s.name for s in batch.select_shots(loaded.shots, chunk=(i, 2))] for i in (1, 2)]
    assert sorted(names[0] + names[1]) == [f"s{i}" for i in range(5)] and not set(names[0]) & set(names[1])
    assert [s.name for s in batch.select_shots(loaded.shots, only=["s4", "s1"])] == ["s1", "s4"]
    with pytest.raises(ValueError, match="no shot named zz"):
        batch.select_shots(loaded.shots, only=["zz"])
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(ValueError):
            batch.parse_chunk(bad)

    log = tmp_path / "jobs.jsonl"
    assert main(["batch", str(manifest), "--quiet", "--only", "s0,s1,s2", "--chunk", "1/2",
                 "--jobs-log", str(log)]) == 0
    assert main(["batch", str(manifest), "--quiet", "--only", "s0,s1,s2", "--chunk", "2/2",
                 "--jobs-log", str(log)]) == 0
    ran = [json.loads(line)["shot"] for line in log.read_text().splitlines()]
    assert sorted(ran) == ["s0", "s1", "s2"]
    assert all(alphas(tmp_path, n) == expected(n) for n in ("s0", "s1", "s2"))
    assert not alphas(tmp_path, "s3") and not alphas(tmp_path, "s4")  # --only left them out
    assert main(["batch", str(manifest), "--only", "nope"]) == 2
    assert "no shot named nope" in capsys.readouterr().err


def test_stop_ends_the_batch_after_the_current_frame(clips, tmp_path, monkeypatch):
    """Ctrl-C sets `stop`: the frame being computed is still written, then the batch ends (exit 130)."""
    manifest = write_manifest(tmp_path, [shot(clips, 0), shot(clips, 1)])
    shots = batch.load_manifest(manifest).shots
    stop = threading.Event()
    real = runner.matte_shot

    def matte_with_ctrl_c_during_the_first_frame(source, prompts, engine, output, **kw):
        inner = engine.engine.run

        def run(*args, **kwargs):
            for result in inner(*args, **kwargs):
                stop.set()
                yield result
        monkeypatch.setattr(engine.engine, "run", run)
        return real(source, prompts, engine, output, **kw)

    monkeypatch.setattr(runner, "matte_shot", matte_with_ctrl_c_during_the_first_frame)
    report = batch.run_batch(shots, progress=False, echo=lambda line, error: None, stop=stop)
    assert report.interrupted and report.exit_code == 130
    assert [(r.status, r.written) for r in report.results] == [("interrupted", [1001])]  # shot 2 never started
    assert alphas(tmp_path, "sh10") == ["sh10.1001.exr"] and not alphas(tmp_path, "sh20")


def test_check_catches_what_would_fail_before_the_first_frame_naming_the_shot(clips, tmp_path, capsys):
    # a farm job that is bound to fail should not be submitted: --check (and --openjd) find them up front
    manifest = write_manifest(tmp_path, [
        shot(clips, 0, name="space", colorspace="ACEScgg"),
        shot(clips, 0, name="engine", engine="clasic"),
        shot(clips, 0, name="weights", engine="mam2", checkpoint="nosuch.safetensors"),
        shot(clips, 0, name="nothing", prompts=[{"frame": 1001, "points": [[10, 10, 0]]}]),  # background only
        shot(clips, 1, name="good"),
    ])
    assert main(["batch", str(manifest), "--check"]) == 2
    err = capsys.readouterr().err
    assert "shot space: colorspace: unknown colour space 'ACEScgg'" in err
    assert "shot engine: engine 'clasic' is unknown" in err
    assert "shot weights: checkpoint not found:" in err and "nosuch.safetensors" in err
    assert "shot nothing: prompts: frame 1001: only background points" in err
    assert "shot good" not in err
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "bundle")]) == 2
    assert "shot engine: engine 'clasic'" in capsys.readouterr().err and not (tmp_path / "bundle").exists()
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "bundle"), "--check", "--only", "good"]) == 0
    assert not (tmp_path / "bundle").exists()  # --check only checks


def test_frames_take_the_overlap_with_each_shot_and_check_refuses_none(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="a")])
    assert main(["batch", str(manifest), "--frames", "2001-2003", "--check"]) == 2
    assert "--frames 2001-2003: none of them is among the shot's frames 1001-1003" in capsys.readouterr().err
    assert main(["batch", str(manifest), "--frames", "1002-1008", "--quiet"]) == 0  # shots differ in length
    assert alphas(tmp_path, "a") == ["a.1002.exr", "a.1003.exr"]


def test_a_failed_shot_records_the_frames_it_wrote_and_a_hole_in_the_plates_is_reported(clips, tmp_path, capsys):
    import shutil
    plates = tmp_path / "plates"
    shutil.copytree(clips / "solid_0" / "plate", plates)
    good = (plates / "plate.1003.exr").read_bytes()
    from mam2_server.io import exr_layout
    _, table = exr_layout._headers(good, multipart=False)
    first = int.from_bytes(good[table:table + 8], "little")  # the first chunk: y, size, then compressed pixels
    bad = bytearray(good)
    bad[first + 8:first + 24] = b"\xff" * 16
    (plates / "plate.1003.exr").write_bytes(bytes(bad))  # whole, header and chunk table sound: fails when decoded
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="cut", input=str(plates / "plate.####.exr"))])
    log = tmp_path / "jobs.jsonl"
    assert main(["batch", str(manifest), "--quiet", "--jobs-log", str(log)]) == 1
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["status"] == "failed" and record["written"] == len(alphas(tmp_path, "cut")) == 2
    (plates / "plate.1003.exr").write_bytes(good)
    (plates / "plate.1002.exr").unlink()  # a render that failed to write a frame
    capsys.readouterr()
    assert main(["batch", str(manifest), "--check"]) == 0
    assert "shot cut: warning: no plates for frames 1002 inside its span" in capsys.readouterr().err


def test_a_changed_prompt_or_weights_redo_the_shot_but_the_same_weights_elsewhere_do_not(clips, tmp_path, caplog):
    import logging
    from mam2_server.batch.manifest import Shot
    from mam2_server.engines import EngineConfig
    from mam2_server.io.image import read_info
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="a")])
    assert main(["batch", str(manifest), "--quiet"]) == 0
    first = {p.name: p.stat().st_ino for p in (tmp_path / "alpha").glob("a.*.exr")}
    assert read_info(tmp_path / "alpha" / "a.1001.exr").metadata.get(runner.RECIPE)  # what made it
    # the manifest's prompt is corrected: resume must not keep the mattes of the old one
    box = json.loads((clips / "solid_0" / "prompts.json").read_text())[0]["box"]
    fixed = [{"frame": 1001, "box": [box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2]}]
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="a", prompts=fixed)])
    with caplog.at_level(logging.WARNING, logger="mam2_server.batch.runner"):
        assert main(["batch", str(manifest), "--quiet"]) == 0
    assert "made with other prompts" in caplog.text
    second = {p.name: p.stat().st_ino for p in (tmp_path / "alpha").glob("a.*.exr")}
    assert all(second[n] != first[n] for n in first), "a frame of the old prompt was kept"
    assert main(["batch", str(manifest), "--quiet"]) == 0  # and then all is done
    assert {p.name: p.stat().st_ino for p in (tmp_path / "alpha").glob("a.*.exr")} == second
    # weights: by content, not by path (a farm mounts them elsewhere; a retrained file is new)
    (tmp_path / "w1.pt").write_bytes(b"weights")
    (tmp_path / "w2.pt").write_bytes(b"weights")
    shots = [Shot("a", "in.####.exr", "out.####.exr", engine=EngineConfig("mam2", str(tmp_path / w)))
             for w in ("w1.pt", "w2.pt")]
    assert runner.recipe(shots[0]) == runner.recipe(shots[1])
    (tmp_path / "w2.pt").write_bytes(b"weights, retrained")
    assert runner.recipe(shots[0]) != runner.recipe(shots[1])


def test_outputs_and_logs_that_cannot_be_written_are_refused_before_any_work(clips, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="a", output=str(blocker / "alpha.####.exr")),
                                         shot(clips, 1, name="b")])
    assert main(["batch", str(manifest), "--check"]) == 2
    assert f"shot a: output {blocker}/alpha.####.exr: {blocker} is not a folder" in capsys.readouterr().err
    assert main(["batch", str(manifest), "--only", "b", "--jobs-log", str(blocker / "jobs.jsonl")]) == 2
    assert "--jobs-log" in capsys.readouterr().err and alphas(tmp_path, "b") == []  # nothing ran
    assert main(["batch", str(manifest), "--openjd", str(tmp_path / "bundle"), "--chunk", "1/2"]) == 2
    assert "--chunk: a job bundle has every shot" in capsys.readouterr().err


def test_check_reads_every_plates_header_and_chunk_table(clips, tmp_path, capsys):
    """A plate cut short (its header still reads) or of another size fails mid-run: --check finds it."""
    import shutil

    import numpy as np

    from mam2_server.io.image import write_image
    plates = tmp_path / "plates"
    shutil.copytree(clips / "solid_0" / "plate", plates)
    cut = plates / "plate.1002.exr"
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    write_image(plates / "plate.1003.exr", np.zeros((32, 48, 3), np.float32))
    manifest = write_manifest(tmp_path, [shot(clips, 0, name="bad", input=str(plates / "plate.####.exr")),
                                         shot(clips, 1, name="good")])
    assert main(["batch", str(manifest), "--check"]) == 2
    err = capsys.readouterr().err
    assert "shot bad: input: plate.1002.exr:" in err and "truncated" in err
    assert "shot bad: input: plate.1003.exr: display window 48x32, the shot's first plate is 96x64" in err
    assert "shot good" not in err
    assert main(["batch", str(manifest), "--check", "--only", "bad", "--frames", "1001"]) == 0  # only its frames


def test_resume_redoes_an_alpha_cut_short(clips, tmp_path, capsys):
    manifest = write_manifest(tmp_path, [shot(clips, 0)])
    assert main(["batch", str(manifest), "--quiet"]) == 0
    cut = tmp_path / "alpha" / "sh10.1002.exr"
    data = cut.read_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3])  # a copy interrupted: the header reads, the pixels do not
    capsys.readouterr()
    assert main(["batch", str(manifest), "--quiet"]) == 0
    assert "sh10: done, 1 frames written of 3" in capsys.readouterr().out
    assert cut.read_bytes() == data
