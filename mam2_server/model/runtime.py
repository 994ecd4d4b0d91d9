"""How the streaming tracker runs on a CUDA device: speed options, the encoder's side stream, host copies.

Nothing here changes what is computed, only when and where: every option is ignored on the CPU,
whose path stays the plain eager one (the parity tests pin it bit for bit).

* `CudaOptions`: what is on (all by default; graphs with bf16/fp16 autocast). `parse` reads the
  ``MAM2_CUDA`` form, e.g. ``"graphs=off,overlap=off"``;
* `SideStream`: the next frame's upload and image encoder enqueued on a second CUDA stream
  while the current frame decodes on the main one (events + ``record_stream``, no host wait);
  `InlineStream` runs the same protocol in place (CPU, and tests of the lookahead logic);
* `upload` / `HostCopy`: plates go up from pinned host memory with ``non_blocking`` copies; a
  frame's outputs come down into one pinned buffer with a single wait, when they are handed out.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

__all__ = ["CudaOptions", "SideStream", "InlineStream", "Submitted", "upload", "HostCopy", "ENV_VAR"]

ENV_VAR = "MAM2_CUDA"
T = TypeVar("T")

_TRUE, _FALSE, _AUTO = ("1", "on", "true", "yes"), ("0", "off", "false", "no"), ("auto", "")


@dataclass(frozen=True)
class CudaOptions:
    """Speed options of the streaming tracker on CUDA (ignored on the CPU)."""

    async_io: bool = True  # pinned-memory plate uploads (non_blocking); outputs down with one wait per frame
    overlap: bool = True  # the next frame's upload + image encoder on a side stream (engine lookahead)
    graphs: Optional[bool] = None  # CUDA graphs for the PDD/MSS decode and the memory encoder; None: with autocast
    static_routing: bool = True  # the matter's token router with a fixed capacity (no host sync per routed block)

    def graphs_on(self, autocast: Optional[str]) -> bool:
        return self.graphs if self.graphs is not None else autocast in ("bfloat16", "float16")

    @classmethod
    def parse(cls, text: Optional[str]) -> "CudaOptions":
        """``"graphs=off,overlap=on"`` (also ``all=off``); names as the fields, values on/off/1/0 (auto for graphs)."""
        options = cls()
        names = [f.name for f in dataclasses.fields(cls)]
        for item in (text or "").replace(";", ",").split(","):
            if not item.strip():
                continue
            key, sep, value = (s.strip().lower() for s in item.partition("="))
            if not sep:
                raise ValueError(f"{ENV_VAR}: expected NAME=on|off, got {item.strip()!r}")
            if value in _TRUE:
                flag: Optional[bool] = True
            elif value in _FALSE:
                flag = False
            elif value in _AUTO and key == "graphs":
                flag = None
            else:
                raise ValueError(f"{ENV_VAR}: {key}={value!r}: give on or off" + (" or auto" if key == "graphs" else ""))
            if key == "all":
                options = cls(**{n: flag for n in names})
            elif key in names:
                options = dataclasses.replace(options, **{key: flag})
            else:
                raise ValueError(f"{ENV_VAR}: unknown option {key!r}; known: {', '.join(names)}, all")
        return options

    def describe(self) -> str:
        return ",".join(f"{f.name}={'auto' if v is None else 'on' if v else 'off'}"
                        for f in dataclasses.fields(self) for v in [getattr(self, f.name)])


# -- the encoder's stream -----------------------------------------------------------------------

@dataclass
class Submitted(Generic[T]):
    """Work enqueued on a side stream: its result (tensors not to be read before `join`)."""

    value: T
    ready: Any = None  # torch.cuda.Event recorded after the work, None when it ran in place
    joined: bool = False


class InlineStream:
    """The side-stream protocol run in place: `submit` computes at once, `join` hands the value over."""

    def submit(self, fn: Callable[[], T]) -> Submitted[T]:
        return Submitted(fn())

    def join(self, work: Submitted[T]) -> T:
        if work.joined:
            raise RuntimeError("an encoded frame is used once")
        work.joined = True
        return work.value


class SideStream(InlineStream):
    """A second CUDA stream for work that overlaps the main stream's (the next frame's encoder).

    submit: the side stream first waits for what the main stream has enqueued so far (inputs and
    weights it wrote), then runs `fn` and records an event. join: the main stream waits for that
    event (on the device, not the host), and every tensor of the result is marked as used by the
    main stream, so the caching allocator does not hand its memory to the side stream again
    before the main stream is done with it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device=device)

    def submit(self, fn: Callable[[], T]) -> Submitted[T]:
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            value = fn()
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return Submitted(value, ready)

    def join(self, work: Submitted[T]) -> T:
        value = super().join(work)
        main = torch.cuda.current_stream(self.device)
        main.wait_event(work.ready)
        for t in tree_leaves(value):
            if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                t.record_stream(main)
        return value


# -- host <-> device ------------------------------------------------------------------------------

def upload(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) float32 array -> (1, 3, H, W) on `device` through a pinned buffer, non_blocking.

    The pinned buffer comes from torch's caching host allocator, which does not reuse it before the
    copy enqueued from it has run; the host never waits here.
    """
    host = torch.empty(image.shape, dtype=torch.float32, pin_memory=True)
    host.numpy()[...] = image
    return host.to(device, non_blocking=True).permute(2, 0, 1)[None]


class HostCopy:
    """A frame's outputs brought down together: planes [(H, W)] and scalars into pinned memory with
    non_blocking copies, then one wait (`result`) where they are handed out."""

    def __init__(self, planes: list[torch.Tensor], scalars: list[torch.Tensor]) -> None:
        stacked = torch.stack([p.float() for p in planes])  # (P, H, W)
        flat = torch.cat([s.float().reshape(-1)[:1] for s in scalars]) if scalars else stacked.new_zeros(0)
        self._planes = torch.empty(stacked.shape, dtype=torch.float32, pin_memory=True)
        self._scalars = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
        self._planes.copy_(stacked, non_blocking=True)
        self._scalars.copy_(flat, non_blocking=True)
        self._done = torch.cuda.Event()
        self._done.record(torch.cuda.current_stream(stacked.device))  # the stream the copies were enqueued on

    def result(self) -> tuple[list[np.ndarray], list[float]]:
        """The one host wait of a frame: planes as (H, W) float32 arrays (views of the pinned buffer)."""
        self._done.synchronize()
        planes = self._planes.numpy()
        return [planes[i] for i in range(planes.shape[0])], [float(v) for v in self._scalars.numpy()]
