"""The domain of SPEC §3–§8: money, periods, the agreement, usage counts, the projection and the
rating. Pure: no I/O, no clock, no environment (tests/unit/test_imports.py)."""
