"""Launched by tests/dist/test_file_commands.py: rank 1 raises while rank 0 waits for it in a collective."""

from rairl.dist import init_dist

dist = init_dist("ddp", timeout_s=60)
if dist.rank == 1:
    raise RuntimeError("rank 1 fails on purpose")
dist.barrier()  # never completed: the launcher must stop rank 0 and exit non-zero
