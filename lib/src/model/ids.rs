//! Domain identifiers: miners, sectors, sizes, task classes and workers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A bad identifier typed by a user or found in a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} '{value}': {expected}")]
pub struct ParseIdError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn bad(what: &'static str, value: &str, expected: &'static str) -> ParseIdError {
    ParseIdError {
        what,
        value: value.to_string(),
        expected,
    }
}

/// A storage provider's actor id address, such as `f01000` (mainnet) or `t01000` (testnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MinerId {
    testnet: bool,
    actor: u64,
}

impl MinerId {
    pub fn actor(self) -> u64 {
        self.actor
    }
}

impl FromStr for MinerId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected an actor id address such as f01000 or t01000";
        let testnet = match s.as_bytes().first() {
            Some(b'f') => false,
            Some(b't') => true,
            _ => return Err(bad("miner id", s, EXPECTED)),
        };
        let digits = s[1..]
            .strip_prefix('0')
            .ok_or_else(|| bad("miner id", s, EXPECTED))?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return Err(bad("miner id", s, EXPECTED));
        }
        let actor = digits.parse().map_err(|_| bad("miner id", s, EXPECTED))?;
        Ok(Self { testnet, actor })
    }
}

impl fmt::Display for MinerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = if self.testnet { 't' } else { 'f' };
        write!(f, "{net}0{}", self.actor)
    }
}

impl TryFrom<String> for MinerId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MinerId> for String {
    fn from(m: MinerId) -> String {
        m.to_string()
    }
}

/// A sector number within one miner.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct SectorNum(pub u64);

impl fmt::Display for SectorNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sector size the mesh can seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SectorSize {
    KiB2,
    MiB8,
    MiB512,
    GiB32,
    GiB64,
}

impl SectorSize {
    pub const ALL: [SectorSize; 5] = [
        SectorSize::KiB2,
        SectorSize::MiB8,
        SectorSize::MiB512,
        SectorSize::GiB32,
        SectorSize::GiB64,
    ];

    /// The token used in subjects and stream names.
    pub fn token(self) -> &'static str {
        match self {
            SectorSize::KiB2 => "2kib",
            SectorSize::MiB8 => "8mib",
            SectorSize::MiB512 => "512mib",
            SectorSize::GiB32 => "32gib",
            SectorSize::GiB64 => "64gib",
        }
    }

    /// The size as people write it.
    pub fn label(self) -> &'static str {
        match self {
            SectorSize::KiB2 => "2KiB",
            SectorSize::MiB8 => "8MiB",
            SectorSize::MiB512 => "512MiB",
            SectorSize::GiB32 => "32GiB",
            SectorSize::GiB64 => "64GiB",
        }
    }

    pub fn bytes(self) -> u64 {
        match self {
            SectorSize::KiB2 => 2 << 10,
            SectorSize::MiB8 => 8 << 20,
            SectorSize::MiB512 => 512 << 20,
            SectorSize::GiB32 => 32 << 30,
            SectorSize::GiB64 => 64 << 30,
        }
    }

    /// Bytes of user data a sector holds (Fr32 padding takes 1/128).
    pub fn unpadded_bytes(self) -> u64 {
        self.bytes() / 128 * 127
    }

    pub fn from_bytes(bytes: u64) -> Option<Self> {
        SectorSize::ALL.into_iter().find(|s| s.bytes() == bytes)
    }
}

impl FromStr for SectorSize {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        SectorSize::ALL
            .into_iter()
            .find(|z| z.token() == lower || z.bytes().to_string() == lower)
            .ok_or_else(|| {
                bad(
                    "sector size",
                    s,
                    "expected one of 2KiB, 8MiB, 512MiB, 32GiB, 64GiB",
                )
            })
    }
}

impl fmt::Display for SectorSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether a task's sector holds deals. Deal sectors go first within a miner (lotus's second
/// priority), so each class has its own subject and consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskClass {
    Deals,
    Cc,
}

impl TaskClass {
    /// In the order workers take them.
    pub const ALL: [TaskClass; 2] = [TaskClass::Deals, TaskClass::Cc];

    pub fn of(has_deals: bool) -> TaskClass {
        if has_deals {
            TaskClass::Deals
        } else {
            TaskClass::Cc
        }
    }

    pub fn token(self) -> &'static str {
        match self {
            TaskClass::Deals => "deals",
            TaskClass::Cc => "cc",
        }
    }
}

impl FromStr for TaskClass {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskClass::ALL
            .into_iter()
            .find(|c| c.token() == s)
            .ok_or_else(|| bad("task class", s, "expected deals or cc"))
    }
}

impl fmt::Display for TaskClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Names one worker process for as long as it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miner_ids_round_trip_and_reject_garbage() {
        for ok in ["f01000", "t01000", "f00", "f0123456789"] {
            assert_eq!(ok.parse::<MinerId>().unwrap().to_string(), ok);
        }
        for bad in [
            "", "f0", "f1000", "x01000", "f01000a", "f0-1", "f001", "F01000",
        ] {
            let err = bad.parse::<MinerId>().unwrap_err();
            assert!(err.to_string().contains("f01000"), "{err}");
        }
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!("2KiB".parse::<SectorSize>().unwrap(), SectorSize::KiB2);
        assert_eq!("2kib".parse::<SectorSize>().unwrap(), SectorSize::KiB2);
        assert_eq!("2048".parse::<SectorSize>().unwrap(), SectorSize::KiB2);
        assert_eq!("32GiB".parse::<SectorSize>().unwrap(), SectorSize::GiB32);
        let err = "4KiB".parse::<SectorSize>().unwrap_err().to_string();
        assert!(err.contains("4KiB") && err.contains("2KiB, 8MiB"), "{err}");
        assert_eq!(SectorSize::KiB2.unpadded_bytes(), 2032);
    }
}
