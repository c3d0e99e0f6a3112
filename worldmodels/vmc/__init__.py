"""V-M-C beyond the networks: M's training and its measures as a simulator, the batched dream C is
evolved in and where its dreams start, C's real-env fitness, the V+M+C agent, and the dream videos."""
