//! The `hongbao` binary's library face: the node (start, stop, audit), so
//! the binary's tests drive exactly what `hongbao serve` runs.

pub use hongbao_node::*;
