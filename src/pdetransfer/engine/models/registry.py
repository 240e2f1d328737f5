"""Model sizes without torch: the presets, :class:`ModelSpec`, parsing and parameter counts.

Split from :mod:`pdetransfer.engine.models.fno` so that the workflow's config check, which runs
whenever Snakemake builds the DAG, can check sizes against grids without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from pdetransfer.errors import UserError

#: The paper's model-scaling sizes as (modes, width), each about 16x the previous in parameters.
PRESETS: dict[str, tuple[int, int]] = {
    "xs": (4, 16),
    "s": (8, 32),
    "m": (16, 64),
    "l": (32, 128),
}

#: Fourier layers of every model in the study.
LAYERS = 4


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an FNO; stored in every checkpoint.

    ``name`` is the preset name, or ``"modes,width"`` for a custom size, so tables and plots
    can label runs the way the user asked for them.
    """

    name: str
    modes: int
    width: int
    in_channels: int
    layers: int = LAYERS

    @property
    def parameters(self) -> int:
        """Number of trainable real numbers, from the closed form."""
        return parameter_count(self.modes, self.width, self.in_channels, self.layers)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form for checkpoints and JSON summaries."""
        return {**asdict(self), "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelSpec:
        """Inverse of :meth:`to_dict` (the derived ``parameters`` entry is ignored)."""
        return cls(
            name=str(data["name"]),
            modes=int(data["modes"]),  # type: ignore[arg-type]
            width=int(data["width"]),  # type: ignore[arg-type]
            in_channels=int(data["in_channels"]),  # type: ignore[arg-type]
            layers=int(data["layers"]),  # type: ignore[arg-type]
        )


def parse_model(spec: str, in_channels: int) -> ModelSpec:
    """Turn ``--model`` (a preset name or ``"modes,width"``) into a :class:`ModelSpec`."""
    text = spec.strip()
    if text in PRESETS:
        modes, width = PRESETS[text]
        return ModelSpec(text, modes, width, in_channels)
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        names = ", ".join(PRESETS)
        raise UserError(f"--model {spec!r} is neither a preset ({names}) nor 'modes,width'")
    modes, width = int(match.group(1)), int(match.group(2))
    if modes < 1 or width < 1:
        raise UserError(f"--model {spec!r} needs modes >= 1 and width >= 1")
    return ModelSpec(f"{modes},{width}", modes, width, in_channels)


def parameter_count(modes: int, width: int, in_channels: int, layers: int = LAYERS) -> int:
    """Closed-form parameter count of :class:`FNO`, counting a complex weight as two reals.

    Each spectral layer holds a complex ``w x w`` matrix for each of the ``2m x m`` kept modes
    (both signs on the first axis, non-negative on the second): ``4 m^2 w^2`` reals, hence the
    paper's "about 16 w^2 m^2" for four layers. The rest is the lift, the skips and the head.
    """
    spectral = layers * 2 * (2 * modes * modes) * width * width
    skips = layers * (width * width + width)
    lift = in_channels * width + width
    head = (width * 2 * width + 2 * width) + (2 * width + 1)
    return spectral + skips + lift + head


def resolution_problem(spec: ModelSpec, grid: int) -> str | None:
    """Why a model cannot run on a grid, as the end of a sentence, or None if it can.

    A spectral layer keeps ``modes`` Fourier modes per direction; an n x n grid resolves n / 2
    (the Nyquist limit), so more modes than that would index modes that do not exist. The one
    rule behind both the training command and the workflow's config check.
    """
    if 2 * spec.modes > grid:
        return (
            f"keeps {spec.modes} modes per direction but a {grid}x{grid} grid resolves at most "
            f"{grid // 2}"
        )
    return None
