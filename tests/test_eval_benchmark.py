"""`mam2 eval --benchmark`: VideoMatte240K-test / YouTubeMatte layouts, first-frame GT prompts, a table like the paper's."""
import json

import numpy as np
import pytest

import dataset_layouts as L
from mam2_server.cli import main
from mam2_server.engines.base import Engine, FrameResult
from mam2_server.eval.benchmark import BenchmarkError, evaluate_benchmark, find_clips, first_frame_prompt
from mam2_server.eval.evaluate import evaluate_sequences


def _benchmarks(root):
    """RVM's videomatte_512x288/<set>/<clip>/{com,pha} and MatAnyone's youtubematte_512x288/<set>/<clip>/{har,pha}."""
    L.write_benchmark_clip(root / "videomatte_512x288" / "videomatte_motion" / "0000", seed=1)
    L.write_benchmark_clip(root / "videomatte_512x288" / "videomatte_static" / "0001", seed=2)
    yt = L.write_benchmark_clip(root / "youtubematte_512x288" / "youtubematte_static" / "0000", input_dir="har",
                                seed=3)
    L.write_benchmark_clip(yt, input_dir="com", seed=4)  # har (harmonised) wins over com
    return root


class GroundTruthEngine(Engine):
    """Returns the benchmark's own alphas: every metric must come out 0 if frames line up."""

    name = "gt"

    def __init__(self, clips):
        self.by_first = {str(c.frames[0]): c for c in clips}

    def run_pass(self, source, plan, prompts):
        from mam2_server.data.files import read_alpha

        clip = self.by_first[str(source.files[0])]
        for frame in plan.frames:
            yield FrameResult(frame, read_alpha(clip.alphas[frame]))


def test_find_clips_in_both_layouts(tmp_path):
    root = _benchmarks(tmp_path)
    clips = find_clips(root)
    assert [c.name for c in clips] == ["videomatte_512x288/videomatte_motion/0000",
                                       "videomatte_512x288/videomatte_static/0001",
                                       "youtubematte_512x288/youtubematte_static/0000"]
    assert clips[2].frames[0].parent.name == "har" and len(clips[0].frames) == len(clips[0].alphas) == 4
    assert [c.name for c in find_clips(root / "videomatte_512x288" / "videomatte_motion" / "0000")] == ["0000"]


def test_first_frame_prompts():
    alpha = L.ellipse_alpha(0)
    mask = first_frame_prompt(alpha, "mask")
    assert np.array_equal(mask.mask > 0.5, alpha > 0.5) and mask.box is None
    ys, xs = np.nonzero(alpha > 0.5)
    box = first_frame_prompt(alpha, "box").box
    assert box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    (p,) = first_frame_prompt(alpha, "point").points
    assert alpha[int(p.y), int(p.x)] == 1.0 and p.label == 1
    both = first_frame_prompt(alpha, "box+point")
    assert both.box == box and len(both.points) == 1
    with pytest.raises(BenchmarkError, match="empty"):
        first_frame_prompt(np.zeros((8, 8), np.float32), "box")


def test_perfect_engine_scores_zero(tmp_path):
    root = _benchmarks(tmp_path)
    clips = find_clips(root)
    report = evaluate_benchmark(root, GroundTruthEngine(clips), prompt="box")
    assert set(report["clips"]) == {c.name for c in clips}
    assert all(v == pytest.approx(0, abs=1e-9) for v in report["mean"].values())


def test_cli_benchmark_table_json_and_predictions(tmp_path, capsys):
    root = _benchmarks(tmp_path)
    args = ["eval", "--benchmark", str(root), "--engine", "classic", "--prompt", "box", "--json",
            str(tmp_path / "r.json"), "--save-pred", str(tmp_path / "pred"), "--metrics", "MAD,MSE,Grad,dtSSD"]
    assert main(args) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("clip"))
    assert header.split() == ["clip", "MAD", "MSE", "GRAD", "dtSSD"]  # the paper's columns
    assert "classic (box), mean of 3 clips" in table
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["prompt"] == "box" and len(report["clips"]) == 3 and set(report["mean"]) == {"MAD", "MSE", "Grad",
                                                                                              "dtSSD"}
    name = "videomatte_512x288/videomatte_motion/0000"
    clip = report["clips"][name]
    assert clip["frames"] == 4 and clip["per_frame"]["dtSSD"][0] == 0.0
    assert report["mean"]["MAD"] == pytest.approx(np.mean([c["summary"]["MAD"] for c in report["clips"].values()]))
    # the saved predictions, scored on their own, agree (up to their 8-bit rounding)
    again = evaluate_sequences(str(tmp_path / "pred" / name / "pha" / "####.png"), str(root / name / "pha" / "####.png"),
                               metrics=["MAD"])
    assert again["summary"]["MAD"] == pytest.approx(clip["summary"]["MAD"], abs=2.0)


def test_cli_benchmark_with_a_mam2_checkpoint(tmp_path, capsys):
    from mam2_server.model.checkpoint import save_tiny_checkpoint

    clip = L.write_benchmark_clip(tmp_path / "bench" / "0000", frames=3)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["eval", "--benchmark", str(clip.parent), "--engine", "mam2", "--checkpoint", str(ckpt),
                 "--device", "cpu", "--prompt", "mask", "--metrics", "MAD,dtSSD"]) == 0
    assert "mam2 (mask), mean of 1 clips" in capsys.readouterr().out


def test_benchmark_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--benchmark", str(tmp_path / "empty"), "--engine", "classic"]) == 2
    assert "no clip folders" in capsys.readouterr().err
    clip = L.write_benchmark_clip(tmp_path / "b" / "0000")
    (clip / "pha" / "0002.png").unlink()
    with pytest.raises(BenchmarkError, match="1 frame\\(s\\) without an alpha.*0002.png"):
        find_clips(tmp_path / "b")
    assert main(["eval", "--engine", "classic"]) == 2
    assert "--pred and --gt" in capsys.readouterr().err
    assert main(["eval", "--benchmark", str(tmp_path / "b"), "--metrics", "SAD"]) == 2
    assert "--metrics" in capsys.readouterr().err
