"""multidp.serving.sockets: endpoint socket names, short and stable for any resource name."""

from __future__ import annotations

from multidp.serving.sockets import socket_name


def test_socket_names_are_short_and_stable():
    long_name = "fpga.intel.com/af-695.d84.aVKNtusxV3qMNmj5-qCB9thCTcSko8QT-J5DNoP5BAs"
    assert socket_name("fpga", long_name) == socket_name("fpga", long_name)
    assert len(socket_name("fpga", long_name)) == len("multidp-fpga-12345678.sock")
    assert socket_name("fpga", long_name) != socket_name("fpga", long_name + "x")
