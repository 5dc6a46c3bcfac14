"""Branchline's runtime library: what every deployed service imports, and nothing else."""
