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

/// `value` without any `user:password@`, for error messages.
pub(crate) fn without_userinfo(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***@{}", &value[..scheme_end + 3], &value[at + 1..])
        }
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
    fn credentials_are_hidden() {
        assert_eq!(
            without_userinfo("http://a:b@host:1/x"),
            "http://***@host:1/x"
        );
        assert_eq!(without_userinfo("http://host:1"), "http://host:1");
    }
}
