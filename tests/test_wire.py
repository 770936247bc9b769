"""multidp.serving.wire: the ListAndWatch answer the ListEncoder writes is the one protobuf would."""

from __future__ import annotations

from multidp.model import Device, Health
from multidp.serving.resource import ResourceState


def test_list_encoder_matches_protobuf_and_reuses_entries():
    from multidp.api import pb
    from multidp.serving.wire import ListEncoder

    state = ResourceState("example.com/w", "t")
    state.update([Device("a", numa_nodes=(0, 1)), Device("b", replicas=2), Device("é" * 200, numa_nodes=(300,))])
    encoder = ListEncoder()
    decoded = pb.ListAndWatchResponse.FromString(encoder.encode(state.snapshot))
    expected = pb.ListAndWatchResponse(devices=[
        pb.Device(ID="a", health="Healthy", topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=0), pb.NUMANode(ID=1)])),
        pb.Device(ID="b::0", health="Healthy"), pb.Device(ID="b::1", health="Healthy"),
        pb.Device(ID="é" * 200, health="Healthy", topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=300)]))])
    assert decoded == expected
    state.update([Device("a", Health.UNHEALTHY, numa_nodes=(0, 1)), Device("b", replicas=2)])
    decoded = pb.ListAndWatchResponse.FromString(encoder.encode(state.snapshot))
    assert [(d.ID, d.health) for d in decoded.devices] == [("a", "Unhealthy"), ("b::0", "Healthy"),
                                                           ("b::1", "Healthy")]
    assert state.update([]) and encoder.encode(state.snapshot) == b""
