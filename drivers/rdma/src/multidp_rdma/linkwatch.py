"""rtnetlink link events on a plain netlink socket: RoCE and IPoIB netdevs going up, down, away.

A RoCE port is ACTIVE/LinkUp exactly while its netdev is up with carrier, so a
link event on a device's netdev is a prompt to read its port state again. The
socket joins the RTMGRP_LINK group (no capability needed) and first dumps the
links it can see: only netdevs in that set, the network namespace this process
runs in, count as covered (a VF netdev moved into a pod's namespace does not; nor
does anything when the pod lacks ``hostNetwork``).

The standard library's socket module speaks netlink and only three structs are
read, so no library is used: pyroute2, used before, added 10-19 MB of RSS and
0.1-0.15 s at start (its package imports IPDB and NDB whatever is asked of it).
One thread blocks in poll() on the socket and a stop pipe: no timed wake-up.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple, Protocol

from multidp_rdma.blocking import BlockingReader
from multidp_rdma.events import EventHub

# From the Linux uapi headers (torvalds/linux, include/uapi/linux/): netlink.h, rtnetlink.h, if_link.h.
NETLINK_ROUTE = 0
RTMGRP_LINK = 1
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300  # NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
IFLA_IFNAME = 3  # NUL-terminated
NLMSGHDR = struct.Struct("=LHHLL")  # length (header included), type, flags, sequence, sender port
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), device type, index, flags, change mask
RTATTR = struct.Struct("=HH")  # length (header included), type; attributes start 4-byte aligned
RECEIVE_BYTES = 65536  # above the kernel's largest dump datagram (32 KiB), so none is cut short


class Link(NamedTuple):
    kind: int  # RTM_NEWLINK, RTM_DELLINK or NLMSG_DONE
    ifindex: int = 0
    name: str = ""  # "" when the message carried none


class LinkSocket(Protocol):
    def fileno(self) -> int: ...

    def recvfrom(self, size: int, /) -> tuple[bytes, object]: ...

    def close(self) -> None: ...


def _aligned(length: int) -> int:
    return (length + 3) & ~3


def _ifname(body: bytes) -> tuple[str, str]:
    """IFLA_IFNAME from an ifinfomsg's attributes, and what was wrong with them ('' when nothing)."""
    offset = IFINFOMSG.size
    while offset + RTATTR.size <= len(body):
        length, kind = RTATTR.unpack_from(body, offset)
        if length < RTATTR.size or offset + length > len(body):
            return "", f"an attribute of {length} bytes at {offset} of a {len(body)}-byte link message"
        if kind == IFLA_IFNAME:
            return os.fsdecode(body[offset + RTATTR.size:offset + length].split(b"\0", 1)[0]), ""
        offset += _aligned(length)
    return "", ""


def parse_links(data: bytes) -> tuple[list[Link], str]:
    """The link messages of one datagram, and what was malformed in it ('' when nothing).

    Raises OSError when the kernel refused the dump (an NLMSG_ERROR; we ask for no acknowledgements).
    """
    links: list[Link] = []
    problem = ""
    offset = 0
    while offset < len(data):
        if offset + NLMSGHDR.size > len(data):
            return links, problem or f"{len(data) - offset} bytes left over at the end of a netlink datagram"
        length, kind, _flags, _sequence, _port = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return links, problem or f"a netlink message of {length} bytes at {offset} of a {len(data)}-byte datagram"
        body = data[offset + NLMSGHDR.size:offset + length]
        if kind == NLMSG_ERROR and len(body) < 4:
            problem = problem or f"an error message of {length} bytes, too short for its error code"
        elif kind == NLMSG_ERROR and (code := -struct.unpack_from("=i", body)[0]):
            raise OSError(code, f"the kernel refused the link dump: {os.strerror(code)}")
        elif kind == NLMSG_DONE:
            links.append(Link(NLMSG_DONE))
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) < IFINFOMSG.size:
            problem = problem or f"a link message of {length} bytes, too short for its ifinfomsg"
        elif kind in (RTM_NEWLINK, RTM_DELLINK):
            name, wrong = _ifname(body)
            links.append(Link(kind, IFINFOMSG.unpack_from(body)[2], name))
            problem = problem or wrong
        offset += _aligned(length)  # NLMSG_NOOP, an acknowledgement (error 0), other types: nothing to do
    return links, problem


def open_link_socket() -> socket.socket:
    """A netlink socket in the RTMGRP_LINK group, with a dump of every link requested."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.bind((0, RTMGRP_LINK))  # before the dump: a change during it still arrives as an event
        request = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = NLMSGHDR.pack(NLMSGHDR.size + len(request), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.sendto(header + request, (0, 0))  # port 0: the kernel
    except Exception:
        sock.close()
        raise
    return sock


class LinkEvents(BlockingReader):
    """Feeds link events to an :class:`EventHub`; ``opener`` makes the socket (tests pass a stand-in)."""

    def __init__(self, hub: EventHub, log: logging.Logger,
                 opener: Callable[[], LinkSocket] = open_link_socket) -> None:
        super().__init__("rdma-links")
        self.hub = hub
        self.log = log
        self._opener = opener
        self._names: dict[int, str] = {}  # ifindex → name, of every link this namespace has
        self._malformed_said = False

    def _open(self) -> LinkSocket | None:
        try:
            return self._opener()
        except Exception as exc:  # noqa: BLE001 - no netlink in this sandbox, and the like
            self.hub.source_down("links", f"cannot subscribe to rtnetlink link events ({type(exc).__name__}: {exc})")
        return None

    def _run(self) -> None:
        sock = self._open()
        announced = False
        while sock is not None:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            poller.register(self._stop_read, select.POLLIN)
            try:
                while True:
                    ready = {fd for fd, _ in poller.poll()}  # blocks until a message or stop()
                    if self._stop_read in ready:
                        return
                    if self._receive(*sock.recvfrom(RECEIVE_BYTES)) and not announced:
                        announced = True
                        self.log.info("receiving rtnetlink link events (%d links in this network namespace)",
                                      len(self._names))
                        self.hub.source_up("links")
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    self.log.warning("rtnetlink link events stopped (%s); RoCE ports are polled instead", exc)
                    self.hub.source_down("links", f"the rtnetlink socket failed ({exc})")
                    return
                # The kernel dropped messages for us: a new socket, a new dump, every device read again.
                self.log.info("rtnetlink link events were lost (%s): reading every RDMA port again", exc)
                self.hub.health_of_all()
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave ports unpolled
                self.log.exception("rtnetlink link events stopped; RoCE ports are polled instead")
                self.hub.source_down("links", f"reading link events failed ({type(exc).__name__}: {exc})")
                return
            finally:
                sock.close()
            self._names.clear()
            sock = self._open()

    def _receive(self, data: bytes, sender: object) -> bool:
        """Apply one datagram; True when it ended the initial dump."""
        if isinstance(sender, tuple) and sender and sender[0] != 0:
            return False  # another process's socket, not the kernel: nothing it says is a link change
        links, problem = parse_links(data)
        if problem and not self._malformed_said:
            self._malformed_said = True  # once: the rest of that datagram is skipped, the next ones still read
            self.log.warning("malformed rtnetlink message skipped (%s); said once", problem)
        done = False
        changed: set[str] = set()
        for link in links:
            if link.kind == NLMSG_DONE:
                done = True
                continue
            name = link.name or self._names.get(link.ifindex, "")
            old = self._names.pop(link.ifindex, None) if link.kind == RTM_DELLINK else self._names.get(link.ifindex)
            if link.kind == RTM_NEWLINK and name:
                self._names[link.ifindex] = name
            if old and old != name:
                changed.add(old)
            if name:
                changed.add(name)
        if changed:
            self.hub.links_present(frozenset(self._names.values()))
            for name in sorted(changed):
                self.hub.link(name)
        return done
