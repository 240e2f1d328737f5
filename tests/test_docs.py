"""The README and docs/ pages, checked against the code: every command they show, every link.

A reader copies commands from these pages, so a renamed flag or subcommand must fail here, not
for them. Commands are taken from code blocks (fenced ``bash``/``sh``/unlabelled, and indented)
and from inline code spans that start with ``snakemake`` or ``pdetransfer``:

* ``pdetransfer ...`` in a code block is parsed by the real parser (``build_parser()``): the
  subcommand, every flag, the required arguments and typed values; ``launch`` parses the
  command it wraps too. In an inline span (a mention, often partial) the subcommand and every
  flag must exist.
* ``snakemake ...`` is parsed by Snakemake's own argument parser (the one ``snakemake --help``
  prints, executor plugins' flags included), and, where it can run on a copy of the
  repository, dry-run there with ``-n`` (marked slow). Not dry-run, only parsed: commands with
  ``--profile`` (need a cluster), ``--report`` (needs a finished study), ``--lint``, conda
  deployment, ``--unlock``, a configfile the copy does not hold (the docs' ``darcy.yaml`` needs
  PDEBench's files) and inline spans.

Every relative link (and its ``#anchor``) in these pages must point to a file, and heading,
that exists.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflow_helpers import snakemake_env

from pdetransfer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOOLS = ("snakemake", "pdetransfer")
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|"}
# Dry-running these needs what a copy of the repository cannot give (see the module docstring).
NOT_DRY_RUN = {
    "--profile": "needs a SLURM cluster",
    "--report": "needs a finished study",
    "--lint": "lint, not a run",
    "--sdm": "conda deployment",
    "--software-deployment-method": "conda deployment",
    "--unlock": "unlocks, runs nothing",
}


@dataclass(frozen=True)
class Command:
    """One ``snakemake``/``pdetransfer`` invocation shown in a page."""

    page: str
    line: int
    argv: tuple[str, ...]  # starting with the tool's name
    inline: bool

    def __str__(self) -> str:
        kind = "inline" if self.inline else "block"
        return f"{self.page}:{self.line} ({kind}): {shlex.join(self.argv)}"


def _fence(line: str) -> str | None:
    """The info string of a fence line (``` or ~~~), else None."""
    match = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
    return match.group(2).lower() if match else None


def _code_blocks(text: str) -> tuple[list[tuple[int, list[str]]], list[tuple[int, str]]]:
    """Shell code blocks as (first line number, lines), and prose lines outside any block."""
    blocks: list[tuple[int, list[str]]] = []
    prose: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        info = _fence(lines[i])
        if info is not None:
            start, body = i + 2, []
            i += 1
            while i < len(lines) and _fence(lines[i]) is None:
                body.append(lines[i])
                i += 1
            if info in SHELL_FENCES:
                blocks.append((start, body))
            i += 1
            continue
        previous_blank = i == 0 or not lines[i - 1].strip()
        if lines[i].startswith("    ") and lines[i].strip() and previous_blank:
            start, body = i + 1, []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append((start, body))
            continue
        prose.append((i + 1, lines[i]))
        i += 1
    return blocks, prose


def _segments(line: str) -> list[list[str]]:
    """A shell line split into simple commands at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def _tool_argv(words: list[str]) -> list[str] | None:
    """The ``snakemake``/``pdetransfer`` invocation in a simple command, if it is one."""
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]  # environment assignments
    if words and words[0] in TOOLS:
        return words
    for i, word in enumerate(words[:-1]):  # python -m snakemake, torchrun ... -m pdetransfer
        if word == "-m" and words[i + 1] in TOOLS:
            return words[i + 1 :]
    return None


def _commands_of(path: Path) -> list[Command]:
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    blocks, prose = _code_blocks(path.read_text())
    commands: list[Command] = []
    for start, body in blocks:
        variables: dict[str, str] = {}
        logical: list[tuple[int, str]] = []
        for offset, raw in enumerate(body):
            if logical and logical[-1][1].endswith("\\"):
                number, text = logical[-1]
                logical[-1] = (number, text[:-1] + " " + raw.strip())
            else:
                logical.append((start + offset, raw.strip()))
        for number, text in logical:
            if not text or text.startswith("#"):
                continue
            assignment = re.fullmatch(r"([A-Za-z_]\w*)=(.*)", text)
            if assignment:  # a variable of the block, e.g. T="--lr 1e-3 --seed 0"
                variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2)))
                continue
            for name, value in variables.items():
                text = text.replace(f"${name}", value)
            for words in _segments(text):
                argv = _tool_argv(words)
                if argv is not None:
                    commands.append(Command(page, number, tuple(argv), inline=False))
    for number, text in prose:
        for span in re.findall(r"`([^`]+)`", text):
            words = span.split()
            argv = _tool_argv(words)
            if argv is not None and (len(argv) > 1 or argv[0] == "snakemake"):
                commands.append(Command(page, number, tuple(argv), inline=True))
    return commands


COMMANDS = [command for page in PAGES for command in _commands_of(page)]
PDETRANSFER = [c for c in COMMANDS if c.argv[0] == "pdetransfer"]
SNAKEMAKE = [c for c in COMMANDS if c.argv[0] == "snakemake"]


def _not_dry_run(command: Command) -> str | None:
    """Why a snakemake command is only parsed, not dry-run (None: dry-run it)."""
    if command.inline:
        return "an inline mention"
    flags = {word.split("=", 1)[0] for word in command.argv}
    for flag, why in NOT_DRY_RUN.items():
        if flag in flags:
            return why
    for i, word in enumerate(command.argv[:-1]):
        if word in ("--configfile", "--configfiles") and not (ROOT / command.argv[i + 1]).exists():
            return f"{command.argv[i + 1]} is not in the repository"
    return None


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """Parse as the tool would; an error fails the test with argparse's own message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # --help and --version exit 0
            pytest.fail(f"does not parse: {err.getvalue().strip()}")
    return None


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _unknown_flags(words: tuple[str, ...], options: set[str]) -> list[str]:
    flags = [w.split("=", 1)[0] for w in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)]
    return [f for f in flags if f not in options]


def _check_spelling(argv: list[str]) -> None:
    """The subcommand and every flag exist, spelled in full (argparse takes abbreviations)."""
    if "--" in argv:  # launch ... -- SUBCOMMAND ARGS: both halves
        cut = argv.index("--")
        _check_spelling(argv[:cut])
        _check_spelling(["pdetransfer", *argv[cut + 1 :]])
        return
    parser = build_parser()
    if argv[1].startswith("-"):
        unknown = _unknown_flags(tuple(argv[1:]), _options(parser))
        assert not unknown, f"pdetransfer has no {unknown}"
        return
    subcommands = _subparsers(parser)
    assert argv[1] in subcommands, f"no subcommand {argv[1]!r}"
    unknown = _unknown_flags(tuple(argv[2:]), _options(subcommands[argv[1]]))
    assert not unknown, f"pdetransfer {argv[1]} has no {unknown}"


def _check_pdetransfer(argv: list[str], inline: bool) -> None:
    """Spelling everywhere; in a code block also a full parse, the wrapped command included."""
    _check_spelling(argv)
    if inline:
        return
    args = _parse(build_parser(), argv[1:])
    if args is not None and args.command == "launch":
        wrapped = [w for w in args.argv if w != "--"]
        assert wrapped, "launch wraps no subcommand"
        _check_pdetransfer(["pdetransfer", *wrapped], inline=False)


def _snakemake_parser() -> argparse.ArgumentParser:
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def test_the_pages_show_commands_of_both_tools() -> None:
    """A change to the extraction that finds nothing must not pass silently."""
    assert len(PDETRANSFER) >= 20, [str(c) for c in PDETRANSFER]
    assert len(SNAKEMAKE) >= 20, [str(c) for c in SNAKEMAKE]
    assert any(c.page == "README.md" for c in SNAKEMAKE)
    dry = {c.argv for c in SNAKEMAKE if _not_dry_run(c) is None}
    assert len(dry) >= 8


@pytest.mark.parametrize("command", PDETRANSFER, ids=str)
def test_pdetransfer_command_parses(command: Command) -> None:
    _check_pdetransfer(list(command.argv), command.inline)


def _check_snakemake(argv: tuple[str, ...], inline: bool) -> None:
    """Every flag exists, spelled in full; in a code block also a full parse."""
    parser = _snakemake_parser()
    unknown = _unknown_flags(argv[1:], _options(parser))
    assert not unknown, f"snakemake has no {unknown}"
    if not inline:
        _parse(parser, list(argv[1:]))


@pytest.mark.parametrize("command", SNAKEMAKE, ids=str)
def test_snakemake_command_parses(command: Command) -> None:
    _check_snakemake(command.argv, command.inline)


def test_extraction_reads_shell_as_a_reader_would(tmp_path: Path) -> None:
    """Continuations, comments, chains, env assignments and block variables are understood."""
    page = tmp_path / "probe.md"
    text = (
        "Run `CONDA_OVERRIDE_CUDA=12.6 snakemake --sdm conda -n` or `pdetransfer info`.\n\n"
        "```bash\n"
        'T="--lr 1e-3 2e-3"\n'
        "pip install -e . && snakemake --cores all  # the default\n"
        "pdetransfer train --data a.h5 \\\n    --val b.h5 $T --model s --out r\n"
        "# pdetransfer commented --out\n"
        "torchrun --nproc-per-node 2 -m pdetransfer train --help\n"
        "```\n\n"
        "    snakemake --profile slurm\n"
    )
    page.write_text(text)
    found = [(c.line, c.inline, c.argv) for c in _commands_of(page)]
    assert found == [
        (5, False, ("snakemake", "--cores", "all")),
        (6, False, ("pdetransfer", "train", "--data", "a.h5", "--val", "b.h5", "--lr", "1e-3",
                    "2e-3", "--model", "s", "--out", "r")),
        (9, False, ("pdetransfer", "train", "--help")),
        (12, False, ("snakemake", "--profile", "slurm")),
        (1, True, ("snakemake", "--sdm", "conda", "-n")),
        (1, True, ("pdetransfer", "info")),
    ]  # fmt: skip


def test_a_renamed_flag_fails_the_check() -> None:
    """The check is not vacuous: a flag the parser does not know, or a bad value, fails."""
    for argv, inline in (
        (["pdetransfer", "train", "--data", "a", "--val", "b", "--model", "s", "--lr-max", "1"], False),
        (["pdetransfer", "evaluate", "--checkpoints", "x"], True),
        (["pdetransfer", "launch", "--gpus", "1", "--", "train", "--epoch", "3"], False),
        (["pdetransfer", "generate", "--system", "poisson", "--range", "1", "5", "--split",
          "train", "--n-samples", "N", "--out", "x.h5"], False),
        (["pdetransfer", "retrain"], True),
    ):  # fmt: skip
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            _check_pdetransfer(argv, inline)
    with pytest.raises(AssertionError):
        _check_snakemake(("snakemake", "--cores", "all", "--rerun-incomplet"), inline=False)
    with pytest.raises(pytest.fail.Exception):
        _check_snakemake(("snakemake", "--cores", "all", "--latency-wait", "soon"), False)


@pytest.fixture(scope="module")
def repository_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow's files in a fresh directory: dry-runs there see no results/ of ours."""
    copy = tmp_path_factory.mktemp("repo")
    for name in ("Snakefile", "workflow", "config", "envs"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, symlinks=True)
        else:
            shutil.copy2(source, copy / name)
    (copy / "slurm").symlink_to("workflow/profiles/slurm")
    return copy


DRY_RUNS = sorted({c.argv for c in SNAKEMAKE if _not_dry_run(c) is None})


@pytest.mark.slow
@pytest.mark.parametrize("argv", DRY_RUNS, ids=shlex.join)
def test_snakemake_command_dry_runs(argv: tuple[str, ...], repository_copy: Path) -> None:
    extra = [] if {"-n", "--dry-run", "--dryrun"} & set(argv) else ["-n"]
    result = subprocess.run(
        [sys.executable, "-m", *argv, *extra],
        cwd=repository_copy,
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if _fence(line) is not None:
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)):
            slug, n = _slug(match.group(1)), 0
            while (slug if n == 0 else f"{slug}-{n}") in anchors:
                n += 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1", "", path.read_text(), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(f"{link}: no such file in the repository")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, broken
