//! Lotus's JSON-RPC 2.0 over HTTP: one POST per call to `/rpc/v0` (miner) or `/rpc/v1` (full
//! node), the token as a bearer header. Errors say which API refused what, and for a missing
//! permission, which token to make.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ApiInfo;

/// Which of lotus's two APIs a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Miner,
    FullNode,
}

impl Api {
    fn version(self) -> &'static str {
        match self {
            Api::Miner => "v0",
            Api::FullNode => "v1",
        }
    }

    /// How an operator names it, and the environment variable and flag that set it.
    pub fn name(self) -> &'static str {
        match self {
            Api::Miner => "the lotus miner (MINER_API_INFO, --miner-api)",
            Api::FullNode => "the lotus full node (FULLNODE_API_INFO, --node-api)",
        }
    }

    fn create_token(self, perm: &str) -> String {
        match self {
            Api::Miner => format!("lotus-miner auth api-info --perm {perm}"),
            Api::FullNode => format!("lotus auth api-info --perm {perm}"),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("cannot reach {api} at {url}: {reason}; check that it runs and listens there", api = .api.name())]
    Unreachable {
        api: Api,
        url: String,
        reason: String,
    },
    #[error(
        "{api} refused the token ({status}) for {method}; set a valid one: `{fix}` prints it",
        api = .api.name()
    )]
    Token {
        api: Api,
        method: String,
        status: u16,
        fix: String,
    },
    #[error(
        "{api} refused {method}: it needs the '{perm}' permission; give the mesh a token made by \
         `{fix}`",
        api = .api.name()
    )]
    Permission {
        api: Api,
        method: String,
        perm: String,
        fix: String,
    },
    #[error("{api} answered {method} with an error: {message}", api = .api.name())]
    Server {
        api: Api,
        method: String,
        message: String,
    },
    #[error("{api} answered {method} with what the mesh cannot read: {reason}", api = .api.name())]
    BadReply {
        api: Api,
        method: String,
        reason: String,
    },
}

/// A JSON-RPC client for one lotus API.
#[derive(Clone)]
pub struct Client {
    api: Api,
    info: ApiInfo,
    http: reqwest::Client,
}

/// How long one call may take: lotus answers these calls from its state in well under a second.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    pub fn new(api: Api, info: ApiInfo) -> Client {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("an HTTP client without custom TLS builds");
        Client { api, info, http }
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn token(&self) -> Option<&str> {
        self.info.token.as_deref()
    }

    /// Calls `Filecoin.<method>` with positional `params`; `perm` is the permission lotus's API
    /// definition gives the method (`//perm:admin`), named in the error when it is missing.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        perm: &str,
        params: impl Serialize,
    ) -> Result<T, RpcError> {
        let url = self.info.endpoint(self.api.version());
        let body = json!({
            "jsonrpc": "2.0",
            "method": format!("Filecoin.{method}"),
            "params": params,
            "id": 1,
        });
        let mut request = self.http.post(url.clone()).json(&body);
        if let Some(token) = &self.info.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| RpcError::Unreachable {
            api: self.api,
            url: url.to_string(),
            reason: crate::redact::urls(&format!("{e:#}")),
        })?;
        let status = response.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(RpcError::Token {
                api: self.api,
                method: method.into(),
                status: status.as_u16(),
                fix: self.api.create_token(perm),
            });
        }
        let bad = |reason: String| RpcError::BadReply {
            api: self.api,
            method: method.into(),
            reason,
        };
        let text = response
            .text()
            .await
            .map_err(|e| bad(format!("reading the reply: {e}")))?;
        let reply: Value = serde_json::from_str(&text).map_err(|_| {
            bad(format!(
                "HTTP {status}, not JSON-RPC: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_string);
            // go-jsonrpc's auth proxy: "missing permission to invoke 'X' (need 'admin')".
            if message.contains("missing permission") {
                return Err(RpcError::Permission {
                    api: self.api,
                    method: method.into(),
                    perm: perm.into(),
                    fix: self.api.create_token(perm),
                });
            }
            return Err(RpcError::Server {
                api: self.api,
                method: method.into(),
                message,
            });
        }
        let result = reply.get("result").cloned().unwrap_or(Value::Null);
        serde_json::from_value(result).map_err(|e| bad(e.to_string()))
    }
}
