"""Data: sources, cleaning, tokenizer, token caches and task sets."""
