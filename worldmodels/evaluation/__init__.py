"""Policies played in the real env: one exploration episode, lockstep evaluation episodes and their
scores, and the baselines every agent is scored beside."""
