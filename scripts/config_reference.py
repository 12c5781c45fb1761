"""Generate docs/config_reference.md from the config tree (configs/): every group, option and key.

    .venv/bin/python scripts/config_reference.py            # rewrite docs/config_reference.md
    .venv/bin/python scripts/config_reference.py --check    # exit 1 if the file is out of date (CI)

Each option's keys are listed flattened (``data.source.n_customers``) with their default and the
comment written next to them in the YAML, so the reference stays next to the configs it describes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
OUT = REPO / "docs" / "config_reference.md"


def _comments(text: str) -> dict[int, str]:
    """Line number -> its trailing comment (``key: value  # comment``), else the comment lines just above it."""
    out = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        m = re.match(r"^[^#]*?\S\s+#\s?(.*)$", line)
        if m:
            out[i] = m.group(1).strip()
            continue
        above, j = [], i - 1
        indent = len(line) - len(line.lstrip())
        while j >= 0 and lines[j].lstrip().startswith("#") and len(lines[j]) - len(lines[j].lstrip()) == indent:
            above.insert(0, lines[j].lstrip().lstrip("#").strip())
            j -= 1
        if above and not any(a.startswith("@package") for a in above) and j >= 0:
            out[i] = " ".join(above)
    return out


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        s = line[1:].rstrip()
        if s.strip().startswith("@package"):
            continue
        lines.append(s[1:] if s.startswith(" ") else s)
    if not lines:
        return ""
    return "```text\n" + "\n".join(lines) + "\n```"


def _flatten(node, prefix=""):
    """(dotted key, value node) for every scalar/list leaf of a composed YAML node tree."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}.{k.value}" if prefix else str(k.value)
            if key == "defaults":
                continue
            if isinstance(v, yaml.MappingNode) and v.value:
                yield from _flatten(v, key)
            else:
                yield key, v
    return


def _value(node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return node.value if node.value != "" else "null"
    if isinstance(node, yaml.SequenceNode):
        items = [_value(n) for n in node.value]
        s = "[" + ", ".join(items) + "]"
        return s if len(s) < 90 else s[:87] + "...]"
    return "{}"


def describe(path: Path, package: str) -> list[str]:
    text = path.read_text()
    comments = _comments(text)
    root = yaml.compose(text)
    rows = []
    if root is None:
        return rows
    global_pkg = "@package _global_" in text
    for key, node in _flatten(root):
        if key == "defaults" or key.startswith("defaults"):
            continue
        full = key if (global_pkg or not package) else f"{package}.{key}"
        comment = comments.get(node.start_mark.line, "")
        value, note = _value(node).replace("|", r"\|"), comment.replace("|", r"\|")
        rows.append(f"| `{full}` | `{value}` | {note} |")
    return rows


def render() -> str:
    md = [
        "# Configuration reference",
        "",
        "Generated from `configs/` by `scripts/config_reference.py` (do not edit by hand; "
        "`make config-reference` rewrites it). Override any key on the command line: "
        "`python train.py data.source.n_customers=5000`; pick an option of a group: "
        "`python train.py model=transformer`.",
        "",
    ]
    train = CONFIGS / "train.yaml"
    md += [
        "## `train.yaml` (the entry config)",
        "",
        _header(train.read_text()),
        "",
        "| key | default | note |",
        "|---|---|---|",
        *describe(train, ""),
        "",
    ]
    for group in sorted(p for p in CONFIGS.iterdir() if p.is_dir()):
        options = sorted(group.glob("*.yaml"))
        if not options:
            continue
        md += [f"## Group `{group.name}`", "", f"Options: {', '.join(f'`{group.name}={o.stem}`' for o in options)}", ""]
        for opt in options:
            md += [f"### `{group.name}={opt.stem}`", ""]
            head = _header(opt.read_text())
            if head:
                md += [head, ""]
            rows = describe(opt, "" if group.name == "hydra" else group.name)
            if group.name == "hydra":
                rows = [r.replace("| `", "| `hydra.", 1) for r in rows]
            if rows:
                md += ["| key | default | note |", "|---|---|---|", *rows, ""]
    return "\n".join(md).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/config_reference.md is out of date")
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is out of date: run `.venv/bin/python scripts/config_reference.py`")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
