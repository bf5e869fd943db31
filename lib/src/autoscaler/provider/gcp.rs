//! GCE managed instance group (MIG) provider: sizes a zonal or regional group through the Compute
//! Engine REST API v1 and deletes named instances from it.
//!
//! Auth: an OAuth2 access token from `MESH_GCP_ACCESS_TOKEN` when that is set (used as is, never
//! refreshed: for runs off GCE, e.g. with `gcloud auth print-access-token`), else from the GCE
//! metadata server as the instance's service account, fetched again before it expires. The
//! service account needs `roles/compute.instanceAdmin.v1` (or a role with
//! `compute.instanceGroupManagers.{get,update}`) on the group's project.
//!
//! The calls that change the group (`resize`, `deleteInstances`) return an Operation that this
//! provider does not wait on: the next `instances()` shows how far the group has got. Draining
//! happens through the mesh before `remove`, so the instance-metadata drain of the terraform
//! module (`mesh-drain=true`) is not used here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::{Instance, InstanceState, ProviderError};

/// Where the access token comes from when the metadata server is not to be used.
pub const ACCESS_TOKEN_ENV: &str = "MESH_GCP_ACCESS_TOKEN";
const DEFAULT_ENDPOINT: &str = "https://compute.googleapis.com/compute/v1";
const DEFAULT_METADATA_ENDPOINT: &str = "http://metadata.google.internal";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const TERRAFORM_MODULE: &str = "terraform/modules/gcp-worker-group";
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// Off GCE the metadata server's name does not resolve or nothing answers: fail fast.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// A token is fetched again this long before it expires (at most half its lifetime).
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A GCP group's `provider` table (`kind = "gcp"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// The project that holds the group, e.g. `my-sealing-project`.
    pub project: String,
    /// The zone of a zonal group, e.g. `us-central1-a`. Exactly one of `zone` and `region`.
    pub zone: Option<String>,
    /// The region of a regional group, e.g. `us-central1`. Exactly one of `zone` and `region`.
    pub region: Option<String>,
    /// The managed instance group's name, e.g. `mesh-pc1-cpu` (the terraform module's
    /// `instance_group_manager_name` output).
    pub group: String,
    /// Compute Engine API base URL; `https://compute.googleapis.com/compute/v1` when left out.
    /// Tests point it at a fake.
    pub endpoint: Option<String>,
    /// GCE metadata server base URL, where the access token comes from unless
    /// `MESH_GCP_ACCESS_TOKEN` is set; `http://metadata.google.internal` when left out. Tests
    /// point it at a fake.
    pub metadata_endpoint: Option<String>,
}

enum Location {
    Zone(String),
    Region(String),
}

impl GcpConfig {
    /// Checks names and URLs, naming the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        check_name("project", &self.project)?;
        check_name("group", &self.group)?;
        match (&self.zone, &self.region) {
            (Some(zone), None) => check_name("zone", zone)?,
            (None, Some(region)) => check_name("region", region)?,
            (Some(zone), Some(region)) => {
                return Err(format!(
                    "zone = {zone:?} and region = {region:?}: set only one (zone for a zonal \
                     group, region for a regional one)"
                ));
            }
            (None, None) => {
                return Err(
                    "neither zone nor region is set: set zone for a zonal group or region for a \
                     regional one"
                        .to_string(),
                );
            }
        }
        for (key, value) in [
            ("endpoint", &self.endpoint),
            ("metadata_endpoint", &self.metadata_endpoint),
        ] {
            if let Some(value) = value {
                check_url(key, value)?;
            }
        }
        Ok(())
    }

    fn location(&self) -> Location {
        match (&self.zone, &self.region) {
            (Some(zone), _) => Location::Zone(zone.clone()),
            (None, region) => Location::Region(region.clone().unwrap_or_default()),
        }
    }
}

/// Project, zone, region and group names go into URL paths as they are.
fn check_name(key: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value:?}: not a GCP name (letters, digits, '-', '_', '.', ':')"
        ))
    }
}

fn check_url(key: &str, value: &str) -> Result<(), String> {
    match Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("{key} = {value:?}: not an http or https URL")),
        Err(e) => Err(format!("{key} = {value:?}: {e}")),
    }
}

/// What the autoscaler makes of a managed instance, from its `currentAction` (what the group is
/// doing to it) and `instanceStatus` (the VM's own state):
///
/// - `DELETING`, `ABANDONING`, `STOPPING`, `SUSPENDING` → Stopping: it is leaving the group or
///   going down.
/// - `CREATING`, `CREATING_WITHOUT_RETRIES`, `RECREATING`, `VERIFYING`, `STARTING`, `RESUMING`,
///   `RESTARTING` → Starting: it is on its way up, whatever the VM's state says now.
/// - `NONE`, `REFRESHING` (a live update of a running VM) or any action this code does not know:
///   by `instanceStatus`: `RUNNING` → Running; `STOPPING`, `STOPPED`, `SUSPENDING`, `SUSPENDED`,
///   `TERMINATED`, `DEPROVISIONING` → Stopping; anything else (`PROVISIONING`, `STAGING`,
///   `REPAIRING`, none yet) → Starting.
pub fn instance_state(current_action: &str, instance_status: Option<&str>) -> InstanceState {
    match current_action {
        "DELETING" | "ABANDONING" | "STOPPING" | "SUSPENDING" => InstanceState::Stopping,
        "CREATING"
        | "CREATING_WITHOUT_RETRIES"
        | "RECREATING"
        | "VERIFYING"
        | "STARTING"
        | "RESUMING"
        | "RESTARTING" => InstanceState::Starting,
        _ => match instance_status {
            Some("RUNNING") => InstanceState::Running,
            Some(
                "STOPPING" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "TERMINATED"
                | "DEPROVISIONING",
            ) => InstanceState::Stopping,
            _ => InstanceState::Starting,
        },
    }
}

enum TokenSource {
    /// From `MESH_GCP_ACCESS_TOKEN`: used as is.
    Fixed(String),
    /// From the metadata server; the cached token and when to fetch a new one.
    Metadata {
        url: String,
        cached: Option<(String, Instant)>,
    },
}

#[derive(Deserialize)]
struct MetadataToken {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedInstance {
    /// The instance's URL, `https://…/projects/P/zones/Z/instances/NAME`.
    instance: Option<String>,
    current_action: Option<String>,
    instance_status: Option<String>,
}

impl ManagedInstance {
    fn name(&self) -> Option<&str> {
        self.instance.as_deref()?.rsplit('/').next()
    }

    /// `zones/Z/instances/NAME`, the form `deleteInstances` takes.
    fn partial_url(&self) -> Option<&str> {
        let url = self.instance.as_deref()?;
        url.find("zones/").map(|at| &url[at..])
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedInstancesPage {
    #[serde(default)]
    managed_instances: Vec<ManagedInstance>,
    next_page_token: Option<String>,
}

/// A failed API call: the HTTP status, when there was a response, and Google's message.
struct ApiError {
    status: Option<StatusCode>,
    message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "HTTP {status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

pub struct Gcp {
    /// The mesh group, for errors and logs.
    group: String,
    http: Client,
    /// `…/projects/P/{zones/Z|regions/R}/instanceGroupManagers/G`.
    manager_url: String,
    location: Location,
    /// "managed instance group G in project P, zone Z", for messages.
    described: String,
    token: TokenSource,
}

impl Gcp {
    /// Checks the config, gets an access token and checks that the group exists.
    pub async fn open(config: &GcpConfig, group: &str) -> Result<Self, ProviderError> {
        config
            .validate()
            .map_err(|e| ProviderError::new(group, "check gcp provider config", e))?;
        let http = Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .map_err(|e| ProviderError::new(group, "build http client", e))?;
        let location = config.location();
        let (scope, described_location) = match &location {
            Location::Zone(zone) => (format!("zones/{zone}"), format!("zone {zone}")),
            Location::Region(region) => (format!("regions/{region}"), format!("region {region}")),
        };
        let endpoint = config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let manager_url = format!(
            "{}/projects/{}/{scope}/instanceGroupManagers/{}",
            endpoint.trim_end_matches('/'),
            config.project,
            config.group
        );
        // The one place this provider reads the environment: a token is a secret, so it does
        // not belong in the config file.
        let token = match std::env::var(ACCESS_TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => TokenSource::Fixed(token.trim().to_string()),
            _ => TokenSource::Metadata {
                url: format!(
                    "{}{TOKEN_PATH}",
                    config
                        .metadata_endpoint
                        .as_deref()
                        .unwrap_or(DEFAULT_METADATA_ENDPOINT)
                        .trim_end_matches('/')
                ),
                cached: None,
            },
        };
        let mut gcp = Gcp {
            group: group.to_string(),
            http,
            manager_url,
            location,
            described: format!(
                "managed instance group {} in project {}, {described_location}",
                config.group, config.project
            ),
            token,
        };
        let url = gcp.url("", &[])?;
        match gcp.send(Method::GET, url, None).await {
            Ok(_) => {}
            Err(e) if e.status == Some(StatusCode::NOT_FOUND) => {
                return Err(gcp.error(
                    "open",
                    format!(
                        "{} does not exist ({e}): create it with {TERRAFORM_MODULE}, and check \
                         that project, zone or region and group match the module's inputs and \
                         its instance_group_manager_name output",
                        gcp.described
                    ),
                ));
            }
            Err(e) => return Err(gcp.error("open", format!("get {}: {e}", gcp.described))),
        }
        info!(group, mig = %gcp.described, "opened gcp managed instance group");
        Ok(gcp)
    }

    /// Every managed instance of the group, in any state (see [`instance_state`]).
    pub async fn instances(&mut self) -> Result<Vec<Instance>, ProviderError> {
        let managed = self.list_managed().await?;
        Ok(managed
            .iter()
            .filter_map(|m| {
                let name = m.name()?;
                Some(Instance {
                    name: name.to_string(),
                    state: instance_state(
                        m.current_action.as_deref().unwrap_or("NONE"),
                        m.instance_status.as_deref(),
                    ),
                })
            })
            .collect())
    }

    /// Sets the group's target size; the group creates the instances it lacks.
    pub async fn grow(&mut self, size: u32) -> Result<(), ProviderError> {
        let what = format!("resize to {size}");
        info!(group = %self.group, mig = %self.described, size, "resizing gcp managed instance group");
        let url = self.url("/resize", &[("size", &size.to_string())])?;
        let operation = self
            .send(Method::POST, url, None)
            .await
            .map_err(|e| self.error(&what, e))?;
        check_operation(&operation).map_err(|e| self.error(&what, e))
    }

    /// Deletes exactly these instances; the group lowers its target size by as many. Names the
    /// group does not hold are skipped.
    pub async fn remove(&mut self, names: &[String]) -> Result<(), ProviderError> {
        if names.is_empty() {
            return Ok(());
        }
        let instances: Vec<String> = match &self.location {
            Location::Zone(zone) => names
                .iter()
                .map(|name| format!("zones/{zone}/instances/{name}"))
                .collect(),
            // A regional group's instances live in several zones: ask the group which.
            Location::Region(_) => {
                let managed = self.list_managed().await?;
                let urls: HashMap<&str, &str> = managed
                    .iter()
                    .filter_map(|m| Some((m.name()?, m.partial_url()?)))
                    .collect();
                names
                    .iter()
                    .filter_map(|name| match urls.get(name.as_str()) {
                        Some(url) => Some(url.to_string()),
                        None => {
                            warn!(group = %self.group, instance = %name, "instance to remove is not in the group; skipping it");
                            None
                        }
                    })
                    .collect()
            }
        };
        if instances.is_empty() {
            return Ok(());
        }
        info!(group = %self.group, mig = %self.described, instances = ?names, "deleting instances from gcp managed instance group");
        let url = self.url("/deleteInstances", &[])?;
        let body = json!({ "instances": instances, "skipInstancesOnValidationError": true });
        let operation = self
            .send(Method::POST, url, Some(&body))
            .await
            .map_err(|e| self.error("delete instances", e))?;
        check_operation(&operation).map_err(|e| self.error("delete instances", e))
    }

    async fn list_managed(&mut self) -> Result<Vec<ManagedInstance>, ProviderError> {
        let mut all = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let query: Vec<(&str, &str)> = match &page_token {
                Some(token) => vec![("pageToken", token.as_str())],
                None => Vec::new(),
            };
            let url = self.url("/listManagedInstances", &query)?;
            let page = self
                .send(Method::POST, url, None)
                .await
                .map_err(|e| self.error("list instances", e))?;
            let page: ManagedInstancesPage = serde_json::from_value(page)
                .map_err(|e| self.error("list instances", format!("unexpected response: {e}")))?;
            all.extend(page.managed_instances);
            match page.next_page_token {
                Some(token) if !token.is_empty() => page_token = Some(token),
                _ => return Ok(all),
            }
        }
    }

    fn url(&self, suffix: &str, query: &[(&str, &str)]) -> Result<Url, ProviderError> {
        let mut url = Url::parse(&format!("{}{suffix}", self.manager_url))
            .map_err(|e| self.error("build api url", e))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One API call: the JSON body of a 2xx answer, or the status and Google's message.
    async fn send(
        &mut self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let token = self.token().await?;
        debug!(group = %self.group, %method, %url, "gcp api call");
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ApiError {
            status: None,
            message: chain(&e),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ApiError {
            status: Some(status),
            message: format!("read response: {}", chain(&e)),
        })?;
        if !status.is_success() {
            let mut message = google_message(&text);
            if status == StatusCode::UNAUTHORIZED {
                match &mut self.token {
                    TokenSource::Fixed(_) => message.push_str(&format!(
                        " (the token in {ACCESS_TOKEN_ENV} may have expired)"
                    )),
                    // The next call fetches a new one.
                    TokenSource::Metadata { cached, .. } => *cached = None,
                }
            }
            if status == StatusCode::FORBIDDEN {
                message.push_str(
                    " (the service account needs roles/compute.instanceAdmin.v1 on the project)",
                );
            }
            return Err(ApiError {
                status: Some(status),
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError {
            status: Some(status),
            message: format!("response is not JSON: {e}"),
        })
    }

    async fn token(&mut self) -> Result<String, ApiError> {
        let (url, cached) = match &mut self.token {
            TokenSource::Fixed(token) => return Ok(token.clone()),
            TokenSource::Metadata { url, cached } => (url.clone(), cached),
        };
        if let Some((token, refresh_at)) = cached
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let fetched = fetch_metadata_token(&self.http, &url)
            .await
            .map_err(|e| ApiError {
                status: None,
                message: format!(
                    "no access token: {ACCESS_TOKEN_ENV} is not set and the GCE metadata server \
                     at {url} gave none ({e}); run the autoscaler on a GCE instance whose service \
                     account may manage the group (roles/compute.instanceAdmin.v1), or set \
                     {ACCESS_TOKEN_ENV} to a token, e.g. `gcloud auth print-access-token` (valid \
                     for an hour)"
                ),
            })?;
        let lifetime = Duration::from_secs(fetched.expires_in);
        let refresh_at = Instant::now() + lifetime - TOKEN_REFRESH_MARGIN.min(lifetime / 2);
        debug!(group = %self.group, expires_in = fetched.expires_in, "fetched gcp access token");
        *cached = Some((fetched.access_token.clone(), refresh_at));
        Ok(fetched.access_token)
    }

    fn error(&self, what: &str, message: impl std::fmt::Display) -> ProviderError {
        ProviderError::new(&self.group, what, message)
    }
}

async fn fetch_metadata_token(http: &Client, url: &str) -> Result<MetadataToken, String> {
    let response = http
        .get(url)
        .header("Metadata-Flavor", "Google")
        .timeout(METADATA_TIMEOUT)
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    response
        .json::<MetadataToken>()
        .await
        .map_err(|e| format!("unexpected token response: {}", chain(&e)))
}

/// An error with its causes, which reqwest's own message leaves out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Google's `error.message` from an error body, else the body itself.
fn google_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// An Operation that already failed (rare: most fail later, and show in `instances()`).
fn check_operation(operation: &Value) -> Result<(), String> {
    let errors = operation["error"]["errors"].as_array();
    match errors {
        Some(errors) if !errors.is_empty() => Err(errors
            .iter()
            .map(|e| e["message"].as_str().unwrap_or("unknown error"))
            .collect::<Vec<_>>()
            .join("; ")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(zone: Option<&str>, region: Option<&str>) -> GcpConfig {
        GcpConfig {
            project: "proj".into(),
            zone: zone.map(str::to_string),
            region: region.map(str::to_string),
            group: "mesh-pc1".into(),
            endpoint: None,
            metadata_endpoint: None,
        }
    }

    #[test]
    fn maps_actions_and_statuses() {
        use InstanceState::*;
        let cases = [
            ("NONE", Some("RUNNING"), Running),
            ("REFRESHING", Some("RUNNING"), Running),
            ("CREATING", None, Starting),
            ("CREATING_WITHOUT_RETRIES", None, Starting),
            ("RECREATING", Some("STOPPING"), Starting),
            ("VERIFYING", Some("RUNNING"), Starting),
            ("STARTING", Some("STOPPED"), Starting),
            ("RESUMING", Some("SUSPENDED"), Starting),
            ("RESTARTING", Some("RUNNING"), Starting),
            ("NONE", Some("PROVISIONING"), Starting),
            ("NONE", Some("STAGING"), Starting),
            ("NONE", None, Starting),
            ("DELETING", Some("RUNNING"), Stopping),
            ("ABANDONING", Some("RUNNING"), Stopping),
            ("STOPPING", Some("RUNNING"), Stopping),
            ("SUSPENDING", Some("RUNNING"), Stopping),
            ("NONE", Some("TERMINATED"), Stopping),
            ("NONE", Some("STOPPED"), Stopping),
            ("NONE", Some("SUSPENDED"), Stopping),
            ("SOMETHING_NEW", Some("RUNNING"), Running),
        ];
        for (action, status, want) in cases {
            assert_eq!(instance_state(action, status), want, "{action} {status:?}");
        }
    }

    #[test]
    fn validates_location_names_and_urls() {
        assert!(config(Some("us-central1-a"), None).validate().is_ok());
        assert!(config(None, Some("us-central1")).validate().is_ok());

        let both = config(Some("us-central1-a"), Some("us-central1")).validate();
        assert!(both.unwrap_err().contains("set only one"));
        let neither = config(None, None).validate();
        assert!(neither.unwrap_err().contains("neither zone nor region"));

        let mut bad = config(Some("us central1-a"), None);
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("zone = \"us central1-a\"")
        );
        bad = config(Some("us-central1-a"), None);
        bad.group = "a/b".into();
        assert!(bad.validate().unwrap_err().contains("group = \"a/b\""));
        bad.group = "mesh-pc1".into();
        bad.endpoint = Some("ftp://x".into());
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("endpoint = \"ftp://x\"")
        );
    }

    #[test]
    fn parses_instances_and_errors() {
        let m = ManagedInstance {
            instance: Some(
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-b/instances/mesh-pc1-ab12"
                    .into(),
            ),
            current_action: None,
            instance_status: None,
        };
        assert_eq!(m.name(), Some("mesh-pc1-ab12"));
        assert_eq!(
            m.partial_url(),
            Some("zones/us-central1-b/instances/mesh-pc1-ab12")
        );
        assert_eq!(
            google_message(r#"{"error":{"code":404,"message":"not found"}}"#),
            "not found"
        );
        assert_eq!(google_message("plain"), "plain");
        assert!(check_operation(&json!({"status": "RUNNING"})).is_ok());
        let failed = json!({"error": {"errors": [{"message": "quota"}]}});
        assert_eq!(check_operation(&failed).unwrap_err(), "quota");
    }
}
