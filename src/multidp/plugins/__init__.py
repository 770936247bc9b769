"""Drivers as plugins: finding them (entry points), creating them, and calling them safely.

Everything that runs a plugin's code runs here, each driver in isolation:
under a deadline, on the driver's own threads, its failures its own.
"""
