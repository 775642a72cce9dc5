"""The pure core: no I/O, no clocks, no randomness of its own (time and rngs are arguments)."""
