"""List every flag, variable and config key of an NVIDIA k8s-device-plugin release, from its source.

    python drivers/nvidia/scripts/nvidia_keys.py <git dir of NVIDIA/k8s-device-plugin> v0.20.0 \
        > drivers/nvidia/tests/nvidia_v0.20.0_keys.txt

Config keys come from the json tags of ``api/config/v1/*.go`` (walked from ``Config``), flags and their
variables from ``cmd/nvidia-device-plugin/main.go``, the health variables from ``internal/rm/health.go``.
"""

from __future__ import annotations

import re
import subprocess
import sys

FIELD = re.compile(r"^\s*(\w+)\s+(\*?\[?\]?\*?[\w.]+)\s+`json:\"(\w+)")


def show(git_dir: str, tag: str, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{tag}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def structs(source: str) -> dict[str, list[tuple[str, str]]]:
    """struct name → [(json key, Go type)], embedded structs inlined by name."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, body in re.findall(r"type (\w+) struct \{(.*?)\n\}", source, re.S):
        fields = []
        for line in body.splitlines():
            match = FIELD.match(line)
            if match:
                fields.append((match.group(3), match.group(2).lstrip("*[]")))
            elif re.fullmatch(r"\s*(\w+)\s*", line):
                fields.append(("", line.strip()))  # embedded
        found[name] = fields
    return found


def walk(types: dict[str, list[tuple[str, str]]], name: str, prefix: str, lists: set[str]) -> list[str]:
    keys = []
    for key, go_type in types.get(name, []):
        path = prefix if not key else (f"{prefix}.{key}" if prefix else key)
        if types.get(go_type):  # a struct with json keys of its own (ReplicatedDevices has none: a value)
            suffix = "[]" if go_type in lists else ""
            keys += walk(types, go_type, path + suffix, lists)
        else:
            keys.append(path)
    return keys


def main(git_dir: str, tag: str) -> None:
    files = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "--name-only", tag, "api/config/v1/"],
                           check=True, capture_output=True, text=True).stdout.split()
    source = "\n".join(show(git_dir, tag, f) for f in files if f.endswith(".go") and not f.endswith("_test.go"))
    types = structs(source)
    lists = {"Resource", "ReplicatedResource"}  # the element types of []Resource, []ReplicatedResource
    print(f"# Every flag, variable and config key of NVIDIA's k8s-device-plugin {tag}, from its source")
    print("# (drivers/nvidia/scripts/nvidia_keys.py): config keys from the json tags in api/config/v1/*.go,")
    print("# flags and their variables from cmd/nvidia-device-plugin/main.go, DP_* from internal/rm/health.go.")
    for key in walk(types, "Config", "", lists):
        print(f"key {key}")
    main_go = show(git_dir, tag, "cmd/nvidia-device-plugin/main.go")
    for block in re.findall(r"&cli\.\w+Flag\{(.*?)\n\t\t\}", main_go, re.S):
        names = re.findall(r'Name:\s+"([\w-]+)"', block) + re.findall(r'"([\w-]+)"', "".join(
            re.findall(r"Aliases:\s+\[\]string\{(.*?)\}", block)))
        for name in names:
            print(f"flag --{name}")
        for var in re.findall(r'"(\w+)"', "".join(re.findall(r"EnvVars:\s+\[\]string\{(.*?)\}", block))):
            print(f"variable {var}")
    health = show(git_dir, tag, "internal/rm/health.go")
    for var in re.findall(r'= "(DP_\w+)"', health):
        print(f"variable {var}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
