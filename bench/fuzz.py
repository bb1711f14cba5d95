#!/usr/bin/env python3
"""The long fuzz of the device boundary: hostile ``user/banned`` answers until ``--entries``
generated device entries have been judged, parsed whole and diffed against the answer before;
every one held to the ``ipaddress``-based reference of tests/fuzzkit.py — the properties
tests/test_fuzz_parser.py checks with hypothesis on every CI run, at volume.

Two generators, one reference: hypothesis (``--examples`` answers, its edge-seeking draws and
shrinking) and a seeded ``random`` generator drawing from the same value pools (fuzzkit's
constants) a thousand times faster, which makes up the volume.

    .venv/bin/python bench/fuzz.py --entries 1000000    # the long run
    .venv/bin/python bench/fuzz.py --quick              # CI: 50,000 entries, 200 examples

Exit 0 when every answer matched the reference; 1 with the counterexample otherwise (the
random generator's with its seed and answer number). Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import fuzzkit  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from banfeed.fortios.parse import EARLIEST, EXPIRES_AHEAD, FUTURE_SKEW  # noqa: E402

NOW = fuzzkit.NOW
ANSWER = 1_000  # entries per random answer


class Hostile:
    """Seeded random device entries from fuzzkit's value pools."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def json_any(self, depth: int = 0) -> Any:
        r = self.r
        kind = r.randrange(8 if depth < 2 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.randrange(-(2**70), 2**70)
        if kind == 3:
            return r.choice([r.uniform(-1e20, 1e20), float("nan"), float("inf"), -0.0])
        if kind in (4, 5):
            return self.text(20)
        if kind == 6:
            return [self.json_any(depth + 1) for _ in range(r.randrange(4))]
        return {self.text(5): self.json_any(depth + 1) for _ in range(r.randrange(4))}

    def text(self, size: int, alphabet: str | None = None) -> str:
        r = self.r
        if alphabet:
            return "".join(r.choice(alphabet) for _ in range(r.randrange(size + 1)))
        top = r.choice([0x80, 0x800, 0x110000])  # mostly ASCII, some anything (surrogates too)
        return "".join(chr(r.randrange(top)) for _ in range(r.randrange(size + 1)))

    def address(self) -> str:
        r = self.r
        kind = r.randrange(10)
        if kind <= 1:
            return str(ipaddress.IPv4Address(r.getrandbits(32)))
        if kind == 2:
            return str(ipaddress.IPv6Address(r.getrandbits(128)))
        if kind == 3:
            return ipaddress.IPv6Address(r.getrandbits(128)).exploded
        if kind == 4:
            return f"::ffff:{ipaddress.IPv4Address(r.getrandbits(32))}"
        if kind == 5:
            return r.choice(fuzzkit.SPECIAL)
        if kind == 6:
            return r.choice(fuzzkit.NEAR_MISS)
        if kind == 7:
            text = r.choice([self.address(), str(ipaddress.IPv6Address(r.getrandbits(128)))])
            at = r.randrange(41)
            return text[:at] + r.choice(fuzzkit.PIECES) + text[at + 1 :]
        if kind == 8:
            return self.text(50, fuzzkit.ADDRESS_ALPHABET)
        return self.text(60)

    def time(self, ahead: int) -> Any:
        r = self.r
        kind = r.randrange(9)
        if kind <= 1:
            return r.randrange(EARLIEST, NOW + ahead + 1)
        if kind == 2:
            return r.choice([EARLIEST - 1, EARLIEST, NOW, NOW + ahead, NOW + ahead + 1, 0, -1])
        if kind == 3:
            return r.randrange(-(2**80), 2**80)
        if kind == 4:
            return float(r.randrange(EARLIEST, NOW))
        if kind == 5:
            return r.choice([float("nan"), float("inf"), True, False])
        if kind == 6:
            return str(r.randrange(EARLIEST, NOW))
        return self.json_any()

    def source(self) -> Any:
        r = self.r
        pool = r.choice([fuzzkit.SOURCES, fuzzkit.ODD_SOURCES, fuzzkit.HOSTILE_SOURCES, None, None])
        return r.choice(pool) if pool else (self.text(70) if r.random() < 0.5 else self.json_any())

    def entry(self) -> Any:
        r = self.r
        if r.randrange(40) == 0:
            return self.json_any()
        fields = {
            "ip_address": (self.address, lambda: r.choice(fuzzkit.SPECIAL + [self.address()])),
            "created": (
                lambda: self.time(FUTURE_SKEW),
                lambda: r.randrange(NOW - 86_400 * 30, NOW + 3_600),
            ),
            "expires": (
                lambda: self.time(EXPIRES_AHEAD),
                lambda: r.randrange(NOW - 3_600, NOW + 86_400 * 400),
            ),
            "source": (self.source, lambda: r.choice(fuzzkit.SOURCES)),
            "ipv6": (lambda: r.choice(fuzzkit.FLAGS + [self.json_any()]), lambda: None),
        }
        out: dict[str, Any] = {}
        for key, (hostile, plausible) in fields.items():
            roll = r.randrange(10)
            if roll == 0:
                continue
            out[key] = self.json_any() if roll == 1 else hostile() if roll <= 3 else plausible()
        if r.randrange(6) == 0:
            out[self.text(12)] = self.json_any()
        text = out.get("ip_address")
        if out.get("ipv6") in (0, 1) and isinstance(text, str) and r.random() < 0.5:
            out["ipv6"] = int(":" in text)
        return out

    def relisted(self, before: list[Any]) -> list[Any]:
        """The next answer: most entries again (some with Python-equal values), some new."""
        r = self.r
        after = []
        for item in before:
            if r.random() < 0.3:
                continue
            if isinstance(item, dict) and r.random() < 0.2:
                item = dict(item)
                key = r.choice(["created", "expires", "ipv6"])
                if type(item.get(key)) is int:
                    item[key] = r.choice([float(item[key]), bool(item[key] % 2)])
            after.append(item)
        after += [self.entry() for _ in range(len(before) // 3)]
        r.shuffle(after)
        return after


def random_run(target: int, seed: int) -> dict[str, int]:
    """Random answers of ``ANSWER`` entries, each parsed whole and then as the answer after
    it would be diffed, until ``target`` entries were judged."""
    gen = Hostile(seed)
    totals = {"entries": 0, "answers": 0}
    while totals["entries"] < target:
        before = [gen.entry() for _ in range(ANSWER)]
        document = {"vdom": fuzzkit.VDOM, "results": before}
        try:
            judged = fuzzkit.check_plain(json.dumps(document, allow_nan=True).encode())
            assert judged == ANSWER, "a well-formed answer was refused whole"
            judged = fuzzkit.check_diffed(before, gen.relisted(before)) - ANSWER
        except AssertionError as exc:
            raise AssertionError(f"random seed {seed}, answer {totals['answers']}: {exc}") from exc
        totals["entries"] += ANSWER + judged
        totals["answers"] += 2
    return totals


def hypothesis_run(examples: int) -> dict[str, int]:
    totals = {"entries": 0, "answers": 0, "refused": 0}
    common = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )

    @common
    @given(raw=fuzzkit.body(max_entries=100))
    def plain(raw: bytes) -> None:
        judged = fuzzkit.check_plain(raw)
        totals["entries"] += judged
        totals["answers"] += 1
        totals["refused"] += judged == 0

    @common
    @given(pair=fuzzkit.answer_pair(max_entries=100))
    def diffed(pair: Any) -> None:
        totals["entries"] += fuzzkit.check_diffed(*pair)
        totals["answers"] += 2

    plain()
    diffed()
    return totals


def run(target: int, examples: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    drawn = hypothesis_run(examples)
    middle = time.perf_counter()
    rolled = random_run(max(0, target - drawn["entries"]), seed)
    done = time.perf_counter()
    entries = drawn["entries"] + rolled["entries"]
    return {
        "entries": entries,
        "answers": drawn["answers"] + rolled["answers"],
        "hypothesis": {
            "examples": 2 * examples,
            "entries": drawn["entries"],
            "answers_refused_whole": drawn["refused"],
            "seconds": round(middle - started, 1),
        },
        "random": {
            "seed": seed,
            "entries": rolled["entries"],
            "seconds": round(done - middle, 1),
            "entries_per_second": round(rolled["entries"] / max(done - middle, 1e-9)),
        },
        "seconds": round(done - started, 1),
        "failures": 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="device entries to judge")
    parser.add_argument("--examples", type=int, default=2_000, help="hypothesis answers")
    parser.add_argument("--quick", action="store_true", help="50,000 entries, 200 examples")
    parser.add_argument("--seed", type=int, default=14, help="the random generator's seed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    target, examples = (50_000, 200) if args.quick else (args.entries, args.examples)
    try:
        figures = run(target, examples, args.seed)
    except AssertionError as exc:
        print(f"fuzz: an answer broke a promise of the parser:\n{exc}", file=sys.stderr)
        return 1
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
