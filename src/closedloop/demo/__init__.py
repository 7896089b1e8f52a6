"""The closed-loop demo: one machine, real processes, a report at the end."""
