"""What users run to trust the pipeline: latency sweeps, accuracy parity, and the demo."""
