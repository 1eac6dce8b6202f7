"""Ported from neural-tangents 0.6.5 (see tests/nt_compat/README.md)."""
