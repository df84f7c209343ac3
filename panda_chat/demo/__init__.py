"""Embedded demo models and the recipe that makes them: a corpus generator, a small base LM, reward heads, lambda."""
