"""Distribution as a layer over the plain model: process group, device mesh, FSDP2, compile, AC.

Follows torchtitan's ``parallelize_llama``: activation checkpointing and ``torch.compile`` per
block, then ``fully_shard`` on every block and on the root. On GPU the parameters are gathered
in bf16 and gradients reduced in fp32 (the report trains in bf16 with fp32 gradient
accumulation); on CPU everything stays fp32 and the collectives go through gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    mesh: DeviceMesh
    # True when this module created the process group (and so should destroy it).
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Join the process group torchrun or Ray Train set up, or make a 1-process one.

    torchrun exports RANK/WORLD_SIZE/MASTER_ADDR; Ray Train's TorchTrainer has already called
    ``init_process_group`` in each worker. A plain ``python`` run gets a world of one, so the
    same FSDP code path runs everywhere.
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        owns = True
    world = dist.get_world_size()
    # An explicit mesh: "cpu" over gloo on CPU, "cuda" over NCCL on GPU.
    mesh = init_device_mesh(device.type, (world,), mesh_dim_names=("dp",))
    return DistEnv(dist.get_rank(), world, local_rank, device, mesh, owns)


def start_cpu_threads() -> None:
    """Open torch's CPU thread pool on throwaway data before anything that counts. In a fresh
    process, torch's first parallel region computes elementwise math (cos, exp, log, sqrt) on its
    new worker thread differently in the last bits, in about one process in three with 2 threads
    (seen with torch 2.13's CPU build: the first ``torch.cos`` of 4,096 floats differs from the
    second on 2,048 of them; with one thread, or after one parallel region, never). The model's
    RoPE table is such a first call, so without this a run's weights varied from run to run."""
    if torch.get_num_threads() > 1:
        torch.linspace(0.0, 1.0, 65536 * torch.get_num_threads()).exp_()  # a chunk for every thread


def close_distributed(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def parallelize(
    model: nn.Module,
    env: DistEnv,
    *,
    param_dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
    compile: bool = False,
) -> nn.Module:
    """Wrap ``model`` (a ``training.model.Transformer``) in place and return it."""
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for name, block in list(model.layers.items()):
            model.layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)
    if compile:
        # Per block, as torchtitan does: the blocks are identical, so one graph is reused.
        for name, block in list(model.layers.items()):
            model.layers[name] = torch.compile(block, fullgraph=True)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    n = len(model.layers)
    for i, block in enumerate(model.layers.values()):
        # The last block's parameters are needed again at once by backward: keep them gathered.
        fully_shard(block, mesh=env.mesh, mp_policy=mp, reshard_after_forward=i < n - 1)
    fully_shard(model, mesh=env.mesh, mp_policy=mp)
    return model
