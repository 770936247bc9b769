"""multidp-rdma: RDMA HCAs and SR-IOV VFs (InfiniBand and RoCE) for the multidp device plugin host.

The entry point ``rdma`` (group ``multidp``) names :mod:`multidp_rdma.plugin`.
"""

__version__ = "0.1.0"
