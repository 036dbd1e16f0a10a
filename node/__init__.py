"""cmnode: a peer-to-peer container manager."""

__version__ = "0.1.0"
