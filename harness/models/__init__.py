"""Pipeline loading: local folders, the offline Hugging Face cache, and built-in small models."""
