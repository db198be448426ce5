"""Where the work runs: one Executor protocol (encode a store, run grid points, run funnel points) and its
local, Ray and shard implementations."""
