"""The Registration client shared by every endpoint, and the deferred-job runner."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from multidp.api import pb
from multidp.serving.later import Later
from multidp.serving.registration import KubeletChanged, KubeletClient, RegistrationError, socket_identity
from multidp.testing import KubeletStandIn, wait_until

RESOURCE = "example.com/widget"


def always(_: object = None) -> bool:
    return True


def register(client: KubeletClient, kubelet: KubeletStandIn) -> None:
    identity = socket_identity(kubelet.socket_path)
    assert identity is not None
    client.register(identity, always, "multidp-x.sock", RESOURCE, pb.DevicePluginOptions())


@pytest.fixture
def refusing_kubelet(socket_dir):
    kubelet = KubeletStandIn(socket_dir)
    kubelet.refuse = "not now"  # answers every Register at once, without dialling back
    kubelet.start()
    yield kubelet
    kubelet.shutdown()


def test_one_channel_per_kubelet_and_a_new_one_after_a_restart(refusing_kubelet):
    client = KubeletClient(refusing_kubelet.socket_path, timeout=5)
    try:
        with pytest.raises(RegistrationError, match="the kubelet refused: not now"):
            register(client, refusing_kubelet)
        first = client._channel
        with pytest.raises(RegistrationError, match="not now"):
            register(client, refusing_kubelet)
        assert client._channel is first  # the endpoints of one kubelet share its connection
        refusing_kubelet.restart()
        with pytest.raises(RegistrationError, match="not now"):
            register(client, refusing_kubelet)
        assert client._channel is not first and client._retired == [first]
    finally:
        client.close()


def test_a_call_for_a_kubelet_that_has_gone_is_not_made(refusing_kubelet):
    client = KubeletClient(refusing_kubelet.socket_path, timeout=5)
    old = socket_identity(refusing_kubelet.socket_path)
    assert old is not None
    refusing_kubelet.restart()
    try:
        with pytest.raises(KubeletChanged):
            client.register(old, always, "multidp-x.sock", RESOURCE, pb.DevicePluginOptions())
        with pytest.raises(KubeletChanged):  # our socket went
            register_while(client, refusing_kubelet, still_ours=False)
        assert refusing_kubelet.registrations == [] and client._channel is None
    finally:
        client.close()


def register_while(client: KubeletClient, kubelet: KubeletStandIn, still_ours: bool) -> None:
    identity = socket_identity(kubelet.socket_path)
    assert identity is not None
    client.register(identity, lambda: still_ours, "multidp-x.sock", RESOURCE, pb.DevicePluginOptions())


def test_a_kubelet_socket_nobody_answers_fails_fast_and_forgets_the_channel(socket_dir):
    path = socket_dir / "kubelet.sock"
    with socket.socket(socket.AF_UNIX) as bound:  # bound, never listening: connections are refused
        bound.bind(str(path))
        client = KubeletClient(path, timeout=5)
        identity = socket_identity(path)
        assert identity is not None
        with pytest.raises(RegistrationError, match="is not answering"):
            client.register(identity, always, "multidp-x.sock", RESOURCE, pb.DevicePluginOptions())
        # The next try dials afresh instead of waiting out this channel's reconnect backoff.
        assert client._channel is None
        client.close()


def test_later_runs_jobs_by_due_time_and_survives_a_failing_one(caplog):
    later = Later("test-later")
    ran: list[str] = []
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    later.call(0.06, lambda: (ran.append("last"), done.set()))
    later.call(0.02, lambda: ran.append("second"))
    later.call(0.01, fail)
    later.call(0.0, lambda: ran.append("first"))
    later.call(0.02, lambda: ran.append("third"))  # same due time as "second": asked later, runs later
    assert done.wait(5)
    assert ran == ["first", "second", "third", "last"]
    assert "test-later: a deferred job failed" in caplog.text and "boom" in caplog.text
    later.close()


def test_later_close_drops_what_has_not_run(caplog):
    caplog.set_level(logging.ERROR)
    later = Later("test-later")
    ran: list[str] = []
    later.call(0.0, lambda: ran.append("now"))
    wait_until(lambda: ran == ["now"], what="the first job")
    later.call(0.2, lambda: ran.append("later"))
    later.close()
    later.call(0.0, lambda: ran.append("after close"))
    threading.Event().wait(0.4)
    assert ran == ["now"]
