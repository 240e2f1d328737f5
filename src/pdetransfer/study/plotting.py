"""The study's figures (seaborn styling, PNG and SVG), drawn from the summary table.

Every curve is the test error at the learning rate chosen by validation error (summary.csv).
Its spread is the shaded 95% bootstrap interval over seeds and test samples
(``test_rel_l2_lo``/``_hi``); a summary written before it had those columns gets error bars of
one standard deviation over seeds instead. Cells whose every learning rate diverged have no
error and are left out of the curves. Each mode is drawn in its palette and marker from the
mode table (:mod:`pdetransfer.modes`; fine-tuning in blues, scratch in oranges, darker =
larger model); a mode that does not train (zero-shot) as grey horizontal dashed lines: it
does not depend on N. With ``--fits`` (scaling_fits.csv) the error-vs-N plot overlays each fitted power law as
a thin dotted line over the N range it was fitted on.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter

from pdetransfer import __version__
from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.layout import Run
from pdetransfer.modes import MODES, Mode
from pdetransfer.study.aggregation import load_study, mode_rows, read_csv
from pdetransfer.study.config import Study

PARAMETER_SYMBOL = {"poisson": "e", "advdiff": "Ψ", "helmholtz": "ω", "darcy": "β"}
FORMATS = ("png", "svg")
ERROR_LABEL = r"test error $\Vert\hat{u}-u\Vert_2\,/\,\Vert u\Vert_2$ (dimensionless)"
N_LABEL = "downstream training examples N (samples)"
SPREAD_NOTE = "bands: 95% bootstrap interval"
STD_NOTE = "bars: ±1 std over seeds"


def size_label(summary: pd.DataFrame, size: str) -> str:
    """``xs (67K params)``: a model size with its parameter count, for legends."""
    counts = summary.loc[summary["size"] == size, "parameters"].dropna()
    if counts.empty:
        return size
    count = float(counts.iloc[0])
    if count >= 1e6:
        text = f"{count / 1e6:.2g}M"
    else:
        text = f"{count / 1e3:.0f}K" if count >= 1e3 else f"{count:.0f}"
    return f"{size} ({text} params)"


def dataset_label(study: Study, name: str) -> str:
    """e.g. ``poisson e∈(5, 10)``: the system and its physics-parameter range."""
    ds = study.datasets[name]
    symbol = PARAMETER_SYMBOL.get(ds["system"])
    if ds["range"] is None or symbol is None:  # imported data of an external system
        return f"{name} ({ds['system']})"
    lo, hi = ds["range"]
    if lo == hi:  # e.g. one Darcy forcing
        return f"{ds['system']} {symbol}={lo:g}"
    return f"{ds['system']} {symbol}∈({lo:g}, {hi:g})"


def _shades(palette: str, count: int) -> list[Any]:
    """``count`` colours of a sequential palette, light to dark, avoiding the palest."""
    return sns.color_palette(palette, count + 1)[1:]


def _solid(mode: Mode) -> Any:
    """The colour of a mode's one curve in a panel: dark in its palette; mid grey for a mode
    that does not train (its palette's shades are for one line per model size)."""
    return sns.color_palette(mode.palette, 3)[2] if mode.trains else "0.4"


def spread_note(summary: pd.DataFrame) -> str:
    """What the spread drawn around the curves of a summary is (legend title)."""
    return SPREAD_NOTE if "test_rel_l2_lo" in summary else STD_NOTE


def _draw(ax: plt.Axes, curve: pd.DataFrame, x: str = "n", **style: Any) -> None:
    """A curve with its spread: the bootstrap band, or for an older summary std bars.

    A cell without an error (every learning rate diverged) leaves a gap in the line.
    """
    if not np.isfinite(curve["test_rel_l2_mean"].astype(float)).any():
        return
    if "test_rel_l2_lo" not in curve:
        std = curve["test_rel_l2_std"].fillna(0.0).to_numpy()
        ax.errorbar(curve[x], curve["test_rel_l2_mean"], yerr=std, capsize=2, **style)
        return
    (line,) = ax.plot(curve[x], curve["test_rel_l2_mean"], **style)
    lo, hi = curve["test_rel_l2_lo"].astype(float), curve["test_rel_l2_hi"].astype(float)
    ax.fill_between(curve[x], lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def _draw_fit(
    ax: plt.Axes, fits: pd.DataFrame | None, ns: Sequence[int], color: Any, **match: Any
) -> None:
    """The fitted power law of one error-vs-N curve (a row of scaling_fits.csv), over the
    sweep's N range; nothing where the curve has no fit."""
    if fits is None:
        return
    mask = np.array(fits["against"] == "n", dtype=bool)
    for column, value in match.items():
        mask &= (fits[column] == value).to_numpy()
    rows = fits[mask]
    rows = rows[np.isfinite(rows["b"].astype(float))]
    if rows.empty:
        return
    fit = rows.iloc[0]
    n = np.geomspace(min(ns), max(ns), 100)
    ax.plot(n, fit["a"] * n ** -fit["b"] + fit["c"], color=color, ls=":", lw=1)


def _level(ax: plt.Axes, rows: pd.DataFrame, color: Any, label: str) -> None:
    """A mode that does not train: its error as a horizontal line (it does not depend on N)."""
    if not rows.empty:
        ax.axhline(rows["test_rel_l2_mean"].iloc[0], color=color, ls="--", lw=1.2, label=label)


def _loglog(ax: plt.Axes, xlabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ERROR_LABEL)


def _save(fig: plt.Figure, outs: Sequence[str]) -> None:
    """Save one figure to every path (format from the suffix), atomically."""
    for out in outs:
        suffix = Path(out).suffix.lstrip(".")
        if suffix not in FORMATS:
            raise UserError(f"cannot write {out}: plots are written as {' or '.join(FORMATS)}")
        with atomic_path(out) as tmp:
            fig.savefig(
                tmp,
                format=suffix,
                dpi=150,
                bbox_inches="tight",
                metadata={"Creator": f"pdetransfer {__version__}"},
            )
    plt.close(fig)


def _downstream_panel(
    ax: plt.Axes,
    study: Study,
    summary: pd.DataFrame,
    pretrain: str,
    downstream: str,
    sizes: Sequence[str],
    fits: pd.DataFrame | None = None,
    experiment: str | None = None,
) -> None:
    """Error vs N on one downstream dataset: each training mode per size, the modes that do
    not train as lines, and with ``fits`` the fitted power laws of ``experiment``."""
    modes = study.study_modes()
    shades = {mode.name: _shades(mode.palette, len(sizes)) for mode in modes}
    for i, size in enumerate(sizes):
        name = size_label(summary, size)
        cell = {"size": size, "downstream": downstream}
        for mode in modes:
            if mode.trains:
                where = {"experiment": experiment, **cell}
                _draw_fit(ax, fits, study.n_values, shades[mode.name][i], mode=mode.name, **where)
        for mode in modes:
            rows = mode_rows(summary, mode, pretrain, **cell)
            label = f"{mode.label} {name}"
            if mode.trains:
                _draw(ax, rows, color=shades[mode.name][i], marker=mode.marker, label=label)
            else:
                _level(ax, rows, shades[mode.name][i], label)
    _loglog(ax, N_LABEL)
    ax.set_title(dataset_label(study, downstream))


def _panel_row(count: int, panel_width: float = 4.0) -> tuple[plt.Figure, np.ndarray]:
    """A row of ``count`` panels sharing the error axis, so shifts compare at a glance."""
    return plt.subplots(1, count, figsize=(panel_width * count, 4), sharey=True, squeeze=False)


def _keep_first_ylabel(axes: np.ndarray) -> None:
    """Label the shared error axis once, on the leftmost panel."""
    for ax in axes[0][1:]:
        ax.set_ylabel("")


def error_vs_n(
    study: Study,
    summary: pd.DataFrame,
    experiment: str,
    downstream: str,
    fits: pd.DataFrame | None = None,
) -> plt.Figure:
    """Error vs N on one downstream dataset of an experiment, every model size (and fits)."""
    pretrain = study.experiments[experiment]["pretrain"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sizes = study.experiment_sizes(experiment)
    _downstream_panel(ax, study, summary, pretrain, downstream, sizes, fits, experiment)
    ax.set_title(f"{experiment}: pre-trained on {pretrain}\n→ {dataset_label(study, downstream)}")
    note = spread_note(summary) + ("; dotted: fitted a·N^-b + c" if fits is not None else "")
    ax.legend(fontsize="small", ncol=2, title=note, title_fontsize="x-small")
    return fig


def ood(study: Study, summary: pd.DataFrame, experiment: str) -> plt.Figure:
    """The OOD series side by side (shared error axis), largest model size."""
    exp = study.experiments[experiment]
    size = study.experiment_sizes(experiment)[-1]
    series = exp["downstream"]
    fig, axes = _panel_row(len(series))
    for ax, downstream in zip(axes[0], series, strict=True):
        _downstream_panel(ax, study, summary, exp["pretrain"], downstream, [size])
    _keep_first_ylabel(axes)
    axes[0][0].legend(fontsize="small", title=spread_note(summary), title_fontsize="x-small")
    fig.suptitle(f"{experiment}: pre-trained on {exp['pretrain']} ({size}), downstream shifts")
    return fig


def mixed(study: Study, summary: pd.DataFrame, experiment: str) -> plt.Figure:
    """Mixed-physics pre-training fine-tuned on each system, against single-system ones."""
    exp = study.experiments[experiment]
    size = study.experiment_sizes(experiment)[-1]
    series = exp["downstream"]
    fig, axes = _panel_row(len(series))
    greens = _shades("Greens", 3)
    name = size_label(summary, size)
    source = exp["pretrain"]
    for ax, downstream in zip(axes[0], series, strict=True):
        cell = {"size": size, "downstream": downstream}
        for mode in study.study_modes():
            rows = mode_rows(summary, mode, source, **cell)
            if not mode.trains:
                _level(ax, rows, _solid(mode), f"{mode.label} {name} from {source}")
                continue
            label = f"{mode.label} {name}" + (f" from {source}" if mode.needs_pretrained else "")
            _draw(ax, rows, color=_solid(mode), marker=mode.marker, label=label)
            if not mode.needs_pretrained:
                continue
            for i, other in enumerate(study.compare_pretrain(experiment, downstream)):
                _draw(
                    ax,
                    mode_rows(summary, mode, other, **cell),
                    color=greens[i % len(greens)],
                    marker="^",
                    label=f"{mode.label} {name} from {other}",
                )
        _loglog(ax, N_LABEL)
        ax.set_title(dataset_label(study, downstream))
        ax.legend(fontsize="x-small", title=spread_note(summary), title_fontsize="xx-small")
    _keep_first_ylabel(axes)
    fig.suptitle(f"{experiment}: mixed-physics pre-training {exp['pretrain']} ({size})")
    return fig


def error_vs_size(study: Study, summary: pd.DataFrame, experiment: str) -> plt.Figure:
    """Error vs parameter count at fixed N, one panel per downstream dataset."""
    exp = study.experiments[experiment]
    sizes = study.experiment_sizes(experiment)
    ns = study.size_n()
    series = exp["downstream"]
    fig, axes = _panel_row(len(series), panel_width=4.5)
    modes = study.study_modes()
    shades = {mode.name: _shades(mode.palette, len(ns)) for mode in modes}
    for ax, downstream in zip(axes[0], series, strict=True):
        rows = summary[(summary["downstream"] == downstream) & summary["size"].isin(sizes)]
        curves = {
            mode.name: rows[
                (rows["mode"] == mode.name)
                & (rows["pretrain"] == (exp["pretrain"] if mode.needs_pretrained else ""))
            ]
            for mode in modes
        }
        for i, n in enumerate(ns):
            for mode in (m for m in modes if m.trains):
                curve = curves[mode.name]
                _draw(
                    ax,
                    curve[curve["n"] == n].sort_values("parameters"),
                    x="parameters",
                    color=shades[mode.name][i],
                    marker=mode.marker,
                    label=f"{mode.label} N={n}",
                )
        for mode in (m for m in modes if not m.trains):
            curve = curves[mode.name]
            _draw(
                ax,
                curve.sort_values("parameters"),
                x="parameters",
                color=_solid(mode),
                ls="--",
                label=mode.label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model parameters (count)")
        ax.set_ylabel(ERROR_LABEL)
        ax.set_title(dataset_label(study, downstream))
        ax.legend(fontsize="x-small", title=spread_note(summary), title_fontsize="xx-small")
    _keep_first_ylabel(axes)
    fig.suptitle(f"{experiment}: pre-trained on {exp['pretrain']}, model sizes {', '.join(sizes)}")
    return fig


def _best_by_validation(runs: Sequence[Run], results: Path) -> Run:
    """The run with the lowest validation error (from its train.json)."""

    def val(run: Run) -> float:
        path = results / run.directory / "train.json"
        try:
            value = json.loads(path.read_text()).get("best_val_rel_l2")
        except FileNotFoundError:
            raise UserError(f"{path} does not exist: run the workflow first") from None
        return float(value) if value is not None else math.inf

    return min(runs, key=val)


def _read_predictions(path: Path) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as h5:
            return {key: np.asarray(h5[key]) for key in ("f", "u", "u_pred")}
    except (FileNotFoundError, OSError):
        raise UserError(f"{path} is missing or not an HDF5 file") from None
    except KeyError as err:
        raise UserError(f"{path} lacks dataset {err}") from None


def gallery(study: Study, results: str | Path, experiment: str, downstream: str) -> plt.Figure:
    """Test samples: source, truth, then prediction and error of each mode (best lr)."""
    results = Path(results)
    runs = study.gallery_runs(experiment, downstream)
    panels: list[tuple[str, Run]] = []
    for mode in MODES.values():
        candidates = [r for r in runs if r.mode == mode.name]
        if candidates:
            best = _best_by_validation(candidates, results) if mode.trains else candidates[0]
            detail = f" N={best.n}, lr={best.lr}" if best.trains else ""
            panels.append((f"{mode.name}{detail}", best))
    preds = [_read_predictions(results / run.directory / "predictions.h5") for _, run in panels]
    truth = preds[0]
    k = truth["u"].shape[0]
    cols = 2 + 2 * len(panels)
    fig, axes = plt.subplots(k, cols, figsize=(2.2 * cols, 2.2 * k), squeeze=False)
    for row in range(k):
        u = truth["u"][row]
        lim = float(np.abs(u).max()) or 1.0
        err_lim = max(float(np.abs(p["u_pred"][row] - u).max()) for p in preds) or 1.0
        images = [("source f", truth["f"][row], "viridis", None)]
        images.append(("truth u", u, "RdBu_r", lim))
        for (label, _), p in zip(panels, preds, strict=True):
            rel = np.linalg.norm(p["u_pred"][row] - u) / max(np.linalg.norm(u), 1e-30)
            images.append((f"{label}\nprediction", p["u_pred"][row], "RdBu_r", lim))
            images.append((f"error (rel L2 {rel:.2g})", p["u_pred"][row] - u, "PuOr_r", err_lim))
        for ax, (title, image, cmap, scale) in zip(axes[row], images, strict=True):
            kwargs = {"vmin": -scale, "vmax": scale} if scale is not None else {}
            shown = ax.imshow(image.T, origin="lower", cmap=cmap, **kwargs)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(title if row == 0 or title.startswith("error") else "", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    size = study.experiment_sizes(experiment)[-1]
    fig.suptitle(f"{experiment} ({size}) on {dataset_label(study, downstream)}: test samples")
    return fig


def plot_command(args: argparse.Namespace) -> int:
    """``pdetransfer plot KIND``: draw one figure and write it to every ``--out`` path."""
    plt.switch_backend("Agg")  # files only: never needs (or opens) a display
    sns.set_theme(style="whitegrid", context="paper")
    study = load_study(args.study)
    if args.kind == "gallery":
        if args.downstream not in study.gallery_datasets():
            raise UserError(
                f"--downstream {args.downstream!r} is not a downstream dataset of the study "
                f"({', '.join(study.gallery_datasets())})"
            )
        experiment = args.experiment or study.gallery_experiment(args.downstream)
        _need_experiment(study, experiment)
        _need_downstream(study, experiment, args.downstream)
        fig = gallery(study, args.results, experiment, args.downstream)
    else:
        _need_experiment(study, args.experiment)
        if args.summary is None:
            raise UserError(f"plot {args.kind} needs --summary (summary.csv)")
        summary = read_csv(args.summary)
        if args.kind == "error-vs-n":
            _need_downstream(study, args.experiment, args.downstream)
            fits = read_csv(args.fits) if args.fits else None
            fig = error_vs_n(study, summary, args.experiment, args.downstream, fits)
        elif args.kind == "error-vs-size":
            fig = error_vs_size(study, summary, args.experiment)
        elif args.kind == "ood":
            fig = ood(study, summary, args.experiment)
        else:
            fig = mixed(study, summary, args.experiment)
    _save(fig, args.out)
    return 0


def _need_experiment(study: Study, experiment: str | None) -> None:
    if experiment not in study.experiments:
        raise UserError(
            f"--experiment {experiment!r} is not an experiment of the study "
            f"(defined: {', '.join(study.experiments)})"
        )


def _need_downstream(study: Study, experiment: str, downstream: str | None) -> None:
    series = study.experiments[experiment]["downstream"]
    if downstream not in series:
        raise UserError(
            f"--downstream {downstream!r} is not a downstream dataset of experiment "
            f"{experiment!r} ({', '.join(series)})"
        )
