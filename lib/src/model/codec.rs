//! MessagePack on the wire (JSON for the registry buckets), and the limits every body and blob
//! a message carries is held to.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest task or result body accepted (the NATS default `max_payload`).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Largest opaque proof output a message carries (PC1 output, C2 proof); real ones are a few
/// KiB, and a sector record holds both.
pub const MAX_BLOB_BYTES: usize = 128 << 10;
/// Longest failure reason kept, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is larger than the {MAX_MESSAGE_BYTES} bytes allowed")]
    TooLarge(usize),
    #[error("undecodable message body: {0}")]
    Malformed(#[from] rmp_serde::decode::Error),
    #[error("undecodable JSON body: {0}")]
    MalformedJson(#[from] serde_json::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("mesh messages always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(rmp_serde::from_slice(bytes)?)
}

/// [`decode`] for the JSON bodies of the registry buckets (workers, miners, drain marks), which
/// stay JSON so that `nats kv get` shows them.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Refuses an opaque blob larger than [`MAX_BLOB_BYTES`].
pub fn check_blob(what: &str, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(format!(
            "{what} of {} bytes is larger than the {MAX_BLOB_BYTES} bytes allowed",
            bytes.len()
        ));
    }
    Ok(())
}

/// A reason as it travels in a header and stays in a sector record: control characters
/// (newlines, terminal escapes) become spaces, and it ends after [`MAX_REASON_CHARS`].
pub fn one_line(s: &str) -> String {
    s.chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_oversized_bodies_are_refused() {
        assert!(matches!(
            decode::<Vec<u32>>(b"garbage"),
            Err(DecodeError::Malformed(_))
        ));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode::<u32>(&big), Err(DecodeError::TooLarge(_))));
        assert!(matches!(
            decode_json::<u32>(&big),
            Err(DecodeError::TooLarge(_))
        ));
        assert!(matches!(
            decode_json::<u32>(b"{"),
            Err(DecodeError::MalformedJson(_))
        ));
    }

    #[test]
    fn reasons_stay_on_one_short_line() {
        let reason = one_line(&format!("line\nbreak\x1b[31m{}", "x".repeat(5000)));
        assert!(reason.starts_with("line break [31m"), "{reason}");
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS);
        assert_eq!(one_line(&reason), reason);
    }
}
