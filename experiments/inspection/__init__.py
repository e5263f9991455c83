"""Looking inside a run: its plots, the serve page's pictures and latency."""
