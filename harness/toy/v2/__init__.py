"""Toy world v2: 64x64 textured, shaded, occluding and counted objects with exact masks.

World v1 (`harness.toy.world`, `model=toy_v1`) stays as it was so that its published figures
remain reproducible. See `docs/toy_world_v2.md` for the grammar and every word's mask rule.
"""
