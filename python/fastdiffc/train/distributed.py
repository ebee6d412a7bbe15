"""Multi-process training on torch.distributed (DistributedDataParallel), launched by torchrun.

    torchrun --standalone --nproc-per-node 2 -m fastdiffc train --data DIR ...          # one machine
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id RUN -m fastdiffc train --data DIR ...  # each machine

Without torchrun (WORLD_SIZE unset or 1) nothing here is active and `fastdiffc train` is the
single-process trainer, step for step. Under torchrun:

- backend: gloo on CPU, NCCL when CUDA is available (FASTDIFFC_DIST_BACKEND overrides);
- every rank builds the same model from the same seed; DDP broadcasts rank 0's parameters
  when it wraps the model and averages the gradients of every step (a ring all-reduce: every
  rank gets the same bytes), so the optimiser steps, gradient clipping and EMA stay
  bit-identical across the replicas (`replica_digests` checks it at the end of a run);
- each rank draws its own batches: its generator is seeded from (seed, rank), rank 0 with the
  single-process seed; the global batch is world_size × --batch-size;
- rank 0 alone writes the run directory (checkpoint, logs, held-out evaluation, exports);
  decisions taken by the clock (time limit, checkpoint every N minutes) are rank 0's,
  broadcast to all, so the ranks never disagree on when to stop or checkpoint;
- a checkpoint holds every rank's generator and λ-sampler state, so `--resume` with the same
  number of processes replays exactly the same steps; with another number, ranks the
  checkpoint does not cover start fresh generators (seeded from seed, rank and step).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant: rank r's generator seed = seed + 1 + r * stride


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CURRENT: DistInfo | None = None


def current() -> DistInfo | None:
    """The process group this process belongs to (None: a single-process run)."""
    return _CURRENT


def is_main() -> bool:
    return _CURRENT is None or _CURRENT.is_main


def init_from_env() -> DistInfo | None:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...); None when this is not a multi-process launch."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    backend = os.environ.get("FASTDIFFC_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    _CURRENT = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)
    return _CURRENT


def shutdown(clean: bool = False) -> None:
    """Leave the process group. `clean` (every rank finished normally): collect the garbage first
    (a DDP wrapper in a reference cycle would otherwise be destroyed at interpreter exit, after the
    group, which can abort the process) and meet the other ranks, so no rank tears down its
    connections while another still uses them."""
    global _CURRENT
    if _CURRENT is None:
        return
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
    _CURRENT = None


def rank_seed(seed: int, rank: int) -> int:
    """The batch generator's seed of `rank` (rank 0: the single-process seed + 1)."""
    return (seed + 1 + rank * SEED_STRIDE) % (1 << 63)


def wrap(net: torch.nn.Module) -> torch.nn.Module:
    """`net` for the training forward: DDP-wrapped under torchrun (sharing its parameters)."""
    if _CURRENT is None:
        return net
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [_CURRENT.local_rank] if _CURRENT.backend == "nccl" else None
    return DistributedDataParallel(net, device_ids=device_ids)


def agree(*flags: bool) -> tuple[bool, ...]:
    """Rank 0's values of clock-driven decisions, on every rank."""
    if _CURRENT is None:
        return tuple(bool(f) for f in flags)
    import torch.distributed as dist

    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return tuple(bool(v) for v in t.tolist())


def gather_objects(obj) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on every rank (None in a single-process run)."""
    if _CURRENT is None:
        return None
    import torch.distributed as dist

    out = [None] * _CURRENT.world_size
    dist.all_gather_object(out, obj)
    return out


def parameter_digest(module: torch.nn.Module) -> str:
    """blake2b-128 of every parameter and buffer's bytes, in state_dict order."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def replica_digests(module: torch.nn.Module) -> list[str] | None:
    """Every rank's parameter digest (on every rank); None in a single-process run."""
    return gather_objects(parameter_digest(module))


__all__ = ["DistInfo", "agree", "current", "gather_objects", "init_from_env", "is_main", "parameter_digest",
           "rank_seed", "replica_digests", "shutdown", "wrap"]
