"""Several processes training one policy (accelerate launch / torchrun): prompts split across
them, gradients averaged, replicas checked identical at the end."""

from __future__ import annotations

import os
import sys

import torch

from ..errors import UpoError


def process_rank() -> int:
    """This process's place among those torchrun / accelerate started (0 when alone): process 0
    is the one that writes the run directory."""
    return int(os.environ.get("RANK", "0"))


class Distributed:
    """Prompts split across processes (accelerate launch / torchrun), gradients averaged."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = process_rank()
        if self.world == 1 and int(os.environ.get("ACCELERATE_NUM_PROCESSES", "1")) > 1:
            print(
                "upo: warning: accelerate asked for several processes but only one started; on CPU use "
                "`accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`",
                file=sys.stderr,
            )
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # Statistics are CPU tensors (gloo); GPU gradients go through NCCL.
                backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
                dist.init_process_group(backend)
            self.dist = dist

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sync_grads(self, net) -> None:
        if self.world == 1:
            return
        for p in net.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            self.dist.all_reduce(p.grad)
            p.grad /= self.world

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t) / self.world

    def broadcast_params(self, net) -> None:
        if self.world > 1:
            for p in net.parameters():
                self.dist.broadcast(p.data, 0)

    def checksums(self, net) -> list[float]:
        """One parameter checksum per process: replicas must stay identical."""
        local = torch.tensor(
            [sum(float(p.detach().double().sum()) for p in net.parameters())], dtype=torch.float64
        )
        if self.world == 1:
            return [float(local)]
        gathered = [torch.zeros_like(local) for _ in range(self.world)]
        self.dist.all_gather(gathered, local)
        return [float(g) for g in gathered]

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier()

    def close(self) -> None:
        # Without this, gloo sometimes aborts at interpreter exit after a complete run.
        if self.world > 1 and self.dist.is_initialized():
            self.dist.destroy_process_group()


def check_prompt_split(prompts_per_step: int, world: int) -> None:
    """Each process decodes its share of a round's prompts (prompts[rank::world]): a process
    with none would have no trajectories to average its loss over. An uneven share still runs,
    but the processes' gradients are averaged with equal weight, so it is said."""
    if prompts_per_step < world:
        raise UpoError(
            f"prompts_per_step {prompts_per_step} is smaller than the {world} processes; "
            f"use a multiple of {world} or fewer processes"
        )
    if prompts_per_step % world:
        print(
            f"upo: warning: prompts_per_step {prompts_per_step} does not split evenly over "
            f"{world} processes; trajectories on processes with fewer prompts weigh more",
            file=sys.stderr,
        )
