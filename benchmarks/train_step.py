"""Training-step throughput of our FNO against the neuraloperator library's FNO on CPU.

Measures forward + backward samples per second at (modes, width) = (8, 32) and (16, 64) on a
64 x 64 grid, for three implementations of the same architecture in the same process:

* ``ours``: :class:`pdetransfer.engine.models.fno.FNO` (truncated-DFT matmuls, batched-matmul
  1x1 layers);
* ``neuraloperator``: ``neuralop.models.FNO`` configured to the same shape (lift 7 -> w, four
  spectral layers with linear skips, projection w -> 2w -> 1, no positional embedding, no
  channel MLP). Its ``n_modes = (2m, 2m)`` keeps ``[-m, m)`` on the first axis and ``m + 1``
  modes on the half-spectrum axis (one more column than ours). Skipped, and said so in the
  output, when the library is not importable;
* ``textbook``: the reference FNO layer (``rfft2``, complex ``einsum`` on the two kept
  corners, ``irfft2``, ``Conv2d`` 1x1), always available.

neuraloperator is not a dependency of pdetransfer. To include it without letting its
requirements touch the project's torch, use a throwaway virtual environment that sees the
project's packages read-only, e.g.::

    python3 -m venv /tmp/nop-venv
    echo "$(/work/venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /tmp/nop-venv/lib/python3.11/site-packages/project.pth
    /tmp/nop-venv/bin/pip install neuraloperator
    /tmp/nop-venv/bin/python benchmarks/train_step.py

Results go to ``benchmarks/results/train_step.json``; the goal is ours >= 1.0x theirs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pdetransfer import __version__
from pdetransfer.engine.models.build import count_parameters
from pdetransfer.engine.models.fno import FNO
from pdetransfer.engine.models.registry import parse_model

SIZES = [(8, 32), (16, 64)]
IN_CHANNELS = 7


class TextbookSpectralConv(nn.Module):
    """The spectral layer as in the original FNO code: full FFTs, complex einsum on corners."""

    def __init__(self, width: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        scale = 1.0 / (width * width)
        shape = (width, width, modes, modes)
        self.w1 = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))
        self.w2 = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, nx, ny = x.shape
        m = self.modes
        spec = torch.fft.rfft2(x)
        out = torch.zeros(b, c, nx, ny // 2 + 1, dtype=spec.dtype)
        out[:, :, :m, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, :m, :m], self.w1)
        out[:, :, -m:, :m] = torch.einsum("bixy,ioxy->boxy", spec[:, :, -m:, :m], self.w2)
        return torch.fft.irfft2(out, s=(nx, ny))


class TextbookFNO(nn.Module):
    """The same architecture as ours, written the way the original FNO code writes it."""

    def __init__(self, modes: int, width: int) -> None:
        super().__init__()
        self.lift = nn.Conv2d(IN_CHANNELS, width, 1)
        self.spectral = nn.ModuleList(TextbookSpectralConv(width, modes) for _ in range(4))
        self.skips = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(4))
        self.head = nn.Sequential(
            nn.Conv2d(width, 2 * width, 1), nn.GELU(), nn.Conv2d(2 * width, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lift(x)
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skips, strict=True)):
            x = spectral(x) + skip(x)
            if i < 3:
                x = F.gelu(x)
        return self.head(x)


def neuraloperator_fno(modes: int, width: int) -> tuple[nn.Module | None, str]:
    """The library's FNO in our configuration, or None and why not."""
    try:
        import neuralop
        from neuralop.models import FNO as LibraryFNO
    except ImportError as err:
        return None, f"neuraloperator not importable ({err})"
    model = LibraryFNO(
        n_modes=(2 * modes, 2 * modes),
        in_channels=IN_CHANNELS,
        out_channels=1,
        hidden_channels=width,
        n_layers=4,
        positional_embedding=None,
        use_channel_mlp=False,
        lifting_channel_ratio=0,
        projection_channel_ratio=2,
    )
    return model, f"neuraloperator {neuralop.__version__}"


def samples_per_second(
    models: dict[str, nn.Module], batch: int, grid: int, rounds: int, steps: int
) -> dict[str, float]:
    """Median forward+backward throughput, the implementations interleaved round by round
    so that load from other processes hits them alike."""
    x = torch.randn(batch, IN_CHANNELS, grid, grid)
    target = torch.randn(batch, 1, grid, grid)
    times: dict[str, list[float]] = {name: [] for name in models}

    def step(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        (model(x) - target).square().sum().backward()

    for model in models.values():  # warm-up: allocator, DFT matrices, plans
        step(model)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(model)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps timed per round")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "train_step.json"),
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    results = []
    reference = ""
    for modes, width in SIZES:
        ours = FNO(parse_model(f"{modes},{width}", IN_CHANNELS))
        models: dict[str, nn.Module] = {"ours": ours, "textbook": TextbookFNO(modes, width)}
        library, reference = neuraloperator_fno(modes, width)
        if library is not None:
            models["neuraloperator"] = library
        rates = samples_per_second(models, args.batch_size, args.grid, args.rounds, args.steps)
        row: dict[str, object] = {"modes": modes, "width": width}
        for name, model in models.items():
            row[f"{name}_samples_per_s"] = round(rates[name], 2)
            row[f"{name}_parameters"] = count_parameters(model)
        for name in models:
            if name != "ours":
                row[f"ratio_vs_{name}"] = round(rates["ours"] / rates[name], 3)
        results.append(row)
        print(json.dumps(row), flush=True)

    report = {
        "benchmark": "FNO forward+backward samples/s on CPU",
        "grid": args.grid,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "reference": reference,
        "results": results,
        "cpu": platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "pdetransfer_version": __version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
