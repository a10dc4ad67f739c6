"""The domain core: pure rules, no SQL, no web framework, no I/O.

Each ceremony's checks are a flat checklist here (``verify_activation``,
``verify_authentication``), taking the records the services read and returning what was
verified, or raising with a stable code; the strategy table, risk attributes and application
configuration are data plus pure functions. tests/server/core/test_imports.py keeps it so.
"""
