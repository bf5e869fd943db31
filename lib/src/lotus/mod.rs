//! Lotus's side of sealing as a service: how the mesh reaches a lotus miner and its full node
//! (their API info strings, JSON-RPC with bearer tokens), the wire types of lotus's sector import
//! as lotus's Go JSON spells them, and the chain's randomness for a sector's ticket.
//!
//! Read from lotus's source (filecoin-project/lotus): `cli/util/apiinfo.go`, `api/api_storage.go`,
//! `api/api_full.go`, `storage/pipeline/receive.go` and `states_sealing.go`.

pub mod api_info;
pub mod chain;
pub mod rpc;
pub mod wire;

pub use api_info::ApiInfo;
pub use chain::{Lotus, Ticket};
pub use rpc::{Client, RpcError};

/// The environment variable lotus's own tools read for the miner's API.
pub const MINER_API_INFO: &str = "MINER_API_INFO";
/// The environment variable lotus's own tools read for the full node's API.
pub const FULLNODE_API_INFO: &str = "FULLNODE_API_INFO";
