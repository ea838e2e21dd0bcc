//! Service and collector URLs: the check that a flag or a variable holds one, and its form
//! without credentials for messages. A leaf, so that `config` and `http` both use it without
//! depending on each other.

use http::Uri;

/// Parses a service base URL given on a command line (`--hermes-url`, `--sophia-url`): only
/// absolute http(s) URLs, so a typo fails at startup with a clear message, not on the first
/// request. The trailing slash is dropped.
pub fn parse_service_url(value: &str) -> Result<String, String> {
    let uri: Uri = value
        .parse()
        .map_err(|error| format!("not a URL: {error}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => {
            Ok(value.trim_end_matches('/').to_owned())
        }
        _ => Err("expected an absolute http:// or https:// URL".into()),
    }
}

/// A generic OTLP/HTTP endpoint with a signal's path (`v1/traces`) appended to its own path, as
/// the spec says: `http://c:4318/otlp/?tenant=a` becomes `http://c:4318/otlp/v1/traces?tenant=a`.
pub(crate) fn with_signal_path(endpoint: &str, path: &str) -> String {
    let (base, query) = match endpoint.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (endpoint, None),
    };
    let mut url = format!("{}/{path}", base.trim_end_matches('/'));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// `value` without any `user:password@`, for error messages and the log; with or without a
/// scheme (`user:s3cret@collector:4317` is a mistake whose message must not show the secret).
pub(crate) fn without_userinfo(value: &str) -> String {
    let start = value.find("://").map_or(0, |scheme_end| scheme_end + 3);
    match value.rfind('@') {
        Some(at) if at >= start => format!("{}***@{}", &value[..start], &value[at + 1..]),
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_url_is_an_absolute_http_url() {
        assert_eq!(
            parse_service_url("http://127.0.0.1:17000/").as_deref(),
            Ok("http://127.0.0.1:17000")
        );
        assert!(parse_service_url("https://hermes.logos.svc").is_ok());
        for bad in ["127.0.0.1:17000", "ftp://host", "/relative", "http://", ""] {
            assert!(parse_service_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_signal_path_goes_after_the_endpoint_path_and_before_its_query() {
        let cases = [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/otlp", "http://c:4318/otlp/v1/traces"),
            (
                "http://c:4318/otlp/?tenant=a",
                "http://c:4318/otlp/v1/traces?tenant=a",
            ),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(with_signal_path(endpoint, "v1/traces"), expected);
        }
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(
            without_userinfo("http://a:b@host:1/x"),
            "http://***@host:1/x"
        );
        assert_eq!(without_userinfo("http://host:1"), "http://host:1");
        assert_eq!(
            without_userinfo("user:s3cret@collector:4317"),
            "***@collector:4317"
        );
    }
}
