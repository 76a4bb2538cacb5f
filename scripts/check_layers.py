#!/usr/bin/python3
"""The layering of docs/architecture.md, checked on the code: every `#include "folder/..."` of a
library folder names that folder or one below it. Exit 1 with one line per violation.

    scripts/check_layers.py [REPO]
"""
import re
import sys
from pathlib import Path

# Each folder and the folders it may include from (its own included), bottom to top; `layers/`
# and `data/` do not use each other. Keep in step with the table in docs/architecture.md.
BELOW = {
    "core": [],
    "kernels": ["core"],
    "autograd": ["kernels"],
    "layers": ["autograd"],
    "data": ["core"],
    "distributed": ["layers"],
    "train": ["distributed", "layers", "data"],
    "eval": ["train"],
    "bench": ["train"],  # the peers library the CLI links, and the benchmarks
    "cli": ["eval", "bench"],
    "fuzz": ["train"],
    "tests": ["cli", "eval", "bench"],  # tests may use any library
}


def allowed(folder):
    seen, todo = {folder}, list(BELOW[folder])
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(BELOW[f])
    return seen


INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z_]+)/')


def main():
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    problems = []
    for folder in BELOW:
        ok = allowed(folder)
        for path in sorted((repo / folder).rglob("*")):
            if path.suffix not in (".h", ".cpp", ".cu", ".cuh") or not path.is_file():
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = INCLUDE.match(line)
                if m and m.group(1) in BELOW and m.group(1) not in ok:
                    problems.append(f"{path.relative_to(repo)}:{n}: {folder}/ includes {m.group(1)}/ "
                                    f"(allowed: {', '.join(sorted(ok))})")
    for p in problems:
        print(f"check_layers: {p}")
    print(f"check_layers: {len(problems)} include(s) against the layer order" if problems
          else "check_layers: every include follows the layer order")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
