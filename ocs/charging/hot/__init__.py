"""The engine's hot state in memory (issue #14): plain numpy arrays that one numba kernel call per
batch reads and writes, so a request costs no Python object and the state can be checkpointed and
restored as arrays (engine-measurements.md: 4.0-8.6 us per durable CCR-U in that shape, against
today's 82.8)."""
