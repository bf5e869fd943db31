//! Lotus's sector-import types as its Go JSON spells them: field names in Go's case, `[]byte` as
//! standard base64, CIDs as `{"/": "baga…"}`, bitfields as run lengths starting with a run of
//! zeroes, addresses as strings and, for randomness, as the CBOR of their bytes.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{MinerId, SectorSize};

/// Go's `[]byte`: base64 in JSON; `null` reads as empty.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({})", hex::encode(&self.0))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        match text {
            None => Ok(Bytes::default()),
            Some(t) => STANDARD
                .decode(t.as_bytes())
                .map(Bytes)
                .map_err(|e| D::Error::custom(format!("bytes are not base64: {e}"))),
        }
    }
}

/// The multicodec of an unsealed sector's commitment (CommD): `fil-commitment-unsealed`.
pub const FIL_COMMITMENT_UNSEALED: u64 = 0xf101;
/// The multicodec of a sealed sector's commitment (CommR): `fil-commitment-sealed`.
pub const FIL_COMMITMENT_SEALED: u64 = 0xf102;
/// CommD's multihash: `sha2-256-trunc254-padded`.
pub const SHA2_256_TRUNC254_PADDED: u64 = 0x1012;
/// CommR's multihash: `poseidon-bls12_381-a2-fc1`.
pub const POSEIDON_BLS12_381_A2_FC1: u64 = 0xb401;

/// A CID as lotus's JSON writes it: `{"/": "<base32 string>"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cid(pub cid::Cid);

impl Cid {
    /// CommD as lotus's `commcid.DataCommitmentV1ToCID` makes it.
    pub fn comm_d(comm: [u8; 32]) -> Cid {
        Cid::commitment(FIL_COMMITMENT_UNSEALED, SHA2_256_TRUNC254_PADDED, comm)
    }

    /// CommR as lotus's `commcid.ReplicaCommitmentV1ToCID` makes it.
    pub fn comm_r(comm: [u8; 32]) -> Cid {
        Cid::commitment(FIL_COMMITMENT_SEALED, POSEIDON_BLS12_381_A2_FC1, comm)
    }

    fn commitment(codec: u64, hash: u64, comm: [u8; 32]) -> Cid {
        let mh = cid::multihash::Multihash::<64>::wrap(hash, &comm)
            .expect("32 bytes fit a 64-byte multihash");
        Cid(cid::Cid::new_v1(codec, mh))
    }

    /// The 32-byte commitment inside a CommD (`FIL_COMMITMENT_UNSEALED`) or CommR
    /// (`FIL_COMMITMENT_SEALED`) CID, after checking its prefix as lotus's `receive.go` does.
    pub fn commitment_of(&self, codec: u64) -> Result<[u8; 32], String> {
        let (name, hash) = match codec {
            FIL_COMMITMENT_UNSEALED => ("CommD", SHA2_256_TRUNC254_PADDED),
            _ => ("CommR", POSEIDON_BLS12_381_A2_FC1),
        };
        let c = &self.0;
        if c.version() != cid::Version::V1 || c.codec() != codec || c.hash().code() != hash {
            return Err(format!("{c} is not a {name} CID (wrong prefix)"));
        }
        c.hash()
            .digest()
            .try_into()
            .map_err(|_| format!("{c} is not a {name} CID (its digest is not 32 bytes)"))
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({})", self.0)
    }
}

impl std::str::FromStr for Cid {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        cid::Cid::try_from(s)
            .map(Cid)
            .map_err(|e| format!("'{s}' is not a CID: {e}"))
    }
}

#[derive(Serialize, Deserialize)]
struct CidJson {
    #[serde(rename = "/")]
    slash: String,
}

impl Serialize for Cid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CidJson {
            slash: self.0.to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = CidJson::deserialize(d)?;
        json.slash.parse().map_err(D::Error::custom)
    }
}

/// Go-bitfield's JSON: run lengths, alternating, starting with a run of absent values (so a set
/// starting at 0 starts with a 0-length run): `{0, 1, 2, 8, 9}` is `[0, 3, 5, 2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitField(pub Vec<u64>);

impl Serialize for BitField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bits = self.0.clone();
        bits.sort_unstable();
        bits.dedup();
        let mut runs: Vec<u64> = Vec::new();
        let mut next = 0u64;
        for bit in bits {
            match runs.last_mut() {
                Some(ones) if bit == next => *ones += 1,
                _ => runs.extend([bit - next, 1]),
            }
            next = bit + 1;
        }
        if runs.is_empty() {
            runs.push(0);
        }
        runs.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BitField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let runs: Vec<u64> = Vec::deserialize(d)?;
        let mut bits = Vec::new();
        let mut at = 0u64;
        for (i, &len) in runs.iter().enumerate() {
            if i % 2 == 1 {
                if len > 1 << 20 {
                    return Err(D::Error::custom(format!(
                        "a run of {len} sector numbers, more than the mesh reserves at once"
                    )));
                }
                bits.extend(at..at + len);
            }
            at = at
                .checked_add(len)
                .ok_or_else(|| D::Error::custom("bitfield runs overflow"))?;
        }
        Ok(BitField(bits))
    }
}

/// The CBOR encoding of an ID address (`f01000`): a byte string of the protocol byte 0 and the
/// actor id as a LEB128 varint. Lotus draws seal randomness over it (`maddr.MarshalCBOR`).
pub fn address_cbor(miner: MinerId) -> Vec<u8> {
    let prover = miner.prover_id();
    let len = prover
        .iter()
        .position(|&b| b & 0x80 == 0)
        .map_or(10, |i| i + 1);
    let mut payload = vec![0u8];
    payload.extend_from_slice(&prover[..len]);
    let mut out = vec![0x40 | payload.len() as u8];
    out.extend(payload);
    out
}

/// `abi.SectorID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SectorId {
    pub miner: u64,
    pub number: u64,
}

/// The part of `types.TipSet` the mesh reads: its key and height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TipSet {
    pub cids: Vec<Cid>,
    pub height: i64,
}

/// Lotus's `abi.RegisteredSealProof` numbers for the proofs the mesh seals with (the V1_1
/// proofs, 5 to 9).
pub fn seal_proof_number(size: SectorSize) -> i64 {
    match size {
        SectorSize::KiB2 => 5,
        SectorSize::MiB8 => 6,
        SectorSize::MiB512 => 7,
        SectorSize::GiB32 => 8,
        SectorSize::GiB64 => 9,
    }
}

/// `abi.PieceInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "PieceCID")]
    pub piece_cid: Cid,
}

/// `api.SectorPiece`: a piece and, for a deal, its deal (left to lotus: the mesh imports
/// committed-capacity sectors, whose pieces have none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SectorPiece {
    pub piece: PieceInfo,
    pub deal_info: Option<serde_json::Value>,
}

/// `storiface.SecDataHttpHeader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Header {
    pub key: String,
    pub value: String,
}

/// `storiface.SectorLocation`: where lotus downloads one of the sector's files (`application/
/// octet-stream`) or its cache (`application/x-tar`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SectorLocation {
    pub local: bool,
    #[serde(rename = "URL")]
    pub url: String,
    pub headers: Vec<Header>,
}

/// `api.RemoteSectorMeta`, for a sector imported in state `PreCommitting` (the fields of later
/// states stay out, and lotus reads them as empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteSectorMeta {
    pub state: String,
    pub sector: SectorId,
    #[serde(rename = "Type")]
    pub proof: i64,
    pub pieces: Vec<SectorPiece>,
    pub ticket_value: Bytes,
    pub ticket_epoch: i64,
    #[serde(rename = "PreCommit1Out")]
    pub pre_commit1_out: Bytes,
    pub comm_d: Option<Cid>,
    pub comm_r: Option<Cid>,
    pub data_unsealed: Option<SectorLocation>,
    pub data_sealed: Option<SectorLocation>,
    pub data_cache: Option<SectorLocation>,
    pub remote_commit1_endpoint: String,
    pub remote_commit2_endpoint: String,
    pub remote_sealing_done_endpoint: String,
}

/// `api.RemoteCommit1Params`: what lotus POSTs to the Commit1 endpoint once it has the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteCommit1Params {
    pub ticket: Bytes,
    pub seed: Bytes,
    pub unsealed: Cid,
    pub sealed: Cid,
    pub proof_type: i64,
}

/// `api.RemoteCommit2Params`: the Commit1 output lotus got back, for the SNARK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteCommit2Params {
    pub sector: SectorId,
    pub proof_type: i64,
    pub commit1_out: Bytes,
}

/// `api.RemoteSealingDoneParams`: the sector left lotus's sealing pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoteSealingDoneParams {
    pub successful: bool,
    pub state: String,
    pub commit_message: Option<Cid>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commitments_become_the_cids_lotus_checks() {
        // Lotus's CommD of an empty 2KiB sector (`zerocomm`), and back.
        let known = "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy";
        let cid: Cid = known.parse().unwrap();
        let comm = cid.commitment_of(FIL_COMMITMENT_UNSEALED).unwrap();
        assert_eq!(Cid::comm_d(comm).to_string(), known);
        let r = Cid::comm_r([7; 32]);
        assert!(r.to_string().starts_with("bagboea4b5abc"), "{r}");
        assert_eq!(r.commitment_of(FIL_COMMITMENT_SEALED).unwrap(), [7; 32]);
        let e = r.commitment_of(FIL_COMMITMENT_UNSEALED).unwrap_err();
        assert!(e.contains("not a CommD CID"), "{e}");
        assert_eq!(serde_json::to_value(cid).unwrap(), json!({ "/": known }),);
        let back: Cid = serde_json::from_value(json!({ "/": known })).unwrap();
        assert_eq!(back, cid);
        assert!(serde_json::from_value::<Cid>(json!({ "/": "nope" })).is_err());
    }

    #[test]
    fn bitfields_read_and_write_go_bitfield_runs() {
        for (bits, runs) in [
            (vec![0, 1, 2, 8, 9], json!([0, 3, 5, 2])),
            (vec![5, 6, 7], json!([5, 3])),
            (vec![], json!([0])),
            (vec![3, 5], json!([3, 1, 1, 1])),
        ] {
            assert_eq!(serde_json::to_value(BitField(bits.clone())).unwrap(), runs);
            let back: BitField = serde_json::from_value(runs).unwrap();
            assert_eq!(back.0, bits);
        }
        assert!(serde_json::from_value::<BitField>(json!([0, 1u64 << 40])).is_err());
    }

    #[test]
    fn id_addresses_encode_as_lotus_marshals_them() {
        // f01000: protocol 0, LEB128(1000) = e8 07, as a 3-byte CBOR byte string.
        let miner: MinerId = "f01000".parse().unwrap();
        assert_eq!(address_cbor(miner), vec![0x43, 0x00, 0xe8, 0x07]);
        let miner: MinerId = "t05".parse().unwrap();
        assert_eq!(address_cbor(miner), vec![0x42, 0x00, 0x05]);
    }

    #[test]
    fn bytes_are_base64_and_null_is_empty() {
        assert_eq!(
            serde_json::to_value(Bytes(vec![1, 2, 3])).unwrap(),
            json!("AQID")
        );
        let b: Bytes = serde_json::from_value(json!(null)).unwrap();
        assert!(b.0.is_empty());
        assert!(serde_json::from_value::<Bytes>(json!("!!")).is_err());
    }

    #[test]
    fn the_import_uses_lotus_field_names() {
        let meta = RemoteSectorMeta {
            state: "PreCommitting".into(),
            sector: SectorId {
                miner: 1000,
                number: 3,
            },
            proof: seal_proof_number(SectorSize::KiB2),
            pieces: vec![],
            ticket_value: Bytes(vec![0; 32]),
            ticket_epoch: 100,
            pre_commit1_out: Bytes(b"{}".to_vec()),
            comm_d: Some(Cid::comm_d([1; 32])),
            comm_r: Some(Cid::comm_r([2; 32])),
            data_unsealed: Some(SectorLocation {
                local: false,
                url: "http://x/u".into(),
                headers: vec![Header {
                    key: "Authorization".into(),
                    value: "Bearer s".into(),
                }],
            }),
            data_sealed: None,
            data_cache: None,
            remote_commit1_endpoint: "http://x/c1".into(),
            remote_commit2_endpoint: "http://x/c2".into(),
            remote_sealing_done_endpoint: "http://x/done".into(),
        };
        let v = serde_json::to_value(&meta).unwrap();
        for key in [
            "State",
            "Sector",
            "Type",
            "Pieces",
            "TicketValue",
            "TicketEpoch",
            "PreCommit1Out",
            "CommD",
            "CommR",
            "DataUnsealed",
            "DataSealed",
            "DataCache",
            "RemoteCommit1Endpoint",
            "RemoteCommit2Endpoint",
            "RemoteSealingDoneEndpoint",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["Sector"], json!({"Miner": 1000, "Number": 3}));
        assert_eq!(v["DataUnsealed"]["URL"], json!("http://x/u"));
        assert_eq!(
            v["DataUnsealed"]["Headers"][0]["Key"],
            json!("Authorization")
        );
        let back: RemoteSectorMeta = serde_json::from_value(v).unwrap();
        assert_eq!(back, meta);
        let c2: RemoteCommit2Params = serde_json::from_value(json!({
            "Sector": {"Miner": 1000, "Number": 3}, "ProofType": 5, "Commit1Out": "AQID"
        }))
        .unwrap();
        assert_eq!(c2.commit1_out.0, vec![1, 2, 3]);
    }
}
