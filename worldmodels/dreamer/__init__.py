"""Dreamer v1: the learner (RSSM world model, actor and value with their optimizers and updates) and
the agent that acts with them in the real env."""
