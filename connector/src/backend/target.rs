//! Where a backend lives: the absolute request target the relay sends
//! (`http://app.corp:8080/path?query`), read into host, port and the
//! path-and-query the backend is asked for.
//!
//! Every request parses one, so the common shape is read by hand and only
//! the rest goes to [`http::Uri`]. The hand parser takes a target only when
//! `http::Uri` would read it the same way (a property test holds them
//! equal); it gave back ~1,500 of the ~45,000 instructions a request cost
//! the connector (callgrind, BENCHMARKS.md round eight).

use std::borrow::Cow;

/// A backend's address and what to ask it for: borrowed from the target
/// when it has the common shape (no copies a request), made otherwise.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target<'a> {
    pub host: Cow<'a, str>,
    pub port: u16,
    pub path_and_query: Cow<'a, str>,
}

/// Parses an absolute `http://` request target; the error names the target
/// and what is wrong with it.
pub(super) fn parse_target(raw: &str) -> Result<Target<'_>, String> {
    if let Some(target) = simple(raw) {
        return Ok(target);
    }
    let uri: http::Uri = raw.parse().map_err(|e| format!("request target {raw:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("request target {raw:?}: scheme {other} not supported")),
        None => return Err(format!("request target {raw:?} is not an absolute http:// URL")),
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("request target {raw:?} has no host"))?;
    let port = port_of(raw, &uri, host)?;
    // `http://app.corp?x` asks for `/?x`: a request line needs the slash.
    let asked = uri.path_and_query().map_or("", |p| p.as_str());
    let path_and_query = if asked.starts_with('/') { asked.to_string() } else { format!("/{asked}") };
    Ok(Target { host: host.to_string().into(), port, path_and_query: path_and_query.into() })
}

/// The port a target names, 80 if none. `http::Uri` does not judge the
/// text after the host's colon: `:abc`, `:+80` and `:99999` parse, the
/// last with no port at all. None of them is port 80.
fn port_of(raw: &str, uri: &http::Uri, host: &str) -> Result<u16, String> {
    let host_port = uri.authority().and_then(|a| a.as_str().rsplit('@').next());
    match host_port.and_then(|hp| hp.strip_prefix(host)).and_then(|rest| rest.strip_prefix(':')) {
        None | Some("") => Ok(80),
        Some(p) => p
            .parse()
            .ok()
            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("request target {raw:?}: port {p:?} is not a number from 0 to 65535")),
    }
}

/// `http://name[:port]/path?query` with a host name of letters, digits,
/// dots and dashes, a port of up to five digits (65535 at most), and nothing in the path
/// and query but RFC 3986's unreserved and sub-delimiter characters, `:`,
/// `@`, `/`, `?` and `%`. `None` for anything else: user info, an IP
/// literal in brackets, a fragment, an empty path, another scheme or a
/// byte that `http::Uri` judges.
fn simple(raw: &str) -> Option<Target<'_>> {
    // `http::Uri`'s own limit.
    if raw.len() > usize::from(u16::MAX - 1) {
        return None;
    }
    let rest = raw.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let (host, port) = match authority.split_once(':') {
        Some((host, digits)) if (1..=5).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) => {
            (host, digits.parse().ok()?)
        }
        Some(_) => return None,
        None => (authority, 80),
    };
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let path_ok = path.bytes().all(|b| PATH_BYTES[usize::from(b)]);
    (host_ok && path_ok).then_some(Target { host: host.into(), port, path_and_query: path.into() })
}

/// The bytes [`simple`] takes in a path and query, looked up (a test of
/// each byte against the list of symbols was most of this parse's cost).
const PATH_BYTES: [bool; 256] = super::h1::alphanumerics_and(b"-._~!$&'()*+,;=:@/?%");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `http::Uri` alone makes of a target.
    fn by_uri(raw: &str) -> Option<Target<'static>> {
        let uri: http::Uri = raw.parse().ok()?;
        (uri.scheme_str() == Some("http")).then_some(())?;
        Some(Target {
            host: uri.host()?.to_string().into(),
            port: uri.port_u16().unwrap_or(80),
            path_and_query: uri.path_and_query().map_or_else(|| "/".into(), |p| p.as_str().to_string().into()),
        })
    }

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        let t = parse_target("http://app.corp:8080/a?b=1").unwrap();
        assert_eq!((&*t.host, t.port, &*t.path_and_query), ("app.corp", 8080, "/a?b=1"));
        assert_eq!(parse_target("http://app.corp").unwrap().port, 80);
        assert!(parse_target("/relative").unwrap_err().contains("absolute"));
        assert!(parse_target("ftp://x/").unwrap_err().contains("ftp"));
        for bad_port in [
            "http://app.corp:99999/",
            "http://app.corp:abc/",
            "http://app.corp:+80/",
            "http://[::1]:99999/x",
            "http://u:p@app.corp:99999/",
        ] {
            assert!(parse_target(bad_port).unwrap_err().contains("port"), "{bad_port}");
        }
        assert!(parse_target("http://:80/").unwrap_err().contains("no host"));
        assert_eq!(parse_target("http://app.corp?x=1").unwrap().path_and_query, "/?x=1");
        assert_eq!(parse_target("http://[::1]:/x").unwrap().port, 80);
    }

    #[test]
    fn a_target_past_http_uris_limit_is_refused_by_it() {
        let long = format!("http://app.corp/{}", "a".repeat(usize::from(u16::MAX)));
        assert_eq!(simple(&long), None);
        assert!(parse_target(&long).unwrap_err().contains("too long"));
    }

    #[test]
    fn the_hand_parser_leaves_the_unusual_to_http_uri() {
        for raw in [
            "http://user@app.corp/",
            "http://[::1]:8080/x",
            "http://app.corp/a#frag",
            "http://app.corp",
            "http://app.corp:/x",
            "http://app.corp:65536/x",
            "HTTP://app.corp/x",
            "http://app.corp/a b",
            "http://app.corp/\u{e9}",
        ] {
            assert_eq!(simple(raw), None, "{raw}");
        }
        assert_eq!(parse_target("http://[::1]:8080/x").unwrap().port, 8080);
        assert_eq!(parse_target("http://app.corp/a#frag").unwrap().path_and_query, "/a");
        assert_eq!(parse_target("http://u:p@app.corp/").unwrap().port, 80);
        assert_eq!(parse_target("http://[::1]/").unwrap().port, 80);
    }

    fn target_like() -> impl Strategy<Value = String> {
        // Half in the hand parser's shape, half anything near it.
        let host = prop_oneof!["[a-zA-Z0-9.-]{1,12}", "[a-zA-Z0-9.@%\\[\\]:_-]{0,12}"];
        let port = prop_oneof![Just(String::new()), "[0-9]{0,6}".prop_map(|p| format!(":{p}"))];
        let path = prop_oneof![
            "/[a-zA-Z0-9%?&=:@!$'()*+,;~._/-]{0,24}",
            "[/a-zA-Z0-9%?#&=:@!$'()*+,;~._ \"<>\\\\^`{|}\u{e9}-]{0,24}"
        ];
        let scheme = prop_oneof![4 => Just("http://"), 1 => Just("HTTP://"), 1 => Just("https://"), 1 => Just("")];
        (scheme, host, port, path).prop_map(|(s, h, p, q)| format!("{s}{h}{p}{q}"))
    }

    proptest! {
        /// Whatever the hand parser takes, `http::Uri` reads the same way.
        #[test]
        fn the_hand_parser_agrees_with_http_uri(raw in target_like()) {
            if let Some(fast) = simple(&raw) {
                prop_assert_eq!(Some(fast), by_uri(&raw), "{}", raw);
            }
        }
    }
}
