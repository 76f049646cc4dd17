"""Measurement tools behind `warmtune bench overhead|latency|throughput|compare`."""
