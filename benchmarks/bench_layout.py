"""Code layout figures, before and after a restructuring: lines per module and onnxruntime session sites.

    python benchmarks/bench_layout.py [--before <git rev>]

Counts, for the working tree and for an older commit (read with ``git show``, nothing checked
out): lines of every module under src/ and serve/, the modules above 400 lines, and the places
in src/ and serve/ that create an ``onnxruntime.InferenceSession`` (the runtime's one
``session()`` is the aim). Writes benchmarks/results/layout.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import markdown_table, write_result

BEFORE_DEFAULT = "f474cbe"  # the last commit before the runtime / one-request-path restructuring (issue #12)
LIMIT = 400
SESSION = re.compile(r"\bInferenceSession\(")


def _files(rev: str | None) -> dict[str, str]:
    """path -> text of every .py under src/ and serve/, in the working tree (rev None) or at ``rev``."""
    if rev is None:
        return {
            str(p.relative_to(REPO)): p.read_text()
            for root in ("src", "serve")
            for p in sorted((REPO / root).rglob("*.py"))
        }
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "src", "serve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        for n in names
        if n.endswith(".py")
    }


def layout(rev: str | None) -> dict:
    files = _files(rev)
    lines = {n: t.count("\n") for n, t in files.items()}
    sites = [
        f"{n}:{i + 1}"
        for n, t in files.items()
        for i, line in enumerate(t.splitlines())
        if SESSION.search(line) and not line.lstrip().startswith(("#", '"', "'"))
    ]
    return {
        "modules": len(lines),
        "total_lines": sum(lines.values()),
        "largest": max(lines.items(), key=lambda kv: kv[1]),
        "over_limit": sorted([n for n, k in lines.items() if k > LIMIT]),
        "session_sites": sites,
        "lines": lines,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=BEFORE_DEFAULT)
    ap.add_argument("--quick", action="store_true", help="same as the full run (it takes a second)")
    args = ap.parse_args(argv)
    before, after = layout(args.before), layout(None)
    rows = [
        {"figure": f, "before": b, "after": a}
        for f, b, a in (
            ("modules in src/ and serve/", before["modules"], after["modules"]),
            ("lines in src/ and serve/", before["total_lines"], after["total_lines"]),
            (
                "largest module (lines)",
                f"{before['largest'][0]} ({before['largest'][1]})",
                f"{after['largest'][0]} ({after['largest'][1]})",
            ),
            (f"modules over {LIMIT} lines", len(before["over_limit"]), len(after["over_limit"])),
            (
                "places creating an onnxruntime.InferenceSession",
                len(before["session_sites"]),
                len(after["session_sites"]),
            ),
        )
    ]
    payload = {"before_commit": args.before, "rows": rows, "before": before, "after": after}
    path = write_result("layout", payload, quick=args.quick)
    print(markdown_table(rows, ["figure", "before", "after"]))
    print(f"after, over {LIMIT} lines: {after['over_limit'] or 'none'}; session sites: {after['session_sites']}")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
