//! One active autoscaler per group. Each group has a key in the `mesh-leases` bucket naming
//! the autoscaler that sizes it; any number of autoscalers with the group in their config may
//! run, and all but the holder stand by. The holder renews the key (compare-and-set) every
//! third of the lease time; a standby that has seen the same revision for a whole lease time,
//! by its own clock, takes the key over (compare-and-set again, so two standbys cannot both
//! win). The holder acts only within half a lease time of its last renewal, so it stops before
//! a standby can start, whatever the hosts' clocks say. A holder told to stop deletes the key,
//! and a standby takes over at its next look.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::broker::keys::{KeyError, Keys};

/// What the key holds, for operators (`nats kv get mesh-leases <group>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub lease_ms: u64,
    pub renewed_ms: u64,
}

#[derive(Debug)]
enum State {
    /// This autoscaler holds the key at `revision`, last written at `renewed` (taken before
    /// the write was sent).
    Held { revision: u64, renewed: Instant },
    /// Another holds it; `seen` is the revision last read and since when it has not changed.
    Standby {
        seen: Option<(u64, Instant)>,
        holder: Option<String>,
    },
}

/// One group's lease, as this autoscaler sees it.
#[derive(Debug)]
pub struct Lease {
    group: String,
    holder: String,
    lease: Duration,
    state: State,
}

/// What a [`Lease::check`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    /// This autoscaler took the group (first, or over from `from`).
    Took {
        from: Option<String>,
    },
    /// Another autoscaler holds the group now.
    Lost {
        to: Option<String>,
    },
}

impl Lease {
    pub fn new(group: &str, holder: &str, lease: Duration) -> Self {
        Lease {
            group: group.to_string(),
            holder: holder.to_string(),
            lease,
            state: State::Standby {
                seen: None,
                holder: None,
            },
        }
    }

    /// How often [`Lease::check`] should run.
    pub fn every(&self) -> Duration {
        self.lease / 3
    }

    /// Whether this autoscaler may act on the group now.
    pub fn active(&self, now: Instant) -> bool {
        matches!(self.state, State::Held { renewed, .. } if now < renewed + self.lease / 2)
    }

    /// The autoscaler that holds the group, as last read (`None`: unknown, or none).
    pub fn holder(&self) -> Option<&str> {
        match &self.state {
            State::Held { .. } => Some(&self.holder),
            State::Standby { holder, .. } => holder.as_deref(),
        }
    }

    fn record(&self) -> Bytes {
        serde_json::to_vec(&LeaseRecord {
            holder: self.holder.clone(),
            lease_ms: self.lease.as_millis() as u64,
            renewed_ms: crate::now_ms(),
        })
        .expect("a lease record serializes")
        .into()
    }

    /// Renews the lease if held, or takes it if free or left unrenewed for a lease time.
    pub async fn check(&mut self, keys: &Keys) -> Result<Change, KeyError> {
        let sent = Instant::now();
        match self.state {
            State::Held { revision, .. } => {
                match keys.update(&self.group, self.record(), revision).await {
                    Ok(revision) => {
                        self.state = State::Held {
                            revision,
                            renewed: sent,
                        };
                        Ok(Change::None)
                    }
                    Err(KeyError::Changed { .. }) => {
                        let to = self.read_holder(keys).await;
                        self.state = State::Standby {
                            seen: None,
                            holder: to.clone(),
                        };
                        Ok(Change::Lost { to })
                    }
                    // Still held until the renewal is half a lease old (`active`).
                    Err(e) => Err(e),
                }
            }
            State::Standby { seen, .. } => {
                let entry = keys.entry(&self.group).await?;
                let live = entry
                    .as_ref()
                    .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put);
                let Some(entry) = live else {
                    // Free: never taken, or released.
                    return match keys.create(&self.group, self.record()).await {
                        Ok(revision) => {
                            self.state = State::Held {
                                revision,
                                renewed: sent,
                            };
                            Ok(Change::Took { from: None })
                        }
                        Err(KeyError::Exists(_) | KeyError::Changed { .. }) => {
                            self.state = State::Standby {
                                seen: None,
                                holder: None,
                            };
                            Ok(Change::None)
                        }
                        Err(e) => Err(e),
                    };
                };
                let from = serde_json::from_slice::<LeaseRecord>(&entry.value)
                    .ok()
                    .map(|r| r.holder);
                let stale = match seen {
                    Some((revision, since)) if revision == entry.revision => {
                        sent.duration_since(since) >= self.lease
                    }
                    _ => false,
                };
                // A lease this autoscaler's own id wrote (a restart with a fixed id) is its own.
                if !stale && from.as_deref() != Some(self.holder.as_str()) {
                    if seen.is_none_or(|(revision, _)| revision != entry.revision) {
                        self.state = State::Standby {
                            seen: Some((entry.revision, sent)),
                            holder: from,
                        };
                    }
                    return Ok(Change::None);
                }
                match keys
                    .update(&self.group, self.record(), entry.revision)
                    .await
                {
                    Ok(revision) => {
                        self.state = State::Held {
                            revision,
                            renewed: sent,
                        };
                        Ok(Change::Took { from })
                    }
                    Err(KeyError::Changed { .. }) => {
                        self.state = State::Standby {
                            seen: None,
                            holder: None,
                        };
                        Ok(Change::None)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn read_holder(&self, keys: &Keys) -> Option<String> {
        let value = keys.get(&self.group).await.ok()??;
        serde_json::from_slice::<LeaseRecord>(&value)
            .ok()
            .map(|r| r.holder)
    }

    /// Gives the lease up if held (on the way out), so that a standby takes over at once.
    pub async fn release(&mut self, keys: &Keys) {
        if let State::Held { revision, .. } = self.state {
            match keys.delete(&self.group, revision).await {
                Ok(_) => info!(group = %self.group, "lease released"),
                Err(e) => {
                    warn!(group = %self.group, error = %e, "could not release the lease; a standby takes over when it runs out")
                }
            }
            self.state = State::Standby {
                seen: None,
                holder: None,
            };
        }
    }
}

/// This process's name in a lease: host and pid.
pub fn holder_id() -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}
