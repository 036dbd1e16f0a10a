"""The RPC face of a node: ``protocol`` (JSON-RPC 2.0 dispatch), ``methods`` and ``schema`` (the API and its
OpenRPC description), ``server`` (HTTP) and ``client`` (stdlib only, for the CLI).

Nothing is re-exported here: importing the package must stay as light as ``rpc.client``, which client commands
load without the server's quart, hypercorn and trio.
"""

__all__: list[str] = []
