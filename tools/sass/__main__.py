"""python -m tools.sass [--check] [--out-dir docs] [--nvdisasm PATH]

Without --check: writes docs/sass-report.json and docs/sass-report.md and prints the table.
With --check: builds a fresh report, writes nothing under docs/, and exits 1 when an
instantiation spills or a hot loop grew by more than 10 % against the committed JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from . import build, report


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.sass", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed JSON")
    ap.add_argument("--out-dir", default=os.path.join(build.ROOT, "docs"))
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm"),
                    help="nvdisasm binary (default: on PATH; the Makefile passes the wheel's)")
    ap.add_argument("--cuobjdump", default=None,
                    help="cuobjdump binary (default: beside nvdisasm, else on PATH)")
    args = ap.parse_args()
    if not args.nvdisasm:
        raise SystemExit("sass-report: no nvdisasm (make sass-report installs the wheel)")
    beside = os.path.join(os.path.dirname(args.nvdisasm), "cuobjdump")
    cuobjdump = args.cuobjdump or (beside if os.path.exists(beside) else shutil.which("cuobjdump"))
    if not cuobjdump:
        raise SystemExit("sass-report: no cuobjdump (make sass-report installs the wheel)")
    nvcc = build.find_nvcc()
    print(report.HEADER)
    with tempfile.TemporaryDirectory(prefix="swaa-sass-") as tmp:
        fresh = report.analyse(nvcc, args.nvdisasm, cuobjdump, tmp)
    json_path = os.path.join(args.out_dir, "sass-report.json")
    if args.check:
        with open(json_path) as f:
            failures = report.check(fresh, json.load(f))
        for line in failures:
            print("sass-check FAILED:", line, file=sys.stderr)
        print("sass-check:", "failed" if failures else
              "ok (no spills, no hot loop > 10 % up, every kernel within its target)")
        return 1 if failures else 0
    with open(json_path, "w") as f:
        json.dump(fresh, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out_dir, "sass-report.md"), "w") as f:
        f.write(report.markdown(fresh))
    print(f"wrote {os.path.relpath(json_path)} and sass-report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
