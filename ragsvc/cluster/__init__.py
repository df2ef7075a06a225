"""Scale-out on Ray: shard replicas as actors behind the `ShardedIndex` interface, and how to reach a cluster.

Nothing here imports Ray at module level: the embedded default (placement `in_process`) never starts or
imports it, and `ray` is an optional extra (`pip install ragsvc[cluster]`).
"""
