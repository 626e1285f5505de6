"""The usage ledger, the only SQL two services share: metering writes it, billing and the console
read it (`reads`); `schema.sql` defines every table. README.md says who writes what and how a
close locks."""
