"""Developer tooling: the local Kafka and PostgreSQL, the process supervisor, `./tierline`'s
commands and the demo and benchmark workloads.

Not part of the product: the installed package and the image hold only `shared` and `services`,
and product code never imports from here (tests/unit/test_imports.py). Run it from the repository
root (`./tierline ...` or `python -m tools.<module>`).
"""
