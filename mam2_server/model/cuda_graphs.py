"""CUDA graphs for the tracker's small fixed-shape stages (PDD + MSS decode, memory encoder).

At 1024 px these stages take ~5 ms each on an H200, most of it launching a few hundred small
kernels one by one; a captured graph launches them all at once. `StageGraphs.run(name, key, fn,
inputs)` runs `fn(*inputs)`:

* eagerly for the first `warmup` calls of a signature (stage, static key, and the inputs' shapes,
  strides and dtypes), so lazy initialisation (caches, cuBLAS workspaces) happens outside a capture;
* then captures it once into a `torch.cuda.CUDAGraph` with static input tensors, and from then on
  copies the inputs in, replays, and returns clones of the static outputs (the next replay
  overwrites them, while the memory bank keeps this frame's);
* eagerly again, logged once, when a stage already holds `max_graphs` signatures (shapes keep
  changing) or when its capture fails (the stage stays eager from then on).

Graphs replay exactly the captured kernels, so their results equal eager ones on the same inputs.
Autocast's weight-cast cache is off inside a capture and its warm-up (cached casts must not live in a
graph's memory pool, nor on the capture stream). Parameters are read at their addresses: moving the model after a capture needs a
new `StageGraphs`.
"""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Sequence

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = ["StageGraphs"]

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: list[Any]  # flattened output leaves (tensors are the graph's static buffers)
    spec: Any

    def replay(self, inputs: Sequence[torch.Tensor]):
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        self.graph.replay()
        return tree_unflatten([o.clone() if isinstance(o, torch.Tensor) else o for o in self.outputs], self.spec)


class StageGraphs:
    """Captured graphs of the tracker's stages on one CUDA device (see module docstring)."""

    def __init__(self, device: torch.device, *, autocast_dtype: Optional[torch.dtype] = None, warmup: int = 2,
                 max_graphs: int = 4) -> None:
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: dict[tuple, _Graph] = {}
        self._calls: Counter = Counter()
        self._per_stage: Counter = Counter()
        self._eager: dict[str, str] = {}  # stage -> why it runs eagerly (logged once)
        self._stream: Optional[torch.cuda.Stream] = None
        self.replays: Counter = Counter()  # per stage, for tests and the fps report

    def run(self, name: str, key: Hashable, fn: Callable[..., Any], inputs: Sequence[torch.Tensor]):
        """`fn(*inputs)`, from a captured graph when there is one for this signature."""
        signature = (name, key, tuple((tuple(t.shape), t.stride(), t.dtype) for t in inputs))
        graph = self._graphs.get(signature)
        if graph is None:
            if name in self._eager:
                return fn(*inputs)
            self._calls[signature] += 1
            if self._calls[signature] <= self.warmup:
                return fn(*inputs)
            if self._per_stage[name] >= self.max_graphs:
                self._give_up(name, f"more than {self.max_graphs} input shapes")
                return fn(*inputs)
            graph = self._capture(name, fn, inputs)
            if graph is None:
                return fn(*inputs)
            self._graphs[signature] = graph
            self._per_stage[name] += 1
        self.replays[name] += 1
        return graph.replay(inputs)

    def status(self) -> dict[str, str]:
        """Per stage seen: "graphs (N)" or why it runs eagerly."""
        stages = {s[0] for s in self._calls} | set(self._per_stage)
        return {s: self._eager.get(s) or f"graphs ({self._per_stage[s]})" for s in sorted(stages)}

    def _give_up(self, name: str, why: str) -> None:
        if name not in self._eager:
            self._eager[name] = f"eager: {why}"
            log.warning("CUDA graphs: the %s stage runs eagerly from now on (%s)", name, why)

    def _capture(self, name: str, fn: Callable[..., Any], inputs: Sequence[torch.Tensor]) -> Optional[_Graph]:
        static = [x.clone() for x in inputs]  # same strides as the inputs
        try:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=self.device)
            stream = self._stream
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream), self._no_cast_cache():  # warm up on the capture stream (its workspaces)
                fn(*static)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream), self._no_cast_cache():
                out = fn(*static)
            leaves, spec = tree_flatten(out)
        except Exception as exc:  # an op that cannot be captured (a host sync, a CPU tensor, ...)
            with contextlib.suppress(Exception):
                torch.cuda.synchronize(self.device)
            self._give_up(name, f"capture failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return None
        return _Graph(graph, static, leaves, spec)

    def _no_cast_cache(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype, cache_enabled=False)
