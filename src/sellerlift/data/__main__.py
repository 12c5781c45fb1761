"""``python -m sellerlift.data <command>``: data tools that need no training.

python -m sellerlift.data check --mapping my.yaml my_events.csv    # sellerlift.data.check
"""

from __future__ import annotations

import sys

COMMANDS = {"check": "validate an events file against its mapping, without training"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(
            "usage: python -m sellerlift.data <command> [options]\n\ncommands:\n"
            + "\n".join(f"  {name:<8} {what}" for name, what in COMMANDS.items())
            + "\n\n(python -m sellerlift.data check --help for its options)",
            file=sys.stderr,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from sellerlift.data import check

    return check.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
