"""Benchmarks, apart from tests: ``python -m bench [name ...]`` runs ``bench/bench_<name>.py`` (all by default).
Each prints ratios against a baseline run in the same process, medians of several runs."""
