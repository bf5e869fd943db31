//! Server and store URLs as logs and errors may show them, without the secrets people write into
//! URLs: a password (`user:secret@`), a token (`secret@`) or a signed query (`?sig=…`).

/// One URL, or several separated by commas (a NATS cluster): a password becomes `user:***@`, a
/// user part without one (a NATS token) becomes `***@`, and a query is dropped.
pub fn urls(urls: &str) -> String {
    urls.split(',').map(url).collect::<Vec<_>>().join(",")
}

fn url(text: &str) -> String {
    let lead = &text[..text.len() - text.trim_start().len()];
    // A URL the parser takes with its user part where the `@` says it is.
    if let Ok(mut url) = url::Url::parse(text.trim())
        && url.has_host()
        && (url.username().is_empty() != text.contains('@'))
    {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        } else if !url.username().is_empty() {
            let _ = url.set_username("***");
        }
        url.set_query(None);
        return format!("{lead}{url}");
    }
    // Anything else (`host:4222`, a password with a raw `/`, an `@` in a path): everything before
    // the last `@` is taken for the user part, so a secret is never shown.
    let (scheme, rest) = text.split_once("://").map_or(("", text), |(s, r)| (s, r));
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let shown = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => rest.to_string(),
    };
    if scheme.is_empty() {
        shown
    } else {
        format!("{scheme}://{shown}")
    }
}

#[cfg(test)]
mod tests {
    use super::urls;

    #[test]
    fn passwords_and_tokens_in_nats_urls_are_hidden() {
        assert_eq!(
            urls("nats://worker:s3cret@h1:4222, tls://tok3n@h2:4222,h3:4222"),
            "nats://worker:***@h1:4222, tls://***@h2:4222,h3:4222"
        );
        assert_eq!(urls("nats://h:4222"), "nats://h:4222");
        assert_eq!(urls("u:pa/ss@h:4222"), "u:***@h:4222");
        assert_eq!(urls("nats://u:pa/ss@h:4222"), "nats://u:***@h:4222");
    }

    #[test]
    fn store_urls_lose_passwords_and_signed_queries() {
        assert_eq!(
            urls("s3://AKIA:hunter2@bucket/sectors?x-amz-signature=tok3n"),
            "s3://AKIA:***@bucket/sectors"
        );
        assert_eq!(
            urls("az://container/prefix?sv=2020&sig=tok3n"),
            "az://container/prefix"
        );
        assert_eq!(urls("file:///var/tmp/store"), "file:///var/tmp/store");
        // An `@` the parser does not take for the user part's end hides all before it.
        assert_eq!(urls("nats://u:12/ss@h:4222"), "nats://u:***@h:4222");
        assert_eq!(urls("s3://bucket/a@b"), "s3://***@b");
    }
}
