"""GAZE's common package: config, contracts (events, RPC errors, schemas) and I/O helpers."""
