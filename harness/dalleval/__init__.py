"""DALL-EVAL-style evaluation: visual-reasoning skills and social-bias skew (docs/dalleval.md)."""
