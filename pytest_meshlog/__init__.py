"""pytest-meshlog: a teardown-correctness harness for log-forwarding meshes."""

__version__ = "0.1.0"
