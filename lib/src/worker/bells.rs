//! How an idle worker learns that a task waits, at a server cost that does not grow with the
//! pool. A publisher rings a task stream's bell after each task it stores there; each bell is
//! heard by one worker, not all: workers listen in a queue group, and only to the bells of the
//! streams whose tasks they have room for now, so the one woken can take the task. What no
//! bell announces (a redelivery, a task handed back, a bell lost with a worker that was paused
//! or left the group) is found by the idle workers' polls, which the pool spreads between its
//! members: together they ask about as often as [`PROBERS`] workers do, whatever their number.

use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures::StreamExt;
use futures::future::FutureExt;
use rand::Rng;
use tracing::{debug, warn};

use crate::broker::{Broker, BrokerError};
use crate::model::{MinerId, TaskClass, WorkerId};
use crate::names;

/// The queue group every worker hears a task stream's bell in.
pub const BELL_GROUP: &str = "mesh-workers";
/// How many workers' worth of polls a pool makes, whatever its size: a pool of up to this many
/// workers polls every `poll_interval` each; a larger one each worker less often.
pub const PROBERS: u64 = 25;
/// A worker reads the size of the pool (the records in the workers bucket) at its first poll,
/// then every [`POOL_POLLS`] polls or [`POOL_EVERY`], whichever comes first: one request at most
/// per poll (which asks each of up to six streams), and a pool started all at once, whose
/// members first saw it small, spreads its polls within 10 polls.
const POOL_POLLS: u32 = 10;
const POOL_EVERY: Duration = Duration::from_secs(60);

/// A bell that rang: that of the sectors this worker holds, or that of the stream of the
/// source at this index, with the miner and class whose task it announces when it names them
/// (see `names::bell_body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rung {
    Held,
    Stream(usize, Option<(MinerId, TaskClass)>),
}

/// The bells a worker hears: its own (the tasks of the sectors it holds) always, and each
/// served stream's while it has room for that stream's tasks.
pub(super) struct Bells {
    client: Client,
    held: Option<Subscriber>,
    /// Per source, in the sources' order: the bell's subject, and the subscription while heard.
    streams: Vec<(String, Option<Subscriber>)>,
}

impl Bells {
    pub async fn open(
        client: Client,
        subjects: Vec<String>,
        held: Option<&WorkerId>,
    ) -> Result<Bells, async_nats::SubscribeError> {
        let held = match held {
            Some(worker) => Some(client.subscribe(names::held_bell(worker)).await?),
            None => None,
        };
        Ok(Bells {
            client,
            held,
            streams: subjects.into_iter().map(|s| (s, None)).collect(),
        })
    }

    /// Hears the bells of the sources in `now` (indices into the sources) and of no other. A
    /// bell already delivered to a subscription given up is lost; the pool's polls find its
    /// task.
    pub async fn hear(&mut self, now: &[usize]) {
        for (i, (subject, heard)) in self.streams.iter_mut().enumerate() {
            match (now.contains(&i), heard.is_some()) {
                (true, false) => {
                    match self
                        .client
                        .queue_subscribe(subject.clone(), BELL_GROUP.to_string())
                        .await
                    {
                        Ok(sub) => *heard = Some(sub),
                        Err(e) => {
                            warn!(bell = %subject, error = %e, "cannot listen for new tasks; polling finds them")
                        }
                    }
                }
                (false, true) => {
                    if let Some(mut sub) = heard.take()
                        && let Err(e) = sub.unsubscribe().await
                    {
                        debug!(bell = %subject, error = %e, "unsubscribe failed");
                    }
                }
                _ => {}
            }
        }
    }

    /// Forgets the bells rung so far: the take that follows answers them.
    pub fn clear(&mut self) {
        for (_, sub) in self.heard() {
            while let Some(Some(_)) = sub.next().now_or_never() {}
        }
    }

    /// Waits until a bell rings (for ever while none is heard): which one.
    pub async fn rung(&mut self) -> Rung {
        let (mut which, mut next): (Vec<Rung>, Vec<_>) =
            self.heard().map(|(rung, sub)| (rung, sub.next())).unzip();
        while !next.is_empty() {
            let (bell, at, rest) = futures::future::select_all(next).await;
            if let Some(bell) = bell {
                return match which[at] {
                    Rung::Stream(i, _) => Rung::Stream(i, names::parse_bell_body(&bell.payload)),
                    held => held,
                };
            }
            // A subscription that ended (the client closed): the others may still ring.
            // `select_all` swap-removes the finished future from what it returns.
            which.swap_remove(at);
            next = rest;
        }
        std::future::pending().await
    }

    /// The bells heard now, each with its subscription.
    fn heard(&mut self) -> impl Iterator<Item = (Rung, &mut Subscriber)> {
        let streams = self.streams.iter_mut().enumerate();
        self.held.iter_mut().map(|sub| (Rung::Held, sub)).chain(
            streams
                .filter_map(|(i, (_, sub))| sub.as_mut().map(|sub| (Rung::Stream(i, None), sub))),
        )
    }
}

/// When an idle worker polls next: every `every` in a pool of up to [`PROBERS`] workers, every
/// `every × pool ÷ PROBERS` in a larger one, each time jittered by a quarter either way so that
/// the pool's polls spread instead of falling in step.
pub(super) struct Polls {
    every: Duration,
    pool: u64,
    /// When the pool's size was read, and the polls since.
    read: Option<(Instant, u32)>,
}

impl Polls {
    pub fn new(every: Duration) -> Polls {
        Polls {
            every,
            pool: 1,
            read: None,
        }
    }

    /// How long until the next poll, reading the pool's size first when it is due.
    pub async fn next(&mut self, broker: &Broker) -> Duration {
        let due = match &mut self.read {
            None => true,
            Some((at, polls)) => {
                *polls += 1;
                *polls >= POOL_POLLS || at.elapsed() >= POOL_EVERY
            }
        };
        if due {
            self.read = Some((Instant::now(), 0));
            match pool_size(broker).await {
                Ok(pool) => self.pool = pool.max(1),
                Err(e) => debug!(error = %e, "cannot read the pool's size; polls keep their pace"),
            }
        }
        interval(
            self.every,
            self.pool,
            rand::thread_rng().gen_range(0.75..1.25),
        )
    }
}

/// The poll interval of one worker of `pool` with the jitter factor `jitter`.
fn interval(every: Duration, pool: u64, jitter: f64) -> Duration {
    let spread = (pool as f64 / PROBERS as f64).max(1.0);
    every.mul_f64(spread * jitter)
}

/// The workers in the pool: the records in the workers bucket (one per live worker; a clean
/// exit's deletion counts until the bucket's TTL drops it).
async fn pool_size(broker: &Broker) -> Result<u64, BrokerError> {
    let stream = broker
        .stream(&format!("KV_{}", names::WORKERS_BUCKET))
        .await?;
    Ok(stream.cached_info().state.messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_pool_polls_as_often_as_probers_workers_do() {
        let every = Duration::from_secs(2);
        assert_eq!(interval(every, 1, 1.0), every);
        assert_eq!(interval(every, PROBERS, 1.0), every);
        assert_eq!(interval(every, 1_000, 1.0), Duration::from_secs(80));
        // The pool's polls per interval stay at PROBERS.
        for pool in [PROBERS + 1, 100, 1_000, 10_000] {
            let per_every =
                pool as f64 * every.as_secs_f64() / interval(every, pool, 1.0).as_secs_f64();
            assert!(
                (per_every - PROBERS as f64).abs() < 1e-6,
                "{pool}: {per_every}"
            );
        }
        assert_eq!(interval(every, 1, 0.75), Duration::from_millis(1_500));
    }
}
