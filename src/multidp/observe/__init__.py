"""What an operator sees of a running host: Prometheus metrics, /healthz and /readyz."""
