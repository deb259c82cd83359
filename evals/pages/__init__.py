"""The evaluation pages."""
