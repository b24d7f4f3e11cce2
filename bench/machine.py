"""What a bench table ran on, printed with it: CPU model, cores, torch threads, OMP_NUM_THREADS."""

import os
import platform
from pathlib import Path

import torch


def describe() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if cpuinfo.exists() else platform.processor()
    return (f"{model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
