"""The store (one SQLite file of artifacts, benchmarks, evaluations), the report, and the CI latency gate."""
