"""The tamper-evident audit trail: hash-chained records, signed checkpoints, sinks, verify."""
