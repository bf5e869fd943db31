//! The HTTP listener lotus calls for a sector it imported: the sector's files, streamed from the
//! store (`unsealed` and `sealed` as `application/octet-stream`, the cache as an
//! `application/x-tar` of the files lotus keeps), and the Commit1, Commit2 and sealing-done
//! endpoints, each of which turns lotus's call into the sector's next step on the mesh and
//! answers with its output. Every URL carries the sector's secret: the data URLs as a bearer
//! header lotus forwards, the endpoints as `?token=` (lotus sends no header of its own there).
//!
//! Paths: `/sectors/<miner>/<number>/{unsealed,sealed,cache,commit1,commit2,done}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use super::super::Driver;
use crate::lotus::wire::{
    Cid, Header, RemoteCommit1Params, RemoteCommit2Params, RemoteSealingDoneParams, SectorLocation,
    seal_proof_number,
};
use crate::model::{MinerId, SectorNum};
use crate::phases::Artefact;
use crate::sector::{LotusDone, SectorRecord, SectorState};
use crate::store::StoreError;

/// How often a waiting Commit1 or Commit2 call looks at the sector again.
const POLL: Duration = Duration::from_millis(500);

/// The cache files lotus keeps of a sealed sector (its `tarutil.CacheFileConstraints`, less the
/// layers and trees C and D, which a finalized cache has not).
pub fn lotus_keeps(file: &str) -> bool {
    file == "p_aux"
        || file == "t_aux"
        || (file.starts_with("sc-02-data-tree-r-last") && file.ends_with(".dat"))
}

/// The listener's shared state.
struct Service {
    driver: Arc<Driver>,
    cancel: CancellationToken,
}

/// The URLs lotus is given for a sector, under `advertise` (what lotus reaches this listener
/// at).
pub struct Urls {
    pub unsealed: SectorLocation,
    pub sealed: SectorLocation,
    pub cache: SectorLocation,
    pub commit1: String,
    pub commit2: String,
    pub done: String,
}

impl Urls {
    pub fn new(advertise: &Url, miner: MinerId, sector: SectorNum, secret: &str) -> Urls {
        let base = advertise.as_str().trim_end_matches('/');
        let at = |what: &str| format!("{base}/sectors/{miner}/{}/{what}", sector.0);
        let location = |what: &str| SectorLocation {
            local: false,
            url: at(what),
            headers: vec![Header {
                key: "Authorization".into(),
                value: format!("Bearer {secret}"),
            }],
        };
        Urls {
            unsealed: location("unsealed"),
            sealed: location("sealed"),
            cache: location("cache"),
            commit1: format!("{}?token={secret}", at("commit1")),
            commit2: format!("{}?token={secret}", at("commit2")),
            done: format!("{}?token={secret}", at("done")),
        }
    }
}

/// Serves lotus on `listener` until `cancel`.
pub async fn serve(
    driver: Arc<Driver>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let service = Arc::new(Service {
        driver,
        cancel: cancel.clone(),
    });
    let app = Router::new()
        .route("/sectors/{miner}/{sector}/{file}", get(data))
        .route("/sectors/{miner}/{sector}/commit1", post(commit1))
        .route("/sectors/{miner}/{sector}/commit2", post(commit2))
        .route("/sectors/{miner}/{sector}/done", post(done))
        .with_state(service);
    info!(addr = %listener.local_addr()?, "serving lotus");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

/// An answer that is not the data: its status and a one-line reason.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            warn!(status = %self.0, reason = %self.1, "lotus request failed");
        }
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Refusal {
    Refusal(status, why.into())
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Equal secrets, compared in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Service {
    /// The record of a lotus sector of this publisher's miner, once `secret` is its secret.
    async fn sector(
        &self,
        miner: &str,
        sector: &str,
        secret: Option<&str>,
    ) -> Result<SectorRecord, Refusal> {
        let unknown = || refuse(StatusCode::NOT_FOUND, "no such lotus sector here");
        let miner: MinerId = miner.parse().map_err(|_| unknown())?;
        let number: u64 = sector.parse().map_err(|_| unknown())?;
        if miner != self.driver.miner() {
            return Err(unknown());
        }
        let (record, _) = self
            .driver
            .load(SectorNum(number))
            .await
            .map_err(internal)?
            .ok_or_else(unknown)?;
        let Some(lotus) = &record.lotus else {
            return Err(unknown());
        };
        match secret {
            Some(s) if same(s, &lotus.secret) => Ok(record),
            _ => Err(refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong sector secret",
            )),
        }
    }

    /// Waits until `ready` finds what the call answers with in the sector's record; a failed
    /// or stopped sector, or a publisher shutting down, ends the wait with the reason.
    async fn wait<T>(
        &self,
        sector: SectorNum,
        mut ready: impl FnMut(&SectorRecord) -> Option<T>,
    ) -> Result<T, Refusal> {
        loop {
            let (record, _) = self
                .driver
                .load(sector)
                .await
                .map_err(internal)?
                .ok_or_else(|| internal("the sector's record vanished"))?;
            if let Some(out) = ready(&record) {
                return Ok(out);
            }
            match &record.state {
                SectorState::Failed { phase, reason, .. } => {
                    return Err(internal(format!("the sector failed in {phase}: {reason}")));
                }
                SectorState::Stopped { after, .. } => {
                    return Err(internal(format!("the sector was stopped after {after}")));
                }
                _ => {}
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.cancel.cancelled() => {
                    return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "the publisher is stopping; call again"));
                }
            }
        }
    }

    /// Gives lotus's seed to the sector and publishes its Commit1, once it waits for it (again,
    /// after a relocation sent it back through PreCommit2).
    async fn give_seed(&self, sector: SectorNum, seed: [u8; 32]) -> Result<(), Refusal> {
        let record = self
            .driver
            .update(sector, |r| {
                if r.data.seed == Some(seed) {
                    return Ok(false);
                }
                r.take_seed(seed, crate::now_ms()).map(|()| true)
            })
            .await
            .map_err(internal)?
            .map_err(|why| refuse(StatusCode::CONFLICT, format!("cannot take the seed: {why}")))?;
        self.driver
            .ensure_published(record)
            .await
            .map_err(internal)?;
        Ok(())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// `GET …/unsealed`, `…/sealed`, `…/cache`.
async fn data(
    State(service): State<Arc<Service>>,
    Path((miner, sector, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let record = service.sector(&miner, &sector, bearer(&headers)).await?;
    let store = service.driver.store().clone();
    let missing = |what: &str| {
        refuse(
            StatusCode::CONFLICT,
            format!(
                "sector {}.{} has no {what} in the store yet (it is in {})",
                record.miner,
                record.sector,
                record.state.label()
            ),
        )
    };
    match file.as_str() {
        "unsealed" | "sealed" => {
            let object = record
                .data
                .objects
                .get(&file)
                .ok_or_else(|| missing(&file))?;
            let (size, stream) = store.get_stream(&object.key).await.map_err(internal)?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, size.to_string()),
                ],
                Body::from_stream(stream),
            )
                .into_response())
        }
        "cache" => {
            let files: Vec<(String, String, u64)> = record
                .data
                .objects
                .iter()
                .filter_map(|(name, object)| {
                    let file = Artefact::in_cache(name)?;
                    lotus_keeps(file).then(|| (file.to_string(), object.key.clone(), object.size))
                })
                .collect();
            if !files.iter().any(|(f, _, _)| f == "p_aux") {
                return Err(missing("cache (p_aux, t_aux, tree R)"));
            }
            let length: u64 = files
                .iter()
                .map(|(_, _, size)| 512 + size.div_ceil(512) * 512)
                .sum::<u64>()
                + 1024;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-tar".to_string()),
                    (header::CONTENT_LENGTH, length.to_string()),
                ],
                Body::from_stream(tar_stream(store, files)),
            )
                .into_response())
        }
        _ => Err(refuse(StatusCode::NOT_FOUND, "no such sector file")),
    }
}

/// A tar archive of `files` (name in the archive, store key, size), streamed from the store: a
/// ustar header, the file, zeros to a 512-byte block, and two zero blocks at the end.
fn tar_stream(
    store: crate::store::Store,
    files: Vec<(String, String, u64)>,
) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let entries = futures::stream::iter(files).then(move |(name, key, size)| {
        let store = store.clone();
        async move {
            let mut head = tar::Header::new_ustar();
            head.set_path(&name).map_err(|e| StoreError::Local {
                path: name.clone().into(),
                reason: e.to_string(),
            })?;
            head.set_size(size);
            head.set_mode(0o644);
            head.set_mtime(0);
            head.set_entry_type(tar::EntryType::Regular);
            head.set_cksum();
            let (got, body) = store.get_stream(&key).await?;
            if got != size {
                return Err(StoreError::Unavailable {
                    store: store.name().to_string(),
                    action: "download",
                    key,
                    reason: format!("{got} bytes where the record says {size}"),
                });
            }
            let pad = (size.div_ceil(512) * 512 - size) as usize;
            let head =
                futures::stream::once(async move { Ok(Bytes::copy_from_slice(head.as_bytes())) });
            let tail = futures::stream::once(async move { Ok(Bytes::from(vec![0u8; pad])) });
            Ok::<_, StoreError>(head.chain(body).chain(tail))
        }
    });
    entries
        .map(|entry| match entry {
            Ok(stream) => stream.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .chain(futures::stream::once(async {
            Ok(Bytes::from(vec![0u8; 1024]))
        }))
}

#[derive(Deserialize)]
struct Token {
    token: Option<String>,
}

impl Service {
    /// An endpoint call's sector (once the token is its secret) and its JSON body `what`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        (miner, sector): &(String, String),
        token: &Token,
        body: &[u8],
        what: &str,
    ) -> Result<(SectorRecord, T), Refusal> {
        let record = self.sector(miner, sector, token.token.as_deref()).await?;
        let params = serde_json::from_slice(body)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("{what} body: {e}")))?;
        Ok((record, params))
    }
}

/// What a waiting Commit1 call finds.
enum C1 {
    /// The sector went back through PreCommit2 (its holder was lost) and waits for the seed.
    SeedAgain,
    /// Commit1's output, by store key.
    Output(String),
}

/// `POST …/commit1`: lotus's seed and the sector's identity; answers with Commit1's output.
async fn commit1(
    State(service): State<Arc<Service>>,
    Path(path): Path<(String, String)>,
    Query(token): Query<Token>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (record, params): (_, RemoteCommit1Params) = service
        .call(&path, &token, &body, "RemoteCommit1Params")
        .await?;
    let conflict = |why: String| refuse(StatusCode::CONFLICT, why);
    if params.proof_type != seal_proof_number(record.size) {
        return Err(conflict(format!(
            "proof type {} is not the sector's ({})",
            params.proof_type,
            seal_proof_number(record.size)
        )));
    }
    if params.ticket.0 != record.data.ticket {
        return Err(conflict("the ticket is not the sector's".into()));
    }
    let (Some(comm_d), Some(comm_r)) = (record.data.comm_d, record.data.comm_r) else {
        return Err(conflict(format!(
            "the sector has no commitments yet (it is in {})",
            record.state.label()
        )));
    };
    if params.unsealed != Cid::comm_d(comm_d) || params.sealed != Cid::comm_r(comm_r) {
        return Err(conflict("CommD or CommR is not the sector's".into()));
    }
    let seed: [u8; 32] = params
        .seed
        .0
        .as_slice()
        .try_into()
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the seed is not 32 bytes"))?;
    let number = record.sector;
    info!(sector = %number, "lotus asks for commit1");
    let key = loop {
        service.give_seed(number, seed).await?;
        let found = service
            .wait(number, |r| {
                if r.awaits_lotus() {
                    return Some(C1::SeedAgain);
                }
                r.data
                    .objects
                    .get(Artefact::C1Output.name())
                    .map(|o| C1::Output(o.key.clone()))
            })
            .await?;
        match found {
            C1::Output(key) => break key,
            C1::SeedAgain => {
                info!(sector = %number, "the sector was sealed again; giving it the seed again")
            }
        }
    };
    let out = service
        .driver
        .store()
        .get_bytes(&key)
        .await
        .map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response())
}

/// `POST …/commit2`: Commit1's output back; answers with the proof once it verified.
async fn commit2(
    State(service): State<Arc<Service>>,
    Path(path): Path<(String, String)>,
    Query(token): Query<Token>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (record, params): (_, RemoteCommit2Params) = service
        .call(&path, &token, &body, "RemoteCommit2Params")
        .await?;
    if (params.sector.miner, params.sector.number) != (record.miner.actor(), record.sector.0) {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!(
                "the body names sector {}.{}, the URL {}.{}",
                params.sector.miner, params.sector.number, record.miner, record.sector
            ),
        ));
    }
    info!(sector = %record.sector, "lotus asks for commit2");
    let proof = service
        .wait(record.sector, |r| r.data.proof_bytes.clone())
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        proof.into_vec(),
    )
        .into_response())
}

/// `POST …/done`: the sector left lotus's sealing pipeline.
async fn done(
    State(service): State<Arc<Service>>,
    Path(path): Path<(String, String)>,
    Query(token): Query<Token>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (record, params): (_, RemoteSealingDoneParams) = service
        .call(&path, &token, &body, "RemoteSealingDoneParams")
        .await?;
    let at_ms = crate::now_ms();
    service
        .driver
        .update(record.sector, |r| {
            let lotus = r.lotus.as_mut().ok_or("it is not sealed for lotus")?;
            lotus.done = Some(LotusDone {
                successful: params.successful,
                state: params.state.clone(),
                at_ms,
            });
            Ok(true)
        })
        .await
        .map_err(internal)?
        .map_err(|why| refuse(StatusCode::CONFLICT, why))?;
    if params.successful {
        info!(sector = %record.sector, state = %params.state, "lotus reports the sector done");
    } else {
        warn!(sector = %record.sector, state = %params.state, "lotus reports the sector failed");
    }
    Ok(StatusCode::OK.into_response())
}
