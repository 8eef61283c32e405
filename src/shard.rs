//! Shard glue (being written).
