"""The DRA front-end: drivers' devices served through Dynamic Resource Allocation.

Beside the Device Plugin endpoints (:mod:`multidp.serving`), a driver whose
section says ``frontend: dra`` is served here: a registration socket in the
kubelet's ``plugins_registry``, a DRA service socket under ``plugins/<name>/``
(NodePrepareResources / NodeUnprepareResources, v1 and v1beta1), the
NodeWatchResources health stream (v1, v1beta1, v1alpha1), a checkpoint of
prepared claims, and per-claim CDI specs. The same driver objects serve both.
"""
