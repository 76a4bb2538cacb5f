"""The bad-input harness's cases, one module per kind of input (see harness.py)."""
