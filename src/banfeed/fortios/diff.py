"""Answer diffing: an entry a device listed in its last stored answer is not parsed again.

A FortiGate lists its whole quarantine on every poll, and from one cycle to the next only a
few entries come and go. Each accepted entry is remembered by a 64-bit key of exactly the
values validation reads (the VDOM, ``ip_address``, ``ipv6``, ``created``, ``expires`` and
``source``); an entry of the next answer with a remembered key was validated and stored
already, so it costs a hash instead of a validation, an address parse and a lookup of known
offenses. A changed answer then costs what changed, not its size.

Why skipping is safe: acceptance only depends on those values and on banfeed's clock, and a
time accepted once stays accepted as the clock moves on (the checks reject times too far
*ahead*). Keys are Python's ``hash`` of a tuple of those values. A string's hash is keyed per
process (SipHash with a random key), so a device cannot choose addresses or causes whose keys
collide; by chance, two different entries among the few thousand of one answer share a key
with odds of about one in 10^12. Numbers hash by value modulo 2^61 − 1 and equal numbers hash
alike (``1 == 1.0``), so an entry can share a remembered entry's key only by a time that is
equal in value or 2^61 − 1 away, far outside the window any accepted time lies in: such an
entry is counted as unchanged instead of rejected. Either way nothing new is stored from it
(tests/test_fuzz_parser.py pins that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Keys = npt.NDArray[np.int64]
else:
    Keys = Any

NO_KEY = 0  # an entry with no key (not an object, or unhashable values) is never skipped


def entry_keys(vdom: str, entries: list[Any]) -> Keys:
    """The key of each entry of one VDOM's list, ``NO_KEY`` where an entry has none."""
    import numpy as np

    try:  # the usual answer: every entry an object of scalars
        return np.fromiter(
            (
                hash(
                    (
                        vdom,
                        e.get("ip_address"),
                        e.get("ipv6"),
                        e.get("created"),
                        e.get("expires"),
                        e.get("source"),
                    )
                )
                for e in entries
            ),
            dtype=np.int64,
            count=len(entries),
        )
    except (AttributeError, TypeError):  # an entry that is no object, or holds a list
        return np.fromiter((_key(vdom, e) for e in entries), dtype=np.int64, count=len(entries))


def _key(vdom: str, entry: Any) -> int:
    if isinstance(entry, dict):
        try:
            return hash(
                (
                    vdom,
                    entry.get("ip_address"),
                    entry.get("ipv6"),
                    entry.get("created"),
                    entry.get("expires"),
                    entry.get("source"),
                )
            )
        except TypeError:
            pass
    return NO_KEY


def seen_in(keys: Keys, known: Keys | None) -> Keys:
    """A mask of the ``keys`` that ``known`` (a sorted array, or None) holds."""
    import numpy as np

    if known is None or not len(known) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(known, keys)
    at[at == len(known)] = 0
    return (known[at] == keys) & (keys != NO_KEY)  # type: ignore[no-any-return]


def remembered(parts: list[Keys]) -> Keys:
    """The sorted keys to remember of an answer: its accepted entries' keys, every VDOM."""
    import numpy as np

    if not parts:
        return np.zeros(0, dtype=np.int64)
    keys = np.unique(np.concatenate(parts))
    return keys[keys != NO_KEY]  # type: ignore[no-any-return]
