#!/usr/bin/env python3
"""Undoing a large import (issue 13: "undoing a 100,000-line import takes seconds, not hours").

    .venv/bin/python bench/undo_import.py            # 100,000 addresses
    .venv/bin/python bench/undo_import.py --quick    # 10,000 (CI)

In a temporary folder: `banfeed db upgrade`, `banfeed import LIST` of N public IPv4 addresses
(one a line), `banfeed export` (the feed published with all of them), then the two ways to undo
it, each from the same imported store: `banfeed unban --file LIST` (every line a target, one
transaction) and `banfeed unban --origin import`. Each command is a whole process, timed from
outside with its peak RSS (``resource.getrusage`` of the children); after each undo the feed is
exported again and must hold none of the addresses. Only the filesystem is touched.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv/bin/python"


def banfeed(folder: Path, *args: str) -> tuple[float, str]:
    """Run one banfeed command in ``folder``; its wall seconds and output (exit 0 required)."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(PYTHON), "-m", "banfeed", "--config", str(folder / "banfeed.toml"), *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "NO_PROXY": "*"},
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"banfeed {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return seconds, done.stdout + done.stderr


def addresses(n: int) -> list[str]:
    rng, found = random.Random(5), set[str]()
    while len(found) < n:  # 11.0.0.0-99.255.255.255: public, no never-block range
        first = rng.randrange(11, 100)
        found.add(f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return sorted(found)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def fresh(base: Path, name: str, listing: Path) -> tuple[Path, float]:
    folder = base / name
    folder.mkdir()
    (folder / "banfeed.toml").write_text('[store]\nurl = "sqlite:///b.db"\n[[feeds]]\nname = "q"\n')
    banfeed(folder, "db", "upgrade")
    seconds, _ = banfeed(folder, "import", str(listing))
    banfeed(folder, "export", "-o", str(folder / "before.txt"))
    return folder, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 addresses")
    parser.add_argument("--n", type=int, help="addresses (default 100,000)")
    args = parser.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    base = Path(tempfile.mkdtemp(prefix="banfeed-undo-"))
    try:
        listing = base / "list.txt"
        listing.write_text("".join(a + "\n" for a in addresses(n)))
        rows = []
        for name, undo in (
            ("file", ["unban", "--file", str(listing), "--note", "undo"]),
            ("origin", ["unban", "--origin", "import", "--note", "undo"]),
        ):
            folder, imported = fresh(base, name, listing)
            before = (folder / "before.txt").read_text().split()
            assert len(before) == n, (name, len(before))
            seconds, said = banfeed(folder, *undo)
            banfeed(folder, "export", "-o", str(folder / "after.txt"))
            after = (folder / "after.txt").read_text().split()
            assert not after, f"{name}: {len(after)} addresses still published"
            rows.append((" ".join(undo[:2]), imported, seconds, said.strip().splitlines()[-1]))
        print(f"{n:,} imported addresses; peak RSS of any command {peak_mib():.0f} MiB")
        for what, imported, seconds, said in rows:
            print(f"  import {imported:.2f} s; banfeed {what}: {seconds:.2f} s — {said}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
