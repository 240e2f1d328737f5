"""The model registry without torch: the architectures, the size presets, :class:`ModelSpec`.

An architecture is one entry of :data:`ARCHITECTURES`: its network class and, where one is
written, its packed implementation (K networks with a member axis in front of every weight),
both named ``"module:Class"`` and imported only when a model is built
(:mod:`pdetransfer.engine.models.build`), and its rules that need no torch: the closed-form
parameter count and what grid a size needs. So the workflow's config check, which runs
whenever Snakemake builds the DAG, checks sizes against grids without importing torch, and
adding an architecture is an entry here plus its class. (An architecture from another library
counts its parameters by building the network on torch's ``meta`` device instead: its closed
form is that library's to change.) The class is built as ``Class(spec)``,
keeps ``spec`` as an attribute and maps ``(B, in_channels, n, n)`` to ``(B, 1, n, n)``; the
packed one is built from the K member networks (see
:class:`pdetransfer.engine.models.packed.PackedNetwork`).

A model is a :class:`ModelSpec`: its architecture and its size, ``modes``, ``width`` and
``layers``, which each architecture reads as its own hyperparameters. A size is written as
two numbers, ``"a,b"``, that set the two spec fields the architecture names (``modes,width``
for the FNOs, whose ``layers`` is fixed; ``width,depth`` for the U-Net, whose depth is its
``layers``), or as a preset name where those are ``modes,width``; a study's config may prefix
it with the architecture, ``"unet:16,3"`` (:func:`split_size`).
"""

from __future__ import annotations

import importlib
import itertools
import re
from collections.abc import Callable
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

#: Rules for which parameters a run trains (``pdetransfer train --trainable``), implemented in
#: :mod:`pdetransfer.engine.models.trainable`: every weight, only the output projection
#: (the architecture's ``head``), or low-rank updates of its ``adapted`` weights.
TRAINABLE_RULES = ("all", "head", "lora")

#: The architecture of a spec or checkpoint that names none (every checkpoint written before
#: the registry holds an FNO).
DEFAULT_ARCHITECTURE = "fno"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model; stored in every checkpoint.

    ``name`` is the preset name, or ``"modes,width"`` for a custom size, so tables and plots
    can label runs the way the user asked for them.
    """

    name: str
    modes: int
    width: int
    in_channels: int
    layers: int = LAYERS
    architecture: str = DEFAULT_ARCHITECTURE

    @property
    def parameters(self) -> int:
        """Number of trainable real numbers, from the architecture's closed form."""
        return entry(self.architecture).parameters(self)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form for checkpoints and JSON summaries."""
        return {**asdict(self), "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelSpec:
        """Inverse of :meth:`to_dict` (the derived ``parameters`` entry is ignored); a dict
        without ``architecture`` (written before the registry) describes an FNO."""
        return cls(
            name=str(data["name"]),
            modes=int(data["modes"]),  # type: ignore[arg-type]
            width=int(data["width"]),  # type: ignore[arg-type]
            in_channels=int(data["in_channels"]),  # type: ignore[arg-type]
            layers=int(data["layers"]),  # type: ignore[arg-type]
            architecture=str(data.get("architecture", DEFAULT_ARCHITECTURE)),
        )


@dataclass(frozen=True)
class Architecture:
    """One registered architecture (see the module docstring)."""

    network: str  # "module:Class" of the network, built as Class(spec)
    packed: str | None  # "module:Class" built from K networks; None: the torch.func ensemble
    parameters: Callable[[ModelSpec], int]  # closed form; a complex weight counts as two reals
    resolution_problem: Callable[[ModelSpec, int], str | None]  # see resolution_problem()
    #: Module names (prefixes of parameter names) of the output projection: what the ``head``
    #: rule trains (:mod:`pdetransfer.engine.models.trainable`).
    head: tuple[str, ...] = ()
    #: Weights the ``lora`` rule adapts: parameter-name regex -> update kind (``"matrix"`` for
    #: an ``(out, in)`` weight, ``"spectral"`` for the FNO's per-mode complex weights).
    adapted: tuple[tuple[str, str], ...] = ()
    size: tuple[str, str] = ("modes", "width")  # the ModelSpec fields "a,b" sets, in order
    size_label: str = "modes,width"  # how the user writes a size, in messages and tables
    requires: str | None = None  # the module of an optional extra the network imports

    def describe(self, spec: ModelSpec) -> str:
        """The size in the user's words, e.g. ``"width 16, depth 3"``."""
        if self.size == ("modes", "width"):
            return f"modes {spec.modes}, width {spec.width}, {spec.layers} layers"
        labels = self.size_label.split(",")
        return ", ".join(
            f"{label} {getattr(spec, field)}"
            for label, field in zip(labels, self.size, strict=True)
        )


def entry(name: str) -> Architecture:
    """The registry entry of ``name``; a :class:`UserError` naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise UserError(f"architecture {name!r} is not registered (known: {known})")
    return ARCHITECTURES[name]


def split_size(text: str) -> tuple[str, str]:
    """A config's size, ``"[architecture:]size"``, as (architecture, size); FNO by default."""
    architecture, _, size = text.rpartition(":")
    return (architecture.strip() or DEFAULT_ARCHITECTURE), size.strip()


def parse_model(spec: str, in_channels: int, architecture: str = DEFAULT_ARCHITECTURE) -> ModelSpec:
    """Turn ``--model`` (a preset name or two numbers, see the module docstring) into a
    :class:`ModelSpec` of ``architecture``."""
    arch = entry(architecture)
    text = spec.strip()
    if text in PRESETS:
        if arch.size != ("modes", "width"):
            raise UserError(
                f"--model {spec!r}: the presets are FNO sizes; give a {architecture} size as "
                f"'{arch.size_label}'"
            )
        modes, width = PRESETS[text]
        return ModelSpec(text, modes, width, in_channels, architecture=architecture)
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", text)
    if not match:
        presets = f"a preset ({', '.join(PRESETS)}) nor " if arch.size == ("modes", "width") else ""
        raise UserError(f"--model {spec!r} is neither {presets}'{arch.size_label}'")
    values = dict(zip(arch.size, (int(match.group(1)), int(match.group(2))), strict=True))
    if min(values.values()) < 1:
        first, second = arch.size_label.split(",")
        raise UserError(f"--model {spec!r} needs {first} >= 1 and {second} >= 1")
    fields: dict[str, int] = {"modes": 0, "layers": LAYERS, **values}
    return ModelSpec(
        f"{match.group(1)},{match.group(2)}",
        fields["modes"],
        fields["width"],
        in_channels,
        layers=fields["layers"],
        architecture=architecture,
    )


def resolution_problem(spec: ModelSpec, grid: int) -> str | None:
    """Why a model cannot run on a grid, as the end of a sentence, or None if it can.

    The one rule behind both the training command and the workflow's config check; each
    architecture states its own.
    """
    return entry(spec.architecture).resolution_problem(spec, grid)


def parameter_count(modes: int, width: int, in_channels: int, layers: int = LAYERS) -> int:
    """Closed-form parameter count of the FNO, counting a complex weight as two reals.

    Each spectral layer holds a complex ``w x w`` matrix for each of the ``2m x m`` kept modes
    (both signs on the first axis, non-negative on the second): ``4 m^2 w^2`` reals, hence the
    paper's "about 16 w^2 m^2" for four layers. The rest is the lift, the skips and the head.
    """
    spectral = layers * 2 * (2 * modes * modes) * width * width
    skips = layers * (width * width + width)
    lift = in_channels * width + width
    head = (width * 2 * width + 2 * width) + (2 * width + 1)
    return spectral + skips + lift + head


def _fno_resolution_problem(spec: ModelSpec, grid: int) -> str | None:
    """A spectral layer keeps ``modes`` Fourier modes per direction; an n x n grid resolves
    n / 2 (the Nyquist limit), so more modes than that would index modes that do not exist."""
    if 2 * spec.modes > grid:
        return (
            f"keeps {spec.modes} modes per direction but a {grid}x{grid} grid resolves at most "
            f"{grid // 2}"
        )
    return None


def unet_parameter_count(spec: ModelSpec) -> int:
    """Closed-form parameter count of the U-Net (:mod:`pdetransfer.engine.models.unet`): two
    3x3 convolutions per level on the way down and up, a 2x2 transposed convolution per
    halving, a 1x1 head, every layer with a bias."""
    widths = [spec.width * 2**level for level in range(spec.layers + 1)]

    def level(cin: int, cout: int) -> int:
        return 9 * cin * cout + cout + 9 * cout * cout + cout

    down = sum(level(a, b) for a, b in zip([spec.in_channels, *widths[:-1]], widths, strict=True))
    up = sum(
        4 * coarse * fine + fine + level(2 * fine, fine)
        for fine, coarse in itertools.pairwise(widths)
    )
    return down + up + spec.width + 1


def _unet_resolution_problem(spec: ModelSpec, grid: int) -> str | None:
    """Each level halves the grid exactly, so ``n`` must be divisible by ``2 ** depth``."""
    factor = 2**spec.layers
    if grid % factor:
        return (
            f"halves the grid {spec.layers} times but a {grid}x{grid} grid is not divisible "
            f"by {factor}"
        )
    return None


def _meta_parameter_count(spec: ModelSpec) -> int:
    """Count by building the network (needs torch and the architecture's library)."""
    build = importlib.import_module("pdetransfer.engine.models.build")
    return int(build.meta_parameter_count(spec))


#: Every architecture a run or checkpoint may name.
ARCHITECTURES: dict[str, Architecture] = {
    "fno": Architecture(
        network="pdetransfer.engine.models.fno:FNO",
        packed="pdetransfer.engine.models.fno_ensemble:EnsembleFNO",
        parameters=lambda s: parameter_count(s.modes, s.width, s.in_channels, s.layers),
        resolution_problem=_fno_resolution_problem,
        head=("head",),  # head.0 (w -> 2w) and head.2 (2w -> 1), weights and biases
        adapted=((r"spectral\.\d+\.weight", "spectral"), (r"skips\.\d+\.weight", "matrix")),
    ),
    "unet": Architecture(
        network="pdetransfer.engine.models.unet:UNet",
        packed=None,
        parameters=unet_parameter_count,
        resolution_problem=_unet_resolution_problem,
        size=("width", "layers"),
        size_label="width,depth",
        head=("head",),  # the 1x1 output convolution; no lora: its weights are 3x3 kernels
    ),
    "neuralop_fno": Architecture(
        network="pdetransfer.engine.models.neuralop_models:NeuralopFNO",
        packed="pdetransfer.engine.models.packed:LoopedEnsemble",
        parameters=_meta_parameter_count,
        resolution_problem=_fno_resolution_problem,
        requires="neuralop",
        head=("model.projection",),  # the library's projection MLP
    ),
    "neuralop_tfno": Architecture(
        network="pdetransfer.engine.models.neuralop_models:NeuralopTFNO",
        packed="pdetransfer.engine.models.packed:LoopedEnsemble",
        parameters=_meta_parameter_count,
        resolution_problem=_fno_resolution_problem,
        requires="neuralop",
        head=("model.projection",),  # the library's projection MLP
    ),
}
