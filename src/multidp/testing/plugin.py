"""pytest fixtures for driver authors (registered through the ``pytest11`` entry point).

- ``socket_dir``: a fresh, short directory for unix sockets (107-byte limit).
- ``kubelet``: a started :class:`~multidp.testing.KubeletStandIn` in ``socket_dir``.
- ``multidp_host``: a factory; ``multidp_host({"name": plugin}, drivers={...})``
  starts a host against ``kubelet`` and stops it after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from multidp.host.host import Host
from multidp.testing.host import running_host
from multidp.testing.kubelet import KubeletStandIn
from multidp.testing.util import short_socket_dir


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A fresh folder with a short path for unix sockets (the 107-byte limit), removed after the test."""
    path = short_socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet(socket_dir: Path) -> Iterator[KubeletStandIn]:
    """A started :class:`~multidp.testing.KubeletStandIn` serving ``socket_dir``, shut down after the test."""
    stand_in = KubeletStandIn(socket_dir).start()
    yield stand_in
    stand_in.shutdown()


@pytest.fixture
def multidp_host(kubelet: KubeletStandIn) -> Iterator[Callable[..., Host]]:
    """A factory: ``multidp_host({"name": plugin}, drivers={...}, simulate=True)`` starts a host.

    It runs against ``kubelet``, takes the arguments of :func:`~multidp.testing.running_host`,
    and is stopped after the test.
    """
    with ExitStack() as stack:

        def start(plugins: dict[str, Any] | None = None, **kwargs: Any) -> Host:
            return stack.enter_context(running_host(kubelet.directory, plugins, **kwargs))

        yield start
