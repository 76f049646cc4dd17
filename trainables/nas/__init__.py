"""NAS child networks: the NAS-Bench-201 cell space trained for real."""
