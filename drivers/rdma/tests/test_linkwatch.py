"""rtnetlink link events: real netlink bytes through a stand-in socket, and real ones from the kernel.

The messages are built here with struct from the Linux uapi layouts (linux/netlink.h, linux/rtnetlink.h,
linux/if_link.h), not with the parser's own constants, so a wrong number on either side shows.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections import deque
from pathlib import Path

import pytest
from rdma_helpers import LOGGER, device, health, wait_for

from multidp_rdma.events import EventHub
from multidp_rdma.faketree import FakeRdmaNode
from multidp_rdma.linkwatch import Link, LinkEvents, open_link_socket, parse_links

log = logging.getLogger(LOGGER)
NEWLINK, DELLINK, ERROR, DONE, NOOP = 16, 17, 2, 3, 1
MULTI = 0x2  # NLM_F_MULTI, set on every part of a dump


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def message(kind: int, body: bytes, flags: int = 0) -> bytes:
    return padded(struct.pack("=IHHII", 16 + len(body), kind, flags, 7, 0) + body)


def attribute(kind: int, payload: bytes) -> bytes:
    return padded(struct.pack("=HH", 4 + len(payload), kind) + payload)


def link(index: int, name: str, up: bool = True, kind: int = NEWLINK) -> bytes:
    """An RTM_NEWLINK/DELLINK as the kernel sends it: ifinfomsg, then attributes in no fixed order: IFLA_MTU (4),
    IFLA_OPERSTATE (16, one byte: the next attribute starts after 3 bytes of padding), IFLA_IFNAME (3)."""
    flags = 0x10043 if up else 0x1002  # IFF_UP|IFF_BROADCAST|IFF_RUNNING|IFF_LOWER_UP, or IFF_BROADCAST|IFF_MULTICAST
    body = struct.pack("=BxHiII", 0, 1, index, flags, 0)
    body += attribute(4, struct.pack("=I", 1500)) + attribute(16, bytes([6 if up else 2]))
    return message(kind, body + attribute(3, name.encode() + b"\0"), MULTI)


def done() -> bytes:
    return message(DONE, struct.pack("=i", 0), MULTI)


def refused(code: int) -> bytes:
    """NLMSG_ERROR: the negative errno, then the header of the request it answers."""
    return message(ERROR, struct.pack("=i", -code) + struct.pack("=IHHII", 32, 18, 0x301, 1, 0))


def links(*names: str, first: int = 1) -> bytes:
    return b"".join(link(index, name) for index, name in enumerate(names, start=first))


def dump(*names: str) -> bytes:
    return links(*names) + done()


class KernelEnd:
    """The watcher's end of a datagram socketpair, as a netlink socket looks: recvfrom names the sender's port."""

    def __init__(self) -> None:
        self.mine, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.senders: deque[int | OSError] = deque()
        self.lock = threading.Lock()
        self.closed = False

    def send(self, data: bytes, port: int = 0) -> None:
        with self.lock:
            self.senders.append(port)
            self.theirs.send(data)

    def fail(self, exc: OSError) -> None:
        with self.lock:
            self.senders.append(exc)
            self.theirs.send(b"")  # wakes the poll; reading it raises

    def fileno(self) -> int:
        return self.mine.fileno()

    def recvfrom(self, size: int, /) -> tuple[bytes, object]:
        with self.lock:
            data, sender = self.mine.recv(size), self.senders.popleft()
        if isinstance(sender, OSError):
            raise sender
        return data, (sender, 1)

    def close(self) -> None:
        self.closed = True
        self.mine.close()
        self.theirs.close()


NAMES = ("lo", "ens5f0", "ens5f0v0", "ens5f0v1", "ib0")


def watching(hub: EventHub, sockets: list[KernelEnd]) -> LinkEvents:
    def opener() -> KernelEnd:
        sockets.append(KernelEnd())
        sockets[-1].send(links(*NAMES[:3]))  # a dump in two datagrams: up only after NLMSG_DONE
        sockets[-1].send(links(*NAMES[3:], first=4) + done())
        return sockets[-1]

    watch = LinkEvents(hub, log, opener)
    watch.start()
    wait_for(lambda: hub.live("links"), "the link source to come up")
    return watch


def test_the_parser_reads_every_message_of_a_datagram_whatever_its_padding() -> None:
    odd = message(NOOP, b"abc")  # nlmsg_len 19: the next message starts at 20
    data = link(1, "lo") + link(9, "ens5f0v0", up=False) + odd + link(3, "x", kind=DELLINK) + done()
    assert parse_links(data) == ([Link(NEWLINK, 1, "lo"), Link(NEWLINK, 9, "ens5f0v0"), Link(DELLINK, 3, "x"),
                                  Link(DONE)], "")
    assert parse_links(message(ERROR, struct.pack("=i", 0) + bytes(16))) == ([], "")  # an acknowledgement


@pytest.mark.parametrize(("data", "kept", "words"), [
    (link(1, "lo")[:-3], [], "a netlink message of 56 bytes at 0 of a 53-byte datagram"),
    (link(1, "lo") + b"\x01\x02", [Link(NEWLINK, 1, "lo")], "2 bytes left over"),
    (message(NEWLINK, b"\0" * 8) + link(2, "ib0"), [Link(NEWLINK, 2, "ib0")], "too short for its ifinfomsg"),
    (message(NEWLINK, struct.pack("=BxHiII", 0, 1, 5, 0, 0) + struct.pack("=HH", 40, 3) + b"ens"),
     [Link(NEWLINK, 5, "")], "an attribute of 40 bytes at 16 of a 23-byte link message"),
    (message(ERROR, b"\xff"), [], "too short for its error code"),
    (b"\0" * 16, [], "a netlink message of 0 bytes"),
], ids=["cut short", "bytes left over", "short ifinfomsg", "truncated attribute", "short error", "zero length"])
def test_malformed_bytes_keep_what_can_be_read_and_say_what_is_wrong(data: bytes, kept: list[Link],
                                                                     words: str) -> None:
    links, problem = parse_links(data)
    assert links == kept and words in problem, problem


def test_the_kernel_refusing_the_dump_is_an_os_error() -> None:
    with pytest.raises(OSError) as caught:
        parse_links(link(1, "lo") + refused(errno.EPERM))
    assert caught.value.errno == errno.EPERM


def test_a_link_event_rescans_its_roce_device_and_covered_ports_are_not_polled(
        standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    driver.scan()
    notified = threading.Event()
    driver._events.attach(notified.set)
    sockets: list[KernelEnd] = []
    watch = watching(driver._events, sockets)
    try:
        driver.scan()
        assert not any(driver._events.covered(d) for d in driver._discovery.devices if d.name in ("mlx5_0", "mlx4_0"))
        standard.port_down("mlx5_1")  # no event for it yet: a covered device is not read again
        standard.port_down("mlx5_0")  # IB: not covered by link events, so polled
        inventory = driver.scan()
        assert health(inventory)["0000:86:00.0"] == "Healthy" and health(inventory)["0000:3b:00.0"] == "Unhealthy"
        notified.clear()
        sockets[-1].send(link(2, "ens5f0", up=False))
        assert notified.wait(5)
        inventory = driver.scan()
        assert health(inventory)["0000:86:00.0"] == "Unhealthy"
        assert device(inventory, "0000:86:00.0").reason == "no port is ACTIVE and LinkUp: port 1 DOWN/Disabled"
    finally:
        watch.stop()


def test_a_netdev_leaving_this_namespace_is_no_longer_covered(standard: FakeRdmaNode, make_driver) -> None:
    driver = make_driver(standard)
    driver.scan()
    sockets: list[KernelEnd] = []
    watch = watching(driver._events, sockets)
    try:
        driver.scan()
        vf = next(d for d in driver._discovery.devices if d.name == "mlx5_2")
        assert driver._events.covered(vf)
        sockets[-1].send(link(3, "ens5f0v0", kind=DELLINK))  # moved into a pod's network namespace
        wait_for(lambda: not driver._events.covered(vf), "the VF to be polled again")
        standard.port_down("mlx5_2")
        assert health(driver.scan())["0000:86:00.2"] == "Unhealthy"
    finally:
        watch.stop()


class Recorder(EventHub):
    def __init__(self) -> None:
        super().__init__(log)
        self.seen: list[str] = []

    def link(self, ifname: str) -> None:
        self.seen.append(ifname)


def test_noise_and_malformed_datagrams_are_skipped_said_once_and_reading_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    hub = Recorder()
    sockets: list[KernelEnd] = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        watch = watching(hub, sockets)
        try:
            hub.seen.clear()
            sockets[-1].send(link(2, "spoofed", up=False), port=4242)  # another process, not the kernel
            sockets[-1].send(message(NOOP, b"") + message(ERROR, struct.pack("=i", 0) + bytes(16)))
            sockets[-1].send(b"\xde\xad\xbe\xef" * 5)
            truncated = message(NEWLINK, struct.pack("=BxHiII", 0, 1, 5, 0, 0) + struct.pack("=HH", 99, 3))
            sockets[-1].send(truncated)  # ib0 (index 5) without its name: still known by its index
            sockets[-1].send(link(3, "ens5f0v0", up=False))
            wait_for(lambda: "ens5f0v0" in hub.seen, "the event after the garbage")
        finally:
            watch.stop()
    assert hub.seen == ["ib0", "ens5f0v0"] and hub.live("links")
    said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(said) == 1 and "a netlink message of 4022250974 bytes"  # 0xefbeadde in said[0], said


def test_lost_link_events_reread_every_port_on_a_new_socket(standard: FakeRdmaNode, make_driver,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    driver = make_driver(standard)
    driver.scan()
    sockets: list[KernelEnd] = []
    watch = watching(driver._events, sockets)
    try:
        driver.scan()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            sockets[-1].fail(OSError(errno.ENOBUFS, "No buffer space available"))
            wait_for(lambda: len(sockets) == 2, "a new socket")
        assert sockets[0].closed and "link events were lost" in caplog.text
        assert driver._events.take().devices == {d.name for d in driver._discovery.devices}
    finally:
        watch.stop()


def test_a_refused_dump_or_a_broken_hub_leaves_the_ports_polled(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub(log)
    sockets: list[KernelEnd] = []

    def opener() -> KernelEnd:
        sockets.append(KernelEnd())
        sockets[-1].send(refused(errno.EPERM))
        return sockets[-1]

    watch = LinkEvents(hub, log, opener)
    watch.start()
    wait_for(lambda: "links" in hub._why_not, "the link source to give up")
    watch.stop()
    assert not hub.live("links") and "the kernel refused the link dump" in hub._why_not["links"]

    class Broken(EventHub):
        def links_present(self, names: frozenset[str]) -> None:
            raise RuntimeError("a bug")

    broken, end = Broken(log), KernelEnd()
    end.send(dump("lo"))
    watch = LinkEvents(broken, log, lambda: end)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        watch.start()
        wait_for(lambda: "links" in broken._why_not, "the link source to give up")
        watch.stop()
    assert "RuntimeError: a bug" in broken._why_not["links"] and "RoCE ports are polled instead" in caplog.text


def test_without_netlink_link_events_are_down_with_the_reason() -> None:
    def opener() -> KernelEnd:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    hub = EventHub(log)
    watch = LinkEvents(hub, log, opener)
    watch.start()
    wait_for(lambda: "links" in hub._why_not, "the link source to give up")
    watch.stop()
    assert not hub.live("links") and "cannot subscribe to rtnetlink link events (OSError" in hub._why_not["links"]


def netlink_problem() -> str:
    try:
        open_link_socket().close()
    except OSError as exc:
        return f"no rtnetlink socket here: {exc}"
    return ""


@pytest.mark.skipif(bool(netlink_problem()), reason=netlink_problem() or "runs")
def test_the_real_socket_dumps_this_namespaces_links() -> None:
    hub = EventHub(log)
    watch = LinkEvents(hub, log)
    watch.start()
    try:
        wait_for(lambda: hub.live("links"), "the real link source to come up")
        assert "lo" in watch._names.values()
        assert watch._names == {index: name for index, name in socket.if_nameindex()}
    finally:
        watch.stop()


# In a fresh namespace only lo exists, down. Renamed to ens5f0 (a RoCE PF's netdev in the fake tree) and set up
# and down with ioctls, it gives real RTM_NEWLINK messages, touching nothing of the host's.
REAL = textwrap.dedent("""
    import fcntl, socket, struct, sys, threading, time
    sys.modules["pyroute2"] = None  # nothing of it is needed
    import multidp_rdma.plugin
    from multidp.testing import create_driver
    from multidp_rdma.faketree import standard_node
    from multidp_rdma.linkwatch import LinkEvents

    node = standard_node(sys.argv[1])
    driver = create_driver(multidp_rdma.plugin, {}, name="rdma", sysfs_root=node.sys, dev_root=node.dev)
    notified = threading.Event()
    driver._events.attach(notified.set)
    driver.scan()
    watch = LinkEvents(driver._events, driver._events.log)
    watch.start()
    for _ in range(1000):
        if driver._events.live("links"):
            break
        time.sleep(0.01)
    pf = next(d for d in driver._discovery.devices if d.name == "mlx5_1")
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def ioctl(request, *fields, layout="16sH14x"):
        return struct.unpack(layout, fcntl.ioctl(control, request, struct.pack(layout, *fields)))

    def set_up(up):
        flags = ioctl(0x8913, b"ens5f0", 0)[1]  # SIOCGIFFLAGS
        notified.clear()
        started = time.perf_counter()
        ioctl(0x8914, b"ens5f0", flags | 1 if up else flags & ~1)  # SIOCSIFFLAGS, IFF_UP
        assert notified.wait(10)
        return 1000 * (time.perf_counter() - started), driver.scan()["rdma/hca"]

    assert driver._events.live("links") and not driver._events.covered(pf)
    notified.clear()
    ioctl(0x8923, b"lo", b"ens5f0", layout="16s16s")  # SIOCSIFNAME
    assert notified.wait(10)
    print("covered after the rename", driver._events.covered(pf))
    for up in (True, False, True):
        (node.port_up if up else node.port_down)("mlx5_1")
        ms, devices = set_up(up)
        state = next(d.health.value for d in devices if d.id == "0000:86:00.0")
        print("ens5f0", "up" if up else "down", "->", state, f"({ms:.2f} ms to the notification)")
    watch.stop()
    driver.close()
""")


def can_unshare() -> str:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "a network namespace of its own needs root and unshare(1)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    return "" if probe.returncode == 0 else f"unshare --net fails here: {probe.stderr.decode().strip()}"


@pytest.mark.skipif(bool(can_unshare()), reason=can_unshare() or "runs")
def test_real_link_events_in_a_new_network_namespace_drive_roce_health(tmp_path: Path) -> None:
    finished = subprocess.run(["unshare", "--net", sys.executable, "-c", REAL, str(tmp_path / "node")],
                              capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == "covered after the rename True", finished.stdout
    assert [line.split(" (")[0] for line in lines[1:]] == [
        "ens5f0 up -> Healthy", "ens5f0 down -> Unhealthy", "ens5f0 up -> Healthy"], finished.stdout
