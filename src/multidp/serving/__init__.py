"""The Device Plugin API v1beta1: one resource's snapshots, gRPC service, endpoint and registration.

The only layer that knows protobuf and gRPC. It turns driver dataclasses into
v1beta1 messages, applies the error contract, and keeps each endpoint served
and registered with the kubelet.
"""
