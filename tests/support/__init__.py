"""Test support: a throwaway PostgreSQL (postgres), the control-plane as a real process (server),
and the pinned Node SDK for wire-compatibility tests (node)."""
