//! The connector release feed (VER-HISTORY): versions, what changed, and the
//! .NET Framework each needs (VER-NET471: from 1.5.3437.0, 4.7.1).

use connector::api::Release;
use connector::host::{product_version, NET471_RELEASE};

/// .NET Framework 4.6.2's release number.
pub const NET462_RELEASE: u32 = 394_802;

/// The published history, oldest first.
pub fn history() -> Vec<Release> {
    let r = |version: &str, notes: &str, min: u32| Release {
        version: version.into(),
        notes: notes.into(),
        min_dotnet_release: min,
        sha256: String::new(),
        signature: String::new(),
    };
    vec![
        r("1.5.1975.0", "Performance and reliability improvements.", NET462_RELEASE),
        r("1.5.2846.0", "Bug fixes; connector groups by region.", NET462_RELEASE),
        r("1.5.3417.0", "Support for Microsoft Entra Private Access.", NET462_RELEASE),
        r("1.5.3437.0", "Requires .NET Framework 4.7.1 or later.", NET471_RELEASE),
        r("1.5.4522.0", "Security fixes; TLS improvements.", NET471_RELEASE),
    ]
}

/// The newest release in `feed` newer than `current`.
pub fn newer_than<'a>(feed: &'a [Release], current: &str) -> Option<&'a Release> {
    let current = product_version(current)?;
    feed.iter()
        .filter(|r| product_version(&r.version).is_some_and(|v| v > current))
        .max_by_key(|r| product_version(&r.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_release_is_what_this_connector_build_is() {
        let newest = history().into_iter().last().map(|r| r.version);
        assert_eq!(newest.as_deref(), Some(connector::agent::DEFAULT_VERSION));
    }

    #[test]
    fn the_newest_newer_release_is_offered() {
        let feed = history();
        assert_eq!(newer_than(&feed, "1.5.3417.0").map(|r| r.version.as_str()), Some("1.5.4522.0"));
        assert_eq!(newer_than(&feed, "1.5.4522.0"), None);
        assert_eq!(newer_than(&feed, "garbage"), None);
    }
}
