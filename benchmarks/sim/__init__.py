"""An in-process simulation of a large cmnode cluster (``benchmarks/simulate.py``), checked against the formulas of
docs/scaling.md: gossip modelled as gossipsub does it, the real merge, placement and store code on every node."""
