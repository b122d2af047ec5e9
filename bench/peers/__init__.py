"""Other ways to drain the same backlog, measured beside the outbox by bench/bench_peers.py."""
