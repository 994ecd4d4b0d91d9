"""torch.distributed for `mam2 train` under torchrun: process group, device per rank, rank checks.

    torchrun --nproc-per-node 8 -m mam2_server.cli train ...          # one node
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m mam2_server.cli train ...   # several

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them this is a single process. The
backend is NCCL on CUDA and gloo on CPU (the tests run two CPU ranks with gloo).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "weights_digest"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised: bool = False  # this process created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str | None = None) -> "DistContext":
        """The context torchrun describes in the environment (single process without it)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if want_cuda and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: CUDA is not available on this machine")
        if want_cuda:
            dev = torch.device(device if device and ":" in device and world == 1 else f"cuda:{local}")
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        if world <= 1:
            return cls(device=dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if want_cuda else "gloo")
            return cls(rank, world, local, dev, initialised=True)
        return cls(rank, world, local, dev)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (pickled), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.initialised and dist.is_initialized():
            dist.destroy_process_group()


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer's bytes, in state-dict order: equal digests = identical weights."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
