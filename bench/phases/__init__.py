"""The benchmark's phases, in the order bench/run.py runs them: throughput, latency, profile,
close, ceiling. Each measures one thing and records its figures in ``Results``."""
