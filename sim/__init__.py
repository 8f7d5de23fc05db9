"""Test and demo tooling that never ships to dom0: the XAPI simulator and the pool in a box."""
