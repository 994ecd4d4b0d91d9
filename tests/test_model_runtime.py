"""The tracker's CUDA speed paths where the CPU can check them (tests/test_model_cuda_speed.py runs them on a
GPU): option parsing, that everything is off on the CPU, the one-frame lookahead through an in-place
stream, CUDA graph bookkeeping and the tracker's graph path through emulated graphs, and the matter's
sync-free token routing."""
import logging

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_flatten

from frames import moving_disc
from mam2_server.engines import EngineConfig, EngineError, create_engine
from mam2_server.engines.mam2 import MAM2Engine
from mam2_server.model.build import build_mam2
from mam2_server.model.config import LoRAConfig, PDDConfig, preset
from mam2_server.model.cuda_graphs import StageGraphs, _Graph
from mam2_server.model.matter_vit import Block
from mam2_server.model.runtime import CudaOptions, InlineStream
from mam2_server.model.tracker import StreamingTracker
from mam2_server.prompts import Point, Prompt
from test_model_tracker import _frames


@pytest.fixture(scope="module")
def tiny():
    return build_mam2("tiny", seed=1)


def test_cuda_options_parse():
    assert CudaOptions.parse(None) == CudaOptions.parse("") == CudaOptions()
    assert CudaOptions() == CudaOptions(async_io=True, overlap=True, graphs=None, static_routing=True)
    assert CudaOptions.parse("graphs=off, Overlap=0") == CudaOptions(graphs=False, overlap=False)
    assert CudaOptions.parse("all=off;graphs=on") == CudaOptions(False, False, True, False)
    assert CudaOptions.parse("graphs=on,graphs=auto").graphs is None
    assert CudaOptions.parse(CudaOptions(overlap=False).describe()) == CudaOptions(overlap=False)
    assert CudaOptions().graphs_on("bfloat16") and CudaOptions().graphs_on("float16")
    assert not CudaOptions().graphs_on(None) and CudaOptions(graphs=True).graphs_on(None)
    for bad, message in [("graphs", "NAME=on|off"), ("speed=on", "unknown option 'speed'"),
                         ("overlap=auto", "give on or off$"), ("graphs=maybe", "on or off or auto")]:
        with pytest.raises(ValueError, match=message):
            CudaOptions.parse(bad)


def test_a_bad_mam2_cuda_variable_is_an_engine_error(monkeypatch):
    monkeypatch.setenv("MAM2_CUDA", "graphs=sometimes")
    with pytest.raises(EngineError, match="MAM2_CUDA: graphs='sometimes'"):
        create_engine(EngineConfig("mam2", checkpoint="/no/such/weights.safetensors"))


def test_every_cuda_option_is_off_on_the_cpu(tiny):
    tracker = StreamingTracker(tiny, cuda=CudaOptions(graphs=True))
    assert not tracker.async_io and not tracker.static_routing and not tracker.lookahead
    assert tracker.graphs is None and tracker.encoder_stream is None
    engine = MAM2Engine(tiny)
    assert not engine.tracker.lookahead


class RecordingStream(InlineStream):
    """The side-stream protocol in place, recording the order of submits and joins."""

    def __init__(self):
        self.events, self.count = [], 0

    def submit(self, fn):
        work = super().submit(fn)
        self.count += 1
        work.tag = self.count
        self.events.append(f"S{work.tag}")
        return work

    def join(self, work):
        self.events.append(f"J{work.tag}")
        return super().join(work)


def _by_frame(results):
    return {r.frame: r for r in results}


def test_lookahead_encodes_the_next_frame_first_and_changes_no_bit(tiny):
    src = moving_disc(7)
    prompts = [Prompt(frame=3, box=(15, 12, 36, 33)), Prompt(frame=5, points=(Point(36, 22),))]
    plain = _by_frame(MAM2Engine(tiny).run(src, prompts))
    stream = RecordingStream()
    engine = MAM2Engine(tiny, encoder_stream=stream)
    assert engine.tracker.lookahead
    ahead = _by_frame(engine.run(src, prompts))
    assert sorted(ahead) == sorted(plain) == src.frames
    for f in src.frames:
        for name in ("alpha", "mask", "trimap"):
            np.testing.assert_array_equal(getattr(ahead[f], name), getattr(plain[f], name), err_msg=f"{name} {f}")
    # passes: 2, 1 backward from 3 (keyframe added before the loop); 3, 4; 5, 6, 7 (keyframes through the stream).
    # Frame i + 1's encoder is submitted before frame i is taken; every frame is encoded and taken once.
    assert stream.events == ["S1", "S2", "J1", "J2", "S3", "S4", "J3", "J4", "S5", "S6", "J5", "S7", "J6", "J7"]


class FailingSource:
    """A source whose plate of one frame cannot be read."""

    def __init__(self, source, bad):
        self.source, self.bad = source, bad
        self.frames, self.width, self.height = source.frames, source.width, source.height

    def display(self, frame):
        if frame == self.bad:
            raise OSError(f"plate {frame}: truncated file")
        return self.source.display(frame)

    def linear(self, frame):
        return self.source.linear(frame)


def test_lookahead_hands_out_the_frame_before_an_unreadable_one(tiny):
    src = FailingSource(moving_disc(6), bad=5)
    prompts = [Prompt(frame=2, box=(15, 12, 36, 33))]
    for engine in (MAM2Engine(tiny), MAM2Engine(tiny, encoder_stream=InlineStream())):
        got = []
        with pytest.raises(OSError, match="plate 5: truncated"):
            for result in engine.run(src, prompts):
                got.append(result.frame)
        assert got == [1, 2, 3, 4]  # backward 1, then 2, 3, 4: frame 4 is not lost to reading 5 early


def test_an_encoded_frame_is_used_once(tiny):
    tracker = StreamingTracker(tiny, encoder_stream=InlineStream())
    frames = _frames(2)
    shot = tracker.new_shot(128, 128)
    tracker.add_keyframe(shot, 0, tracker.encode(frames[0]), Prompt(frame=0, box=(20, 40, 60, 80)))
    encoded = tracker.encode(frames[1])
    tracker.track(shot, 1, encoded)
    with pytest.raises(RuntimeError, match="used once"):
        tracker.track(shot, 2, encoded)


class EmulatedGraphs(StageGraphs):
    """StageGraphs whose "capture" keeps `fn` and static copies of the inputs, and whose replay recomputes
    `fn` on the static inputs into the static outputs: a CUDA graph's data flow on the CPU. A stage
    function that read anything but its inputs would replay stale values."""

    def __init__(self, **kwargs):
        super().__init__(torch.device("cpu"), **kwargs)

    def _capture(self, name, fn, inputs):
        static = [x.clone() for x in inputs]
        leaves, spec = tree_flatten(fn(*static))

        class Replay:
            @staticmethod
            def replay():
                for out, new in zip(leaves, tree_flatten(fn(*static))[0]):
                    if isinstance(out, torch.Tensor):
                        out.copy_(new)
        return _Graph(Replay(), static, leaves, spec)


def _run_shot(tracker, frames):
    shot = tracker.new_shot(128, 128, num_frames=len(frames))
    outs = [tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(20, 40, 60, 80)))]
    return outs + [tracker.track(shot, i, frames[i]) for i in range(1, len(frames))]


@pytest.mark.parametrize("parts", ["mam2", "sam2_only"])
def test_tracker_graph_path_replays_bit_identical(tiny, parts):
    model = tiny if parts == "mam2" else build_mam2(
        preset("tiny").replace(pdd=PDDConfig(enabled=False), lora=LoRAConfig(rank=0)), seed=0)
    frames = _frames(7)
    eager = _run_shot(StreamingTracker(model), frames)
    tracker = StreamingTracker(model)
    tracker.graphs = EmulatedGraphs()
    graphed = _run_shot(tracker, frames)
    assert tracker.graphs.replays["decode"] == 4 and tracker.graphs.replays["memory_encoder"] == 4  # 6 - 2 warm-up
    assert tracker.graphs.status() == {"decode": "graphs (1)", "memory_encoder": "graphs (1)"}
    for a, b in zip(eager, graphed):
        for name in ("mask", "trimap", "alpha", "mask_logits", "trimap_logits", "object_score"):
            x, y = getattr(a, name), getattr(b, name)
            if isinstance(x, torch.Tensor):
                torch.testing.assert_close(y, x, rtol=0, atol=0)
            elif isinstance(x, np.ndarray):
                np.testing.assert_array_equal(y, x)
            else:
                assert x == y, name


def test_graphs_fall_back_to_eager_once_and_say_so(caplog):
    double = lambda x: x * 2  # noqa: E731
    x = torch.arange(4.0)
    graphs = StageGraphs(torch.device("cpu"), warmup=1)  # no CUDA here: the capture fails
    with caplog.at_level(logging.WARNING, logger="mam2_server.model.cuda_graphs"):
        outs = [graphs.run("stage", None, double, (x,)) for _ in range(4)]
    assert all(torch.equal(o, x * 2) for o in outs)
    assert len(caplog.records) == 1 and "capture failed" in caplog.text
    assert graphs.status()["stage"].startswith("eager: capture failed")

    emulated = EmulatedGraphs(warmup=1, max_graphs=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mam2_server.model.cuda_graphs"):
        for n in (4, 4, 4, 5, 5, 6, 4):  # shapes change: a second signature is one too many
            assert torch.equal(emulated.run("stage", None, double, (torch.ones(n),)), torch.full((n,), 2.0))
    assert emulated.replays["stage"] == 3  # the two later calls of the first shape too
    assert len(caplog.records) == 1 and "more than 1 input shapes" in caplog.text


@pytest.mark.parametrize("max_tokens", [1, 7, 40, 1000])
def test_static_routing_keeps_the_same_tokens(max_tokens):
    torch.manual_seed(0)
    block = Block(dim=32, num_heads=2, mlp_ratio=2.0, window_size=0, routed=True).eval()
    x = torch.randn(2, 6, 8, 32)
    with torch.no_grad():
        ref, keep = block(x, keep_ratio=0.25, max_tokens=max_tokens)
        out, keep_static = block(x, keep_ratio=0.25, max_tokens=max_tokens, static_routing=True)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(keep_static, keep, rtol=0, atol=0)
        assert 0 < keep.min() and keep.max() <= min(1.0, max_tokens / 48)
        block.router.out[-2].bias.data[:] = torch.tensor([-50.0, 50.0])  # no token kept: LTRM only
        ref, keep = block(x, keep_ratio=0.25, max_tokens=max_tokens)
        out, keep_static = block(x, keep_ratio=0.25, max_tokens=max_tokens, static_routing=True)
        assert keep.max() == keep_static.max() == 0 and torch.isfinite(out).all()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_matter_static_routing_matches_on_a_whole_frame(tiny):
    image, trimap = torch.randn(1, 3, 96, 160), torch.rand(1, 1, 96, 160).round() * 0.5
    with torch.no_grad():
        ref = tiny.matter(image, trimap)
        out = tiny.matter(image, trimap, static_routing=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
