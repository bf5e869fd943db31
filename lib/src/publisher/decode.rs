//! `mesh-publisher decode`: any mesh message or KV value as JSON. Task, result and dead-letter
//! bodies and sector records are MessagePack, which `nats stream view` and `nats kv get` show
//! as bytes; the other buckets hold JSON already.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::model::decode;
use crate::names;
use crate::sector::{SectorRecord, Task, TaskResult};

/// What a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Task,
    Result,
    Sector,
    Json,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Result => "result",
            Kind::Sector => "sector",
            Kind::Json => "json",
        }
    }

    /// The kind of a stream's messages: tasks (task streams, `MESH_HELD`, dead letters),
    /// results, sector records, or JSON (the other buckets).
    pub fn of_stream(stream: &str) -> Option<Kind> {
        let sectors = format!("KV_{}", names::SECTORS_BUCKET);
        match stream {
            s if s.starts_with("MESH_TASK_") => Some(Kind::Task),
            s if s == names::HELD_STREAM || s == names::DLQ_STREAM => Some(Kind::Task),
            s if s == names::RESULT_STREAM => Some(Kind::Result),
            s if s == sectors => Some(Kind::Sector),
            s if s.starts_with("KV_mesh-") => Some(Kind::Json),
            _ => None,
        }
    }

    /// The kind of a bucket's values.
    pub fn of_bucket(bucket: &str) -> Kind {
        if bucket == names::SECTORS_BUCKET {
            Kind::Sector
        } else {
            Kind::Json
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "task" => Ok(Kind::Task),
            "result" => Ok(Kind::Result),
            "sector" => Ok(Kind::Sector),
            "json" => Ok(Kind::Json),
            _ => Err(format!(
                "'{s}' is not a kind: use task, result, sector or json"
            )),
        }
    }
}

fn as_kind(bytes: &[u8], kind: Kind) -> Result<Value, String> {
    let value = match kind {
        Kind::Task => decode::<Task>(bytes).map(serde_json::to_value),
        Kind::Result => decode::<TaskResult>(bytes).map(serde_json::to_value),
        Kind::Sector => decode::<SectorRecord>(bytes).map(serde_json::to_value),
        Kind::Json => return serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    };
    value.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// `bytes` as `kind`, or, without one, as the first kind it decodes as (task, result, sector
/// record, JSON).
pub fn body(bytes: &[u8], kind: Option<Kind>) -> anyhow::Result<(Kind, Value)> {
    if let Some(kind) = kind {
        return as_kind(bytes, kind)
            .map(|v| (kind, v))
            .map_err(|e| anyhow::anyhow!("not a {}: {e}", kind.label()));
    }
    for kind in [Kind::Task, Kind::Result, Kind::Sector, Kind::Json] {
        if let Ok(value) = as_kind(bytes, kind) {
            return Ok((kind, value));
        }
    }
    bail!(
        "{} bytes that are no mesh task, result or sector record (MessagePack) and no JSON; \
         they start {}",
        bytes.len(),
        preview(bytes)
    )
}

fn preview(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(32)])
}

/// The body, or why it does not decode and how it starts (a dead letter of garbage, a body
/// cut short by `Mesh-Truncated`).
fn body_or_why(bytes: &[u8], kind: Option<Kind>) -> (Option<Kind>, Value) {
    match body(bytes, kind) {
        Ok((kind, value)) => (Some(kind), value),
        Err(e) => (
            None,
            json!({ "undecodable": format!("{e:#}"), "starts": preview(bytes), "bytes": bytes.len() }),
        ),
    }
}

/// Message `sequence` of `stream`: subject, time, headers and body.
pub async fn from_stream(
    broker: &Broker,
    stream: &str,
    sequence: u64,
    kind: Option<Kind>,
) -> anyhow::Result<Value> {
    let handle = broker.stream(stream).await?;
    let message = handle.get_raw_message(sequence).await.with_context(|| {
        format!("message {sequence} of {stream} (see `nats stream info {stream}` for its range)")
    })?;
    let headers: BTreeMap<String, Vec<String>> = message
        .headers
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|v| v.as_str().to_string()).collect();
            (name.to_string(), values)
        })
        .collect();
    let (kind, body) = body_or_why(&message.payload, kind.or(Kind::of_stream(stream)));
    Ok(json!({
        "stream": stream,
        "sequence": message.sequence,
        "subject": message.subject.as_str(),
        "time": message.time.to_string(),
        "headers": headers,
        "kind": kind.map(Kind::label),
        "body": body,
    }))
}

/// The value of `key` in `bucket`, with its revision.
pub async fn from_bucket(
    broker: &Broker,
    bucket: &str,
    key: &str,
    kind: Option<Kind>,
) -> anyhow::Result<Value> {
    let keys = broker.keys(bucket).await?;
    let entry = keys
        .entry(key)
        .await
        .with_context(|| format!("read {key} of {bucket}"))?;
    let Some(entry) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
    else {
        bail!("{bucket} has no key {key} (`nats kv ls {bucket}` lists them)");
    };
    let (kind, value) = body_or_why(&entry.value, Some(kind.unwrap_or(Kind::of_bucket(bucket))));
    Ok(json!({
        "bucket": bucket,
        "key": key,
        "revision": entry.revision,
        "kind": kind.map(Kind::label),
        "value": value,
    }))
}

/// Bytes from elsewhere (stdin): the body alone, with its kind.
pub fn from_bytes(bytes: &[u8], kind: Option<Kind>) -> anyhow::Result<Value> {
    let (kind, value) = body(bytes, kind)?;
    Ok(json!({ "kind": kind.label(), "body": value }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encode;

    #[test]
    fn each_wire_message_decodes_as_its_kind_and_garbage_says_how_it_starts() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire-v1");
        for (file, kind) in [
            ("task-pc1.mpk", Kind::Task),
            ("result-c2.mpk", Kind::Result),
            ("record-sealed.mpk", Kind::Sector),
        ] {
            let bytes = std::fs::read(format!("{dir}/{file}")).unwrap();
            let (found, value) = body(&bytes, None).unwrap();
            assert_eq!(found, kind, "{file}");
            assert!(value.is_object(), "{file}: {value}");
        }
        let task: Task = decode(&std::fs::read(format!("{dir}/task-pc1.mpk")).unwrap()).unwrap();
        let value = from_bytes(&encode(&task), None).unwrap();
        assert_eq!(value["kind"], "task");
        assert_eq!(value["body"]["id"], task.id.0.as_str());
        assert_eq!(
            from_bytes(br#"{"weight": 2}"#, None).unwrap(),
            json!({ "kind": "json", "body": { "weight": 2 } })
        );
        let garbage = body(b"\xff\x00garbage", None).unwrap_err().to_string();
        assert!(garbage.contains("they start ff0067"), "{garbage}");
        let wrong = body(&encode(&task), Some(Kind::Result)).unwrap_err();
        assert!(wrong.to_string().starts_with("not a result: "), "{wrong}");
    }
}
