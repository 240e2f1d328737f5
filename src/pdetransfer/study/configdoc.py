"""``pdetransfer config-doc``: config/README.md, a page per config key, from the JSON schema.

The schema (``workflow/schemas/config.schema.yaml``) is where the keys, types, defaults and
descriptions are defined, so the page is generated from it and never edited by hand; a test
fails when the committed page differs from what the schema gives. Examples are the values the
shipped study configs (``config/*.yaml``, ``config.yaml`` first) give a key, so they are real
settings rather than invented ones; a key that no shipped config sets shows its default.
Named entries (a dataset, a size...) appear as ``<name>`` in the dotted key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pdetransfer.atomic import atomic_path
from pdetransfer.errors import UserError
from pdetransfer.study.validation import _resolve

SCHEMA = Path("workflow/schemas/config.schema.yaml")
CONFIGS = Path("config")
OUT = Path("config/README.md")
#: The one command that rebuilds the page, as the page and the out-of-date errors say it.
COMMAND = "pdetransfer config-doc"
REGENERATE = f"`{COMMAND}` (from the repository root)"
NAME = "<name>"


@dataclass(frozen=True)
class Key:
    """One documented config key."""

    path: tuple[str, ...]
    node: Mapping[str, Any]  # with its $ref followed
    raw: Mapping[str, Any]  # as written (a $ref names a shared type)
    required: bool

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def is_section(self) -> bool:
        return _sub_keys(self.node) is not None


def _sub_keys(node: Mapping[str, Any]) -> dict[str, Mapping[str, Any]] | None:
    """The keys below an object node: its properties, or ``<name>`` for named entries."""
    if "properties" in node:
        return dict(node["properties"])
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        return {NAME: extra}
    return None


def walk(schema: Mapping[str, Any]) -> Iterator[Key]:
    """Every key of the schema, depth first in schema order."""

    def visit(node: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[Key]:
        node = _resolve(node, schema)
        children = _sub_keys(node) or {}
        required = set(node.get("required", ()))
        for name, child in children.items():
            key = Key((*path, name), _resolve(child, schema), child, name in required)
            yield key
            if key.is_section:
                yield from visit(key.node, key.path)

    yield from visit(schema, ())


def type_text(node: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """The key's type and constraints as a short phrase."""
    named = {"#/$defs/name": "name", "#/$defs/names": "list of names (no repeats)"}
    if node.get("$ref") in named:
        return named[node["$ref"]]
    node = _resolve(node, schema)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_text(option, schema) for option in node["oneOf"])
    types = node.get("type", "object" if _sub_keys(node) is not None else "any")
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for kind in types:
        if kind == "array":
            items = node.get("items")
            words.append(f"list of {type_text(items, schema)}" if items else "list")
        elif kind == "object":
            words.append("mapping of names" if NAME in (_sub_keys(node) or {}) else "section")
        else:
            words.append(kind)
    limits = []
    if "minimum" in node:
        limits.append(f"≥ {node['minimum']}")
    if "exclusiveMinimum" in node:
        limits.append(f"> {node['exclusiveMinimum']}")
    if "multipleOf" in node:
        limits.append(f"multiple of {node['multipleOf']}")
    if "pattern" in node and node.get("type") == "string":
        limits.append(f"matching `{node['pattern']}`")
    if node.get("minItems") == node.get("maxItems") and "minItems" in node:
        limits.append(f"{node['minItems']} items")
    if node.get("uniqueItems"):
        limits.append("no repeats")
    text = " or ".join(words)
    return f"{text} ({', '.join(limits)})" if limits else text


def inline(value: Any) -> str:
    """A value as one line of YAML flow style, in backticks."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return f"`{text.removesuffix('...').strip()}`"


def example(key: Key, configs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The value of ``key`` in the first shipped config that sets it, naming the file."""
    for file_name, config in configs:
        for value in _values(config, key.path):
            return f"{inline(value)} ({file_name})"
    if "default" in key.node:
        return f"{inline(key.node['default'])} (default)"
    return ""


def _values(data: Any, path: Sequence[str]) -> Iterator[Any]:
    """Values at a dotted path; ``<name>`` matches every entry of a mapping."""
    if not path:
        yield data
        return
    if not isinstance(data, Mapping):
        return
    head, rest = path[0], path[1:]
    entries = data.values() if head == NAME else ([data[head]] if head in data else [])
    for entry in entries:
        yield from _values(entry, rest)


def _default(key: Key) -> str:
    """``required``, the default of a value, or nothing (sections default to their keys')."""
    if key.required:
        return "required"
    if "default" in key.node and not key.is_section:
        return inline(key.node["default"])
    return ""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(schema: Mapping[str, Any], configs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """The whole page. Raises UserError naming the first key without a description."""
    keys = list(walk(schema))
    undocumented = [key.name for key in keys if not key.node.get("description")]
    if undocumented:
        raise UserError(
            f"config key {undocumented[0]!r} has no description in the schema; add one, "
            f"then run {REGENERATE}"
        )
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from workflow/schemas/config.schema.yaml by `pdetransfer config-doc`;",
        "     edit the schema and regenerate instead of editing this page. -->",
        "",
        "A study is one YAML file: `config/config.yaml` is the default, "
        "`snakemake --configfile FILE` runs another (it replaces the default study rather "
        "than merging into it), and `--config KEY=VALUE` overrides single keys. Every key is "
        "checked before any job runs; an error names the key. `<name>` stands for a name you "
        "choose (letters, digits, `_`, `.`, `-`), which becomes part of result paths. "
        "Examples come from the shipped configs in `config/`; see "
        "[docs/science.md](../docs/science.md) for what the study measures.",
        "",
        f"Regenerate this page after editing the schema: `{COMMAND}`.",
    ]
    for top in (key for key in keys if len(key.path) == 1):
        lines += ["", f"## `{top.name}`", "", _cell(top.node["description"]), ""]
        default = _default(top)
        if default and not top.required:
            default = f"default {default}"
        facts = [type_text(top.raw, schema), default]
        lines.append("; ".join(fact for fact in facts if fact) + ".")
        rows = [key for key in keys if key.path[0] == top.name and len(key.path) > 1]
        if not rows:
            shown = example(top, configs)
            lines += ["", f"Example: {shown}"] if shown else []
            continue
        lines += [
            "",
            "| key | meaning | type | default | example |",
            "|---|---|---|---|---|",
        ]
        for key in rows:
            cells = [
                f"`{key.name}`",
                key.node["description"],
                type_text(key.raw, schema),
                _default(key) or "—",
                "" if key.is_section else example(key, configs),
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def shipped_configs(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """The study configs of ``folder``, ``config.yaml`` first, then by name."""
    files = sorted(folder.glob("*.yaml"), key=lambda p: (p.name != "config.yaml", p.name))
    configs = []
    for path in files:
        try:
            configs.append((f"{folder.name}/{path.name}", yaml.safe_load(path.read_text())))
        except yaml.YAMLError as err:
            raise UserError(f"config {path} is not valid YAML: {err}") from None
    return configs


def load_schema(path: Path) -> dict[str, Any]:
    """The schema as data, or a UserError saying why not."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"schema {path} does not exist (run this from the repository root or pass --schema)"
        ) from None
    except yaml.YAMLError as err:
        raise UserError(f"schema {path} is not valid YAML: {err}") from None


def generate(schema: Path = SCHEMA, configs: Path = CONFIGS) -> str:
    """The page for the repository's schema and shipped configs."""
    return render(load_schema(schema), shipped_configs(configs))


def config_doc_command(args: argparse.Namespace) -> int:
    """``pdetransfer config-doc``: write the page, or with ``--check`` say whether it is stale."""
    schema = load_schema(Path(args.schema))
    page = render(schema, shipped_configs(Path(args.configs)))
    out = Path(args.out)
    if args.check:
        current = out.read_text() if out.is_file() else None
        if current != page:
            print(f"{out} is out of date; regenerate it with {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    print(f"wrote {out}: {len(list(walk(schema)))} keys")
    return 0
