"""Settings: the host's options (flag > variable > file), drivers' sections, per-node configs.

The bottom layer of the host: it knows the config file and the environment,
and nothing of drivers, gRPC or the kubelet.
"""
