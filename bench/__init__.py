"""nbqueue benchmark harness (not part of the package or the test suite).

Run from the repo root: ``python -m bench --n 20000``. See bench/README.md.
"""
