"""Evaluation: datasets of questions, experiments that run them through the agent, and their verdicts."""
