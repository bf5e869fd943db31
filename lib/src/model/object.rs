//! Objects in the store as messages name them, and the checks that keep a name from a message
//! inside a scratch directory and a key inside its sector's prefix.

use serde::{Deserialize, Serialize};

/// Longest object name or key (S3's limit on keys); each `/`-separated segment is a file name
/// of at most 255 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
const MAX_SEGMENT_BYTES: usize = 255;
/// Most objects one task reads, one result writes or Finalize keeps (a 64GiB PC2 writes ~35).
pub const MAX_OBJECTS: usize = 1024;

/// An object in the store: where it is, how big, and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The file's path inside an attempt's scratch directory, e.g. `cache/p_aux`.
    pub name: String,
    /// The object's key in the store, e.g. `f01000/12/pc1-3fa9/cache/p_aux`.
    pub key: String,
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
}

/// Refuses object names that could escape a scratch directory and keys outside the sector:
/// a name is a relative path of safe segments, and a key is `prefix` followed by one.
pub fn check_object(object: &ObjectRef, prefix: &str) -> Result<(), String> {
    if !is_safe_path(&object.name) {
        return Err(format!(
            "object name '{}' is not a safe relative path",
            shown(&object.name)
        ));
    }
    let inside = object.key.len() <= MAX_KEY_BYTES
        && object.key.strip_prefix(prefix).is_some_and(is_safe_path);
    if !inside {
        return Err(format!(
            "object key '{}' is outside the sector's prefix '{prefix}'",
            shown(&object.key)
        ));
    }
    Ok(())
}

/// Non-empty `/`-separated segments of `[A-Za-z0-9._-]`, none of them `.` or `..`: a path that
/// stays below whatever directory or prefix it is joined to.
fn is_safe_path(path: &str) -> bool {
    path.len() <= MAX_KEY_BYTES && path.split('/').all(is_safe_segment)
}

/// One plain file name: `[A-Za-z0-9._-]`, not `.` or `..`, at most 255 bytes.
pub fn is_safe_segment(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= MAX_SEGMENT_BYTES
        && part != "."
        && part != ".."
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// An untrusted string as an error message may quote it: escaped and cut short.
pub fn shown(s: &str) -> String {
    s.escape_debug().take(200).collect()
}
