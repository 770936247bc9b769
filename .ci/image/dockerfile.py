"""deploy/Dockerfile read as the chroot fallback needs it: stages of instructions, and the context's ignore rules.

Only what deploy/Dockerfile uses is understood (ARG, FROM ... AS, ENV, WORKDIR, COPY [--from], RUN
[--mount=type=secret], LABEL, USER, ENTRYPOINT, CMD); anything else is an error, so that a new instruction
cannot be skipped silently.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

KNOWN = {"ARG", "FROM", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "ENTRYPOINT", "CMD"}


class DockerfileError(ValueError):
    pass


@dataclasses.dataclass
class Instruction:
    op: str
    flags: dict[str, str]  # --name=value options before the arguments (RUN --mount, COPY --from)
    args: str


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    steps: list[Instruction]


@dataclasses.dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]


def instructions(text: str) -> list[Instruction]:
    """In order; comment lines dropped, continuation lines joined, as Docker reads them."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for match in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M):
        op, rest = match.group(1).upper(), match.group(2).strip()
        if op not in KNOWN:
            raise DockerfileError(f"{op}: not understood by the chroot fallback (.ci/image/dockerfile.py)")
        flags = {}
        while op in ("RUN", "COPY") and rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        result.append(Instruction(op, flags, rest))
    return result


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for step in instructions(path.read_text()):
        if step.op == "FROM":
            words = step.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0], []))
        elif not stages:
            if step.op != "ARG":
                raise DockerfileError(f"{step.op} before the first FROM")
            key, eq, value = step.args.partition("=")
            global_args[key] = value if eq else None
        else:
            stages[-1].steps.append(step)
    if not stages:
        raise DockerfileError(f"{path}: no FROM")
    return Dockerfile(global_args, stages)


def substitute(text: str, values: dict[str, str]) -> str:
    """${NAME} and $NAME from the build's ARG and ENV values (unknown names become empty, as in Docker)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def assignments(args: str) -> dict[str, str]:
    """ENV and LABEL's KEY=value pairs (shell-quoted values)."""
    pairs = {}
    for word in shlex.split(args):
        key, eq, value = word.partition("=")
        if not eq:
            raise DockerfileError(f"{args!r}: write KEY=value")
        pairs[key] = value
    return pairs


def ignore_rules(path: Path) -> list[re.Pattern[str]]:
    """A .dockerignore as regexes: `**` any depth, `*` within a name; a match excludes everything under it."""
    rules = []
    for line in path.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if pattern.startswith("!"):
            raise DockerfileError(f"{path}: exceptions (!) are not understood by the chroot fallback")
        regex = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token) or re.escape(token)
        rules.append(re.compile(regex + r"(?:/.*)?\Z"))
    return rules
