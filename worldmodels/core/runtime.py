"""Where and how the models run: device, precision and CPU threads, resolved once per process.

Every stage, benchmark and test helper gets a :class:`Runtime` from :func:`resolve` (the
pipeline's ``runtime:`` section) and uses it for three things:

- ``runtime.device``: models and batches go there (``auto``: CUDA when torch sees a GPU).
  Random draws that decide results (the dream's noise, the sampled windows) are made by CPU
  generators and then moved, so the same seeds draw the same numbers on every device.
- ``runtime.autocast()``: bfloat16 autocast where ``precision`` resolved to ``bf16``, else nothing.
  ``auto`` picks bf16 only where it was measured faster: on a CPU with native bf16 instructions
  (AVX512_BF16 or AMX; 2.0x per Dreamer update). A CPU without them emulates bf16 at 20-110x the
  cost of fp32, and on a GPU these models are too small for bf16 to pay (an H200: 0.126 s per
  Dreamer update at 50 x 50 in bf16, 0.099 in fp32; the added casts cost more launches than the
  matrix units save), so there ``auto`` is fp32; ``bf16`` still forces it.
- ``runtime.threads``: torch's intra-op threads on the CPU (``0``: one per core). The OpenMP wait
  policy is set to PASSIVE before torch loads (``worldmodels/__init__.py``): spinning threads of a
  2-thread op fight a busy second core and made stages 6-10x slower (benchmarks/threads.py).

The resolved choice is printed once by the CLI and written into every checkpoint and
``config.yaml`` (:meth:`Runtime.record`).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldmodels.config import ConfigError, RuntimeConfig


def cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512_BF16 or AMX), so bf16 autocast pays."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(check) for check in checks):
        return any(check() for check in checks)
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_description() -> str:
    """``'AMD EPYC (AVX2, no native bf16), 2 cores'``: what a speed number was measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}, {bf16}), {os.cpu_count()} cores"


def cuda_has_bf16(device: torch.device) -> bool:
    """True when the CUDA device computes bfloat16 natively (compute capability 8.0 or newer)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


@dataclass(frozen=True)
class Runtime:
    """A resolved ``runtime:`` section: the device, the precision, the CPU threads."""

    device: torch.device
    precision: str
    """``fp32`` or ``bf16`` (bf16: autocast around the forward passes that ask for it)."""
    threads: int
    compile: bool = False
    why: str = ""
    """Why ``precision`` resolved as it did (printed with the choice)."""
    backend: str = "local"
    """Where worker pools run (``local`` or ``ray``; ``worldmodels.pools.backend.open_pool``)."""
    ray_address: str | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on this device when the precision is bf16, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device; from the CPU to CUDA through pinned memory, without blocking."""
        if tensor.device == self.device:
            return tensor
        if self.is_cuda and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def compile_modules(self, *modules: torch.nn.Module) -> None:
        """``torch.compile`` each module in place when ``runtime.compile`` is on (its parameter names, and
        so its checkpoints, stay the same). Only stateless stacks are given: a module with a Python loop
        over time would recompile at every length."""
        if self.compile:
            for module in modules:
                module.compile()

    def apply(self) -> Runtime:
        """Set torch's CPU threads and the worker pools' backend for this process; returns ``self``."""
        from worldmodels.pools.backend import use_backend

        torch.set_num_threads(self.threads)
        use_backend(self.backend, self.ray_address)
        return self

    def record(self) -> dict[str, Any]:
        """What checkpoints and ``config.yaml`` keep of the choice."""
        return {"device": str(self.device), "device_name": self.device_name(), "precision": self.precision,
                "threads": self.threads, "compile": self.compile, "backend": self.backend}

    def device_name(self) -> str:
        if self.is_cuda:
            return torch.cuda.get_device_name(self.device)
        return cpu_description()

    def describe(self) -> str:
        """One line for the log: ``runtime: cpu (AMD EPYC ...), fp32 (...), 2 threads``."""
        threads = f"{self.threads} CPU thread{'' if self.threads == 1 else 's'}"
        compiled = ", torch.compile" if self.compile else ""
        pools = ", workers on Ray" if self.backend == "ray" else ""
        return (f"runtime: {self.device} ({self.device_name()}), {self.precision} ({self.why}), "
                f"{threads}{compiled}{pools}")


def resolve_device(spec: str, cuda_available: bool | None = None, cuda_count: int | None = None) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> a device torch can use; a clear error when it cannot."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if spec == "auto":
        return torch.device("cuda" if available else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not available:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"runtime.device: {spec!r} asked for, but torch sees no CUDA device (torch "
                          f"{torch.__version__}, {build}); use runtime.device=cpu or auto")
    device = torch.device(spec)
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    index = 0 if device.index is None else device.index
    if index >= count:
        raise ConfigError(f"runtime.device: {spec!r} asked for, but torch sees {count} CUDA device(s)")
    return torch.device("cuda", index)


def resolve_precision(spec: str, device: torch.device,
                      native_bf16: Callable[[torch.device], bool] | None = None) -> tuple[str, str]:
    """``auto | fp32 | bf16`` on ``device`` -> (``fp32`` or ``bf16``, why).

    ``native_bf16(device)`` says whether the device computes bf16 natively; injectable so tests can
    play both kinds of CPU (default: :func:`cpu_has_native_bf16` / :func:`cuda_has_bf16`).
    """
    if native_bf16 is None:
        def native_bf16(d: torch.device) -> bool:
            return cuda_has_bf16(d) if d.type == "cuda" else cpu_has_native_bf16()
    if spec == "fp32":
        return "fp32", "asked for"
    native = native_bf16(device)
    if spec == "bf16":
        return "bf16", "asked for" if native else "asked for, though this device emulates bf16 (slow)"
    if device.type == "cuda":
        return "fp32", "auto: fp32 on GPUs (bf16 measured slower at these model sizes)"
    if native:
        return "bf16", "auto: this device computes bf16 natively"
    return "fp32", "auto: this device has no native bf16"


def resolve_threads(threads: int) -> int:
    """``runtime.threads`` (0: one per core) -> a thread count."""
    return threads if threads > 0 else (os.cpu_count() or 1)


def resolve(settings: RuntimeConfig, cuda_available: bool | None = None,
            native_bf16: Callable[[torch.device], bool] | None = None) -> Runtime:
    """The :class:`Runtime` a pipeline's ``runtime:`` section asks for on this machine."""
    device = resolve_device(settings.device, cuda_available)
    precision, why = resolve_precision(settings.precision, device, native_bf16)
    return Runtime(device=device, precision=precision, threads=resolve_threads(settings.threads),
                   compile=settings.compile, why=why, backend=settings.backend, ray_address=settings.ray_address)


def rng_state(runtime: Runtime) -> dict[str, Any]:
    """torch's global RNG states for a resume checkpoint: the CPU's (``torch_rng``), and the CUDA
    device's (``cuda_rng``) when the models run there (their sampling draws from it)."""
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    if runtime.is_cuda:
        state["cuda_rng"] = torch.cuda.get_rng_state(runtime.device)
    return state


def restore_rng_state(checkpoint: dict[str, Any], runtime: Runtime) -> None:
    """Undo :func:`rng_state`; a CUDA state saved on another device kind is left alone (the draws then differ,
    the training is still valid)."""
    torch.set_rng_state(checkpoint["torch_rng"])
    if runtime.is_cuda and "cuda_rng" in checkpoint:
        torch.cuda.set_rng_state(checkpoint["cuda_rng"], runtime.device)
