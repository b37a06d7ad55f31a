"""HTTP edges: translate requests into core calls and results into responses."""
