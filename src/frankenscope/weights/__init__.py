"""Weight-space tools: partitions, streaming reads, diffs, merges, freeze plans."""
