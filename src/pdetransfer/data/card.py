"""``pdetransfer card``: a readable card per dataset, from what its files say about themselves.

A dataset's facts live in its HDF5 attributes (system, range, grid, seeds, how it was made),
its ``stats.json`` and its check reports; the card puts them on one page (Markdown, and the
same content as HTML for the Snakemake report), after The Well's dataset cards. Everything
comes from the files, never from the config: the card describes the data that exists. Root
attributes the card does not know are listed as they are, so a dataset with other provenance
(an imported one, say) shows it without a change here.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdetransfer.atomic import atomic_path
from pdetransfer.data import datasets
from pdetransfer.data.stats import load_stats
from pdetransfer.errors import UserError

#: Root attributes the card shows in its own sections (the rest go to "Other attributes").
SHOWN = {
    *datasets.REQUIRED_ATTRS,
    "pdetransfer_version",
    "config",
    "generation",
    "omega_values",
    "omega_counts",
    "n_rejected",
    "tensor_columns",
    "coefficient_columns",
}


@dataclass
class Card:
    """A card as blocks of Markdown-neutral content, rendered to Markdown or HTML."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [[str(c) for c in r] for r in rows])))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text.rstrip("\n")))

    def markdown(self) -> str:
        out = [f"# {self.title}"]
        for kind, content in self.blocks:
            if kind == "h2":
                out.append(f"## {content}")
            elif kind == "p":
                out.append(content)
            elif kind == "pre":
                out.append(f"```\n{content}\n```")
            else:
                header, rows = content
                lines = [_row(header), "|" + "---|" * len(header)]
                lines += [_row(r) for r in rows]
                out.append("\n".join(lines))
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        e = html.escape
        out = [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
            "text-align:left}pre{background:#f5f5f5;padding:6px}</style>",
            f"</head><body><h1>{e(self.title)}</h1>",
        ]
        for kind, content in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{e(content)}</h2>")
            elif kind == "p":
                out.append(f"<p>{e(content)}</p>")
            elif kind == "pre":
                out.append(f"<pre>{e(content)}</pre>")
            else:
                header, rows = content
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
                out.append("</table>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


@dataclass
class SplitFile:
    """One split's file as the card needs it: its validated info and its realised parameters."""

    info: datasets.DatasetInfo
    params: np.ndarray
    check: str | None  # the check report's text, if given


def read_split(path: Path, check: Path | None) -> SplitFile:
    """The file's attributes and parameter column, and its check report's text."""
    info = datasets.read_info(path)
    with h5py.File(path, "r") as h5:
        params = datasets.read_rows(h5["param"], 0, info.n_samples, path)
    report = None
    if check is not None:
        try:
            report = check.read_text()
        except OSError as err:
            raise UserError(f"check report {check} is not readable: {err.strerror}") from None
    return SplitFile(info, np.asarray(params, dtype=float), report)


def _json_attr(value: Any) -> Any:
    """A JSON-valued attribute as data (a plain value stays as it is)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _value(value: Any) -> str:
    value = _json_attr(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _check_result(report: str | None) -> str:
    if report is None:
        return "not checked"
    lines = [line.strip() for line in report.strip().splitlines()]
    if lines and lines[-1] == "OK":
        return "passed"
    return "FAILED" if any(line.startswith("FAILED") for line in lines) else "unknown"


def _threads(count: Any) -> str | None:
    if not isinstance(count, int):
        return None
    return f"{count} thread" if count == 1 else f"{count} threads"


def _generation_cells(attrs: dict[str, Any]) -> list[str]:
    """Seconds, machine and time of generation, or a note where the file does not record them."""
    record = _json_attr(attrs.get("generation"))
    if not isinstance(record, dict):
        return ["not recorded", "not recorded", ""]
    machine = ", ".join(
        str(part)
        for part in (
            record.get("host"),
            record.get("cpu"),
            _threads(record.get("threads")),
        )
        if part
    )
    seconds = record.get("seconds")
    took = f"{seconds:.1f} s" if isinstance(seconds, int | float) else "not recorded"
    return [took, machine or "not recorded", str(record.get("finished_utc", ""))]


def build_card(name: str, splits: Sequence[SplitFile], stats: dict[str, Any] | None) -> Card:
    """The card of one dataset from its split files (any order), stats and check reports."""
    if not splits:
        raise UserError(f"dataset {name}: a card needs at least one split file")
    order = {split: i for i, split in enumerate(datasets.SPLITS)}
    splits = sorted(splits, key=lambda s: order.get(s.info.split, len(order)))
    first = splits[0].info
    for other in splits[1:]:
        info = other.info
        if (info.system, info.param_range, info.grid) != (
            first.system,
            first.param_range,
            first.grid,
        ):
            raise UserError(
                f"dataset {name}: {info.path} ({info.system}, {list(info.param_range)}, grid "
                f"{info.grid}) does not match {first.path} ({first.system}, "
                f"{list(first.param_range)}, grid {first.grid})"
            )
    lo, hi = first.param_range
    sizes = ", ".join(f"{s.info.split} {s.info.n_samples}" for s in splits)
    card = Card(f"Dataset {name}")
    card.text(
        f"{first.system}: {first.param_name} in [{lo:g}, {hi:g}] on a {first.grid} x "
        f"{first.grid} periodic grid; {sizes} samples."
    )
    card.heading("What it is")
    attrs = first.attrs
    rows = [
        ["system", first.system],
        ["equation", 'see docs/science.md, "The three PDE systems"'],
        ["physics parameter", f"{first.param_name} in [{lo:g}, {hi:g}]"],
        ["grid", f"{first.grid} x {first.grid} on the periodic unit square [0, 1)^2"],
        ["kappa", _value(attrs.get("kappa", ""))],
        ["samples", sizes],
        ["base seed", ", ".join(sorted({str(s.info.base_seed) for s in splits}))],
        ["format version", _value(attrs.get("format_version", ""))],
        ["written by", f"pdetransfer {attrs.get('pdetransfer_version', 'unknown')}"],
    ]
    card.table(["property", "value"], rows)

    card.heading("Splits")
    header = [
        "split",
        "samples",
        "seed (derived)",
        f"realised {first.param_name}: min / mean / max",
        "generated in",
        "machine",
        "finished (UTC)",
        "physics check",
    ]
    table = []
    for s in splits:
        p = s.params
        realised = f"{p.min():.4g} / {p.mean():.4g} / {p.max():.4g}" if p.size else ""
        table.append(
            [
                s.info.split,
                s.info.n_samples,
                s.info.seed,
                realised,
                *_generation_cells(s.info.attrs),
                _check_result(s.check),
            ]
        )
    card.table(header, table)

    histograms = [s for s in splits if "omega_values" in s.info.attrs]
    if histograms:
        card.heading("Realised omega (Helmholtz rejects near-resonant draws)")
        values = sorted({int(v) for s in histograms for v in s.info.attrs["omega_values"]})
        rows = []
        for s in histograms:
            counts = dict(
                zip(s.info.attrs["omega_values"], s.info.attrs["omega_counts"], strict=True)
            )
            rows.append(
                [
                    s.info.split,
                    *(counts.get(v, 0) for v in values),
                    s.info.attrs.get("n_rejected", ""),
                ]
            )
        card.table(["split", *(f"omega={v}" for v in values), "rejected draws"], rows)

    if stats is not None:
        card.heading("Normalisation statistics (stats.json, train split)")
        card.text(
            "The model divides each sample's source by its RMS norm relative to the median "
            "one, and each coefficient channel by its median magnitude (1 where the channel is "
            "zero in every sample)."
        )
        medians = stats["coefficient_abs_median"]
        card.table(
            ["source norm median", *(f"median abs {c}" for c in stats["channels"][1:])],
            [[f"{stats['source_norm_median']:.4g}", *(f"{m:.4g}" for m in medians)]],
        )

    config = _json_attr(attrs.get("config"))
    if isinstance(config, dict):
        card.heading("How the samples were drawn")
        rows = [
            [key, _value(config[key])] for key in ("physics", "sources", "rng") if key in config
        ]
        card.table(["setting", "value"], rows)

    other = sorted({key for s in splits for key in s.info.attrs} - SHOWN)
    if other:
        card.heading("Other attributes")
        card.table(
            ["attribute", *(s.info.split for s in splits)],
            [[key, *(_value(s.info.attrs.get(key, "")) for s in splits)] for key in other],
        )

    checked = [s for s in splits if s.check is not None]
    if checked:
        card.heading("Physics check reports")
        card.code("\n".join(s.check.rstrip("\n") for s in checked if s.check))
    return card


def card_command(args: argparse.Namespace) -> int:
    """``pdetransfer card``: write a dataset's card as Markdown (and HTML)."""
    if args.checks and len(args.checks) != len(args.data):
        raise UserError(
            f"--checks needs one report per --data file ({len(args.data)}), got {len(args.checks)}"
        )
    checks = [Path(c) for c in args.checks] if args.checks else [None] * len(args.data)
    splits = [read_split(Path(d), c) for d, c in zip(args.data, checks, strict=True)]
    stats = load_stats(args.stats) if args.stats else None
    card = build_card(args.name, splits, stats)
    with atomic_path(args.out) as tmp:
        tmp.write_text(card.markdown())
    if args.html:
        with atomic_path(args.html) as tmp:
            tmp.write_text(card.html())
    print(f"wrote {args.out}" + (f" and {args.html}" if args.html else ""))
    return 0
