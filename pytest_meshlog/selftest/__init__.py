"""Deliberately broken variants of the reference stack, to prove the harness catches each."""
