"""The host: which drivers run on this node, their lifecycle, and the table of resources they serve.

Scan → diff → one endpoint per resource; node labels and reloads start, stop
and rebuild drivers; kubelet restarts are followed through file events.
"""
