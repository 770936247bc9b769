"""The verbs event child: ``python -m multidp_rdma.verbschild``, one process for every device.

pyverbs' ``Context.get_async_event`` blocks inside ``ibv_get_async_event``
while holding the GIL, so it cannot run in the driver's process. Here one
process opens a verbs context per device and blocks in poll() on every
context's asynchronous event file and on stdin: it calls ``get_async_event``
only when poll() says an event is waiting, so it never blocks there, and it
costs nothing while nothing happens. pyverbs does not expose the event file,
so it is found as the ``anon_inode:[infinibandevent]`` descriptor that opening
the context added (the name the kernel gives it).

Protocol, one line each. In (stdin): ``watch NAME...``, the devices to watch
now; end of input (the driver is gone) ends the process. Out (stdout):
``watching NAME...`` after each change, ``failed NAME REASON`` for a device it
cannot watch, ``event NAME TYPE`` (``ibv_event_type``) for each event,
``lost NAME REASON`` when a device's context stops working.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

EVENT_FILE = "anon_inode:[infinibandevent]"
DEVICE_FATAL = 8


def fd_links(proc_fd: str = "/proc/self/fd") -> dict[int, str]:
    """This process's open descriptors and what each leads to."""
    links = {}
    for entry in os.listdir(proc_fd):
        try:
            links[int(entry)] = os.readlink(os.path.join(proc_fd, entry))
        except (OSError, ValueError):
            continue
    return links


def new_event_file(before: Mapping[int, str], after: Mapping[int, str]) -> int | None:
    """The one asynchronous event file that appeared between two :func:`fd_links`, or None."""
    found = [fd for fd, target in after.items() if target == EVENT_FILE and before.get(fd) != EVENT_FILE]
    return found[0] if len(found) == 1 else None


class Watcher:
    """The child's state: open contexts by device name, and their event files."""

    def __init__(self, open_context: Callable[[str], Any], out: TextIO,
                 links: Callable[[], dict[int, str]] = fd_links) -> None:
        self._open_context = open_context
        self._out = out
        self._links = links
        self.contexts: dict[str, tuple[Any, int]] = {}  # name → (context, event file descriptor)

    def say(self, *words: str) -> None:
        self._out.write(" ".join(words) + "\n")
        self._out.flush()

    def _open(self, name: str) -> tuple[Any, int] | str:
        before = self._links()
        try:
            context = self._open_context(name)
        except Exception as exc:  # noqa: BLE001 - PyverbsRDMAError and the like: report, go on
            return f"{type(exc).__name__}: {exc}"
        fd = getattr(context, "async_fd", None)
        if not isinstance(fd, int):
            fd = new_event_file(before, self._links())
        if fd is None:
            self._close(context)
            return "its asynchronous event file was not found"
        return context, fd

    @staticmethod
    def _close(context: Any) -> None:
        try:
            context.close()
        except Exception:  # noqa: BLE001 - a dead device's context may fail to close
            pass

    def watch(self, names: list[str]) -> None:
        for name in [n for n in self.contexts if n not in names]:
            self._close(self.contexts.pop(name)[0])
        for name in names:
            if name in self.contexts:
                continue
            opened = self._open(name)
            if isinstance(opened, str):
                self.say("failed", name, opened)
            else:
                self.contexts[name] = opened
        self.say("watching", *sorted(self.contexts))

    def deliver(self, fd: int) -> None:
        """Read the event waiting on ``fd`` (poll() said there is one) and report it."""
        for name, (context, event_fd) in list(self.contexts.items()):
            if event_fd != fd:
                continue
            try:
                event = context.get_async_event()
                kind = int(event.event_type)
                event.ack()
            except Exception as exc:  # noqa: BLE001 - the device went away under us
                self._close(self.contexts.pop(name)[0])
                self.say("lost", name, f"{type(exc).__name__}: {exc}")
                self.say("watching", *sorted(self.contexts))
                return
            self.say("event", name, str(kind))
            if kind == DEVICE_FATAL:  # the context is useless now; the driver rediscovers
                self._close(self.contexts.pop(name)[0])
                self.say("watching", *sorted(self.contexts))


def serve(watcher: Watcher, stdin: Any) -> None:
    """Until stdin ends: commands from stdin, events from the watched devices, all in one blocking poll()."""
    buffer = b""
    while True:
        poller = select.poll()
        poller.register(stdin, select.POLLIN)
        for _, fd in watcher.contexts.values():
            poller.register(fd, select.POLLIN)
        for fd, flags in poller.poll():
            if fd == stdin.fileno():
                chunk = os.read(fd, 4096)
                if not chunk:
                    return  # the driver closed our stdin or died
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    words = line.decode().split()
                    if words and words[0] == "watch":
                        watcher.watch(words[1:])
            elif flags & (select.POLLIN | select.POLLERR | select.POLLHUP):
                watcher.deliver(fd)


def main() -> int:
    try:
        import pyverbs.device as device_module  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except Exception as exc:  # noqa: BLE001 - the driver checked; report anyway
        print(f"failed * pyverbs does not import: {exc}", flush=True)
        return 1
    watcher = Watcher(lambda name: device_module.Context(name=name), sys.stdout)
    serve(watcher, sys.stdin.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
