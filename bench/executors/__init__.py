"""How a sweep maps run_one over (backbone, seeds) tasks: in this process, one child process per
backbone, or Ray tasks on a cluster. Executors only move work and rows."""
