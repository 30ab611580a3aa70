//! Where a backend lives: the absolute request target the relay sends
//! (`http://app.corp:8080/path?query`), read into host, port and the
//! path-and-query the backend is asked for.
//!
//! Every request parses one, so the common shape is read by hand and only
//! the rest goes to [`http::Uri`]. The hand parser takes a target only when
//! `http::Uri` would read it the same way (a property test holds them
//! equal); it gave back ~1,500 of the ~45,000 instructions a request cost
//! the connector (callgrind, BENCHMARKS.md round eight).

/// A backend's address and what to ask it for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub host: String,
    pub port: u16,
    pub path_and_query: String,
}

/// Parses an absolute `http://` request target; the error names the target
/// and what is wrong with it.
pub(super) fn parse_target(raw: &str) -> Result<Target, String> {
    if let Some(target) = simple(raw) {
        return Ok(target);
    }
    let uri: http::Uri = raw.parse().map_err(|e| format!("request target {raw:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("request target {raw:?}: scheme {other} not supported")),
        None => return Err(format!("request target {raw:?} is not an absolute http:// URL")),
    }
    let host = uri.host().ok_or_else(|| format!("request target {raw:?} has no host"))?;
    // `http::Uri` takes any digits after the colon and has no port for
    // those beyond a u16; that is not port 80.
    let host_port = uri.authority().and_then(|a| a.as_str().rsplit('@').next());
    let named = host_port.and_then(|h| h.rsplit_once(':')).map(|(_, p)| p);
    let port = match (uri.port_u16(), named) {
        (Some(port), _) => port,
        (None, Some(p)) if !p.is_empty() && !p.contains(']') => {
            return Err(format!("request target {raw:?}: port {p} is not a number from 0 to 65535"))
        }
        (None, _) => 80,
    };
    Ok(Target {
        host: host.to_string(),
        port,
        path_and_query: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
    })
}

/// `http://name[:port]/path?query` with a host name of letters, digits,
/// dots and dashes, a port of up to five digits, and nothing in the path
/// and query but RFC 3986's unreserved and sub-delimiter characters, `:`,
/// `@`, `/`, `?` and `%`. `None` for anything else: user info, an IP
/// literal in brackets, a fragment, an empty path, another scheme or a
/// byte that `http::Uri` judges.
fn simple(raw: &str) -> Option<Target> {
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
    let path_ok = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b));
    (host_ok && path_ok).then(|| Target { host: host.to_string(), port, path_and_query: path.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `http::Uri` alone makes of a target.
    fn by_uri(raw: &str) -> Option<Target> {
        let uri: http::Uri = raw.parse().ok()?;
        (uri.scheme_str() == Some("http")).then_some(())?;
        Some(Target {
            host: uri.host()?.to_string(),
            port: uri.port_u16().unwrap_or(80),
            path_and_query: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        })
    }

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        let t = parse_target("http://app.corp:8080/a?b=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path_and_query.as_str()), ("app.corp", 8080, "/a?b=1"));
        assert_eq!(parse_target("http://app.corp").unwrap().port, 80);
        assert!(parse_target("/relative").unwrap_err().contains("absolute"));
        assert!(parse_target("ftp://x/").unwrap_err().contains("ftp"));
        assert!(parse_target("http://app.corp:99999/").unwrap_err().contains("port"));
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
        let host = prop_oneof!["[a-zA-Z0-9.-]{1,12}", "[a-zA-Z0-9.@\\[\\]:_-]{0,12}"];
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
