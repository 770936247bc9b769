"""multidp driver for NVIDIA GPUs: a drop-in for NVIDIA's k8s-device-plugin.

Entry point ``nvidia`` (group ``multidp``) → :mod:`multidp_nvidia.plugin`.
"""

__version__ = "0.1.0"
