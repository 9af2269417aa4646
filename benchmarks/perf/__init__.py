"""The performance benchmark (issue 7): ``python -m benchmarks.perf`` (see ``__main__.py``)."""
