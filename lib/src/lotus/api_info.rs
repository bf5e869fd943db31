//! Lotus's API info strings, `TOKEN:/ip4/127.0.0.1/tcp/2345/http` (what `lotus-miner auth
//! api-info` prints), parsed as lotus's `cli/util/apiinfo.go` does, into the HTTP endpoint of its
//! JSON-RPC API and the bearer token.

use std::fmt;
use std::str::FromStr;

use url::Url;

/// Where one lotus API listens, and the token that opens it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiInfo {
    /// The server's base URL (`http://127.0.0.1:2345`), without the `/rpc/vN` path.
    pub base: Url,
    pub token: Option<String>,
}

/// Why an API info string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "API info '{shown}': {reason}; expected lotus's form TOKEN:/ip4/HOST/tcp/PORT/http (what \
     `lotus-miner auth api-info --perm admin` or `lotus auth api-info --perm read` prints) or \
     TOKEN:http://HOST:PORT"
)]
pub struct ApiInfoError {
    shown: String,
    reason: String,
}

impl ApiInfo {
    /// The JSON-RPC endpoint of API version `version` (`v0` for the miner, `v1` for the node).
    pub fn endpoint(&self, version: &str) -> Url {
        let mut url = self.base.clone();
        let path = format!("{}/rpc/{version}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

/// The string with the token hidden, for errors and logs.
fn shown(text: &str) -> String {
    match split_token(text) {
        (Some(_), addr) => format!("***:{addr}"),
        (None, addr) => addr.to_string(),
    }
}

/// `TOKEN:ADDR` → (token, addr), as lotus splits it: a string not starting with `/` has a token
/// before its first `:` unless that colon starts `://`.
fn split_token(text: &str) -> (Option<&str>, &str) {
    if !text.starts_with('/')
        && let Some(i) = text.find(':')
        && i > 0
        && !text[i + 1..].starts_with("//")
    {
        return (Some(&text[..i]), &text[i + 1..]);
    }
    (None, text)
}

/// A multiaddr of the forms lotus prints: `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT[/http|/https|/ws|
/// /wss|/tls…]`, as an HTTP(S) base URL.
fn multiaddr(addr: &str) -> Result<Url, String> {
    let parts: Vec<&str> = addr.trim_start_matches('/').split('/').collect();
    let [proto, host, tcp, port, rest @ ..] = parts.as_slice() else {
        return Err("a multiaddr needs a host and a tcp port".into());
    };
    let host = match *proto {
        "ip4" => host.parse::<std::net::Ipv4Addr>().map(|ip| ip.to_string()),
        "ip6" => host
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| format!("[{ip}]")),
        "dns" | "dns4" | "dns6" if !host.is_empty() => Ok(host.to_string()),
        other => return Err(format!("'/{other}' is not an address lotus listens on")),
    }
    .map_err(|_| format!("'{host}' is not an {proto} address"))?;
    if *tcp != "tcp" {
        return Err(format!("'/{tcp}' where '/tcp' was expected"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a TCP port"))?;
    let mut secure = false;
    for p in rest {
        match *p {
            "http" | "ws" | "" => {}
            "https" | "wss" | "tls" => secure = true,
            other => {
                return Err(format!(
                    "'/{other}' is not a protocol lotus serves its API on"
                ));
            }
        }
    }
    let scheme = if secure { "https" } else { "http" };
    Url::parse(&format!("{scheme}://{host}:{port}")).map_err(|e| e.to_string())
}

impl FromStr for ApiInfo {
    type Err = ApiInfoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ApiInfoError {
            shown: shown(text),
            reason,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(err("it is empty".into()));
        }
        if text.starts_with(':') {
            return Err(err("the token before ':' is empty".into()));
        }
        let (token, addr) = split_token(text);
        let base = if addr.starts_with('/') {
            multiaddr(addr).map_err(err)?
        } else {
            let url = Url::parse(addr).map_err(|e| err(e.to_string()))?;
            let scheme = match url.scheme() {
                "http" | "ws" => "http",
                "https" | "wss" => "https",
                other => return Err(err(format!("'{other}' is not http(s) or ws(s)"))),
            };
            if url.host_str().is_none() {
                return Err(err("the URL has no host".into()));
            }
            let mut base = url.clone();
            base.set_scheme(scheme)
                .map_err(|()| err("cannot use that scheme".into()))?;
            // `http://host:port/rpc/v0` names the endpoint itself; keep only the base.
            let path = base.path().to_string();
            let trimmed = path
                .trim_end_matches('/')
                .rsplit_once("/rpc")
                .map_or(path.as_str(), |(before, _)| before)
                .to_string();
            base.set_path(&trimmed);
            base
        };
        Ok(ApiInfo {
            base,
            token: token.map(str::to_string),
        })
    }
}

impl fmt::Debug for ApiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiInfo")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for ApiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self.base.as_str().trim_end_matches('/');
        match self.token {
            Some(_) => write!(f, "***:{base}"),
            None => f.write_str(base),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lotus_forms_parse_to_an_endpoint_and_a_token() {
        for (text, endpoint, token) in [
            (
                "eyJhbGc.eyJBbGxvdyI6.sig:/ip4/127.0.0.1/tcp/2345/http",
                "http://127.0.0.1:2345/rpc/v0",
                Some("eyJhbGc.eyJBbGxvdyI6.sig"),
            ),
            (
                "tok:/ip6/::1/tcp/1234/http",
                "http://[::1]:1234/rpc/v0",
                Some("tok"),
            ),
            (
                "tok:/dns/miner.lan/tcp/443/https",
                "https://miner.lan/rpc/v0",
                Some("tok"),
            ),
            (
                "tok:/dns4/miner.lan/tcp/2345/wss",
                "https://miner.lan:2345/rpc/v0",
                Some("tok"),
            ),
            (
                "/ip4/10.0.0.2/tcp/2345",
                "http://10.0.0.2:2345/rpc/v0",
                None,
            ),
            (
                "tok:http://10.0.0.2:2345",
                "http://10.0.0.2:2345/rpc/v0",
                Some("tok"),
            ),
            (
                "tok:ws://10.0.0.2:2345/rpc/v0",
                "http://10.0.0.2:2345/rpc/v0",
                Some("tok"),
            ),
            ("http://10.0.0.2:2345/", "http://10.0.0.2:2345/rpc/v0", None),
        ] {
            let info: ApiInfo = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(info.endpoint("v0").as_str(), endpoint, "{text}");
            assert_eq!(info.token.as_deref(), token, "{text}");
        }
    }

    #[test]
    fn bad_strings_say_why_and_never_show_the_token() {
        for (text, reason) in [
            ("", "it is empty"),
            (
                "secret:/ip4/1.2.3.4/tcp/notaport/http",
                "'notaport' is not a TCP port",
            ),
            (
                "secret:/ip4/1.2.3/tcp/1/http",
                "'1.2.3' is not an ip4 address",
            ),
            ("secret:/unix/tmp/sock", "a multiaddr needs a host"),
            (
                "secret:/ip4/1.2.3.4/udp/1/http",
                "'/udp' where '/tcp' was expected",
            ),
            (
                "secret:/ip4/1.2.3.4/tcp/1/quic",
                "'/quic' is not a protocol",
            ),
            ("secret:ftp://host:1", "'ftp' is not http(s) or ws(s)"),
            (":/ip4/1.2.3.4/tcp/1/http", "the token before ':' is empty"),
        ] {
            let e = text.parse::<ApiInfo>().unwrap_err().to_string();
            assert!(e.contains(reason), "{text}: {e}");
            assert!(!e.contains("secret"), "{text}: {e}");
            assert!(e.contains("TOKEN:/ip4/HOST/tcp/PORT/http"), "{e}");
        }
        let info: ApiInfo = "secret:/ip4/1.2.3.4/tcp/1/http".parse().unwrap();
        assert!(!format!("{info} {info:?}").contains("secret"));
    }
}
