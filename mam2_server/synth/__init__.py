"""Synthetic shots with exact ground-truth alpha (demo, tests, benchmarks, training)."""
from mam2_server.synth.conditions import CONDITIONS
from mam2_server.synth.clip import (
    CAMERAS, KINDS, ClipPaths, Layers, SynthClip, make_benchmark, make_clip, prompt_from_alpha, write_clip,
)

__all__ = ["CAMERAS", "CONDITIONS", "KINDS", "ClipPaths", "Layers", "SynthClip", "make_benchmark", "make_clip",
           "prompt_from_alpha", "write_clip"]
