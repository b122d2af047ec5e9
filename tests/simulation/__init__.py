"""The deterministic simulator: the real dispatch code under a simulated clock, API and faults."""
