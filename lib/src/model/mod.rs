//! The vocabulary every layer shares: identifiers and sizes, pieces, store objects, the seal
//! proof of a size, what a task needs of a machine, and the wire codec with its limits. It
//! imports no other module of the crate.

mod codec;
mod ids;
mod need;
mod object;
mod piece;
mod seal;

pub use codec::{
    DecodeError, MAX_BLOB_BYTES, MAX_MESSAGE_BYTES, MAX_REASON_CHARS, check_blob, decode,
    decode_json, encode, one_line,
};
pub use ids::{MinerId, ParseIdError, SectorNum, SectorSize, TaskClass, WorkerId};
pub use need::Need;
pub use object::{MAX_KEY_BYTES, MAX_OBJECTS, ObjectRef, check_object, is_safe_segment, shown};
pub use piece::{
    MAX_PIECES, PieceInfo, PieceSpec, PiecesDoNotFit, check_pieces, fillers, padded, piece_size_for,
};
pub use seal::{RegisteredSealProof, SectorIdentity};
