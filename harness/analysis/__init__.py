"""DAAM's linguistic analyses (Tang et al., ACL 2023, sections 5-6): attribution by part of
speech, visuosyntactic relations, cohyponym and adjectival entanglement. See docs/daam_analyses.md."""
