"""Prompt-set and image-set builders."""
