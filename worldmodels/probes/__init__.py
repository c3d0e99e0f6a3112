"""Measures that compare models rather than train them: V+M and Dreamer's RSSM side by side as
simulators on the same held-out episodes."""
