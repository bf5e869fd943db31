//! Following keys of a KV bucket: every entry under a filter, history first and then each
//! change, for as long as the follower lives. A watch that cannot be opened, or that ends when
//! the connection goes, is opened again after a pause (its history brings the follower up to
//! date).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use backon::{ConstantBuilder, Retryable};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long a follower waits before opening a failed or ended watch again.
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// Hands every entry of `bucket` under `filter` (a key, or `>`) to `on_entry` until `stop`;
/// `what` names the followed keys in the warning a failed watch logs.
pub async fn follow(
    bucket: kv::Store,
    filter: String,
    what: &'static str,
    stop: CancellationToken,
    on_entry: impl Fn(kv::Entry) + Send + Sync + 'static,
) {
    // Each try owns what it uses: a future borrowing from the closure would not be `Send`.
    let on_entry = Arc::new(on_entry);
    let watch_once = || {
        let (bucket, filter, on_entry) = (bucket.clone(), filter.clone(), on_entry.clone());
        async move {
            let mut watch = bucket.watch_with_history(&filter).await.map_err(Some)?;
            while let Some(Ok(entry)) = watch.next().await {
                on_entry(entry);
            }
            // The watch ended (the connection went): open it again.
            Err::<(), _>(None)
        }
    };
    let followed = watch_once
        .retry(
            ConstantBuilder::new()
                .with_delay(REOPEN_AFTER)
                .without_max_times(),
        )
        .notify(|e: &Option<kv::WatchError>, _| {
            if let Some(e) = e {
                warn!(error = %e, "cannot follow {what}; retrying");
            }
        });
    stop.run_until_cancelled(followed).await;
}
