//! The task consumers as they stand: every task stream `init` made (sizes not served have
//! none), with its workers' consumers (one per miner and class). `status`, `miners list` and the
//! autoscaler all read the backlog from here.

use async_nats::jetstream;
use futures::TryStreamExt;

use super::{Broker, BrokerError};
use crate::model::SectorSize;
use crate::names;
use crate::phases::Phase;

/// A stream, or `None` when it does not exist.
pub async fn stream(
    broker: &Broker,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>, BrokerError> {
    match broker.stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(BrokerError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every task stream that `init` made (sizes not served have none), with its workers'
/// consumers (one per miner and class).
pub async fn task_consumers(
    broker: &Broker,
) -> Result<Vec<(Phase, SectorSize, Vec<jetstream::consumer::Info>)>, BrokerError> {
    let mut out = Vec::new();
    for size in SectorSize::ALL {
        for phase in Phase::ALL {
            let name = names::task_stream(phase, size);
            let Some(stream) = stream(broker, &name).await? else {
                continue;
            };
            let consumers: Vec<_> = stream
                .consumers()
                .try_collect()
                .await
                .map_err(|e| BrokerError::api(format!("list consumers of {name}"), e))?;
            out.push((phase, size, consumers));
        }
    }
    Ok(out)
}
