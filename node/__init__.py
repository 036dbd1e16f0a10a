"""cmnode: a peer-to-peer container manager."""

__all__ = ["__version__"]

__version__ = "0.2.0"
