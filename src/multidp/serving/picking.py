"""The host's answer to GetPreferredAllocation when the driver has none, or a bad one.

The kubelet fails a pod on any GetPreferredAllocation error, so the host always
has an answer: when a driver offers no preference (or raises, hangs, or answers
something unusable) the host packs by NUMA node, and repairs an answer that
breaks the request's rules.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from multidp.model import PreferenceRequest
from multidp.preferred import pack
from multidp.serving.resource import Snapshot

NO_NUMA: tuple[int, ...] = ()


def numa_pick(request: PreferenceRequest, snapshot: Snapshot) -> list[str]:
    """The host's own pick: pack by NUMA node."""
    by_id = snapshot.by_id

    def numa(device_id: str) -> Hashable:
        device = by_id.get(device_id)
        return device.numa_nodes if device else NO_NUMA

    return pack(request, numa)


def answer_problem(answer: object) -> str | None:
    """Why a driver's preferred answer is no list of device IDs, or None (the text names types only)."""
    if not isinstance(answer, (list, tuple)):
        return f"a {type(answer).__name__}, not a list of device IDs"
    for item in answer:
        if not isinstance(item, str):
            return f"a list holding a {type(item).__name__}, not only device IDs"
    return None


def repaired(request: PreferenceRequest, answer: Sequence[str], fallback: list[str]) -> tuple[list[str], str]:
    """Make a driver's answer valid; return it and what was wrong ('' when nothing).

    Keeps the must-include devices and the driver's valid picks, drops what
    does not fit, and fills up from ``fallback``.
    """
    available = set(request.available)
    problems = []
    picks = list(dict.fromkeys(answer))
    if len(picks) != len(answer):
        problems.append("repeated IDs")
    valid = [i for i in picks if i in available]
    if len(valid) != len(picks):
        problems.append(f"{len(picks) - len(valid)} IDs not available")
    valid_set = set(valid)
    if any(i not in valid_set for i in request.must_include):
        problems.append("must-include IDs left out")
    must = set(request.must_include)
    others = [i for i in valid if i not in must]
    room = request.size - len(request.must_include)
    if len(others) > room:
        problems.append("too many IDs")
        others = others[:room]
    result = [*request.must_include, *others]
    if len(result) < request.size:
        problems.append("too few IDs")
        chosen = set(result)
        result += [i for i in fallback if i not in chosen][: request.size - len(result)]
    return result, ", ".join(problems)
