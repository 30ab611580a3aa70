//! The spec's outbound allow-list (public cloud, and the US Government
//! cloud's counterpart), as data: which host names and ports the connector
//! needs, grouped the way the spec groups them. The
//! connector uses it to name, in a diagnostic, the allow-list entry a
//! failed destination falls under; the simulator uses it to build a
//! firewall from "the spec's table" or "the table minus one group".

use serde::{Deserialize, Serialize};

/// Which cloud a tenant lives in (REG-GOV). The government cloud has its
/// own host names throughout, and a connector only reaches it when
/// installed with `ENVIRONMENTNAME="AzureUSGovernment"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Environment {
    #[default]
    #[serde(rename = "public")]
    Public,
    #[serde(rename = "us-gov")]
    UsGov,
}

impl Environment {
    /// The installer's `ENVIRONMENTNAME` value that selects this cloud.
    pub const GOV_ENVIRONMENT_NAME: &'static str = "AzureUSGovernment";

    /// The cloud an `ENVIRONMENTNAME` install parameter selects; absent
    /// means the public cloud, as the installer does.
    pub fn from_environment_name(name: Option<&str>) -> Result<Environment, String> {
        match name.map(str::trim) {
            None | Some("") | Some("AzureCloud") => Ok(Environment::Public),
            Some(n) if n.eq_ignore_ascii_case(Self::GOV_ENVIRONMENT_NAME) => Ok(Environment::UsGov),
            Some(other) => Err(format!(
                "unknown ENVIRONMENTNAME \"{other}\": use \"{}\" for the US Government cloud, or leave it out for the public cloud",
                Self::GOV_ENVIRONMENT_NAME
            )),
        }
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Environment::Public => "public",
            Environment::UsGov => "us-gov",
        })
    }
}

/// A group of the spec's allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Group {
    /// `*.msappproxy.net`, `*.servicebus.windows.net` on 443 (NET-SVC).
    #[serde(rename = "service-443")]
    Service443,
    /// The CRL/OCSP hosts on 80 (NET-CRL).
    #[serde(rename = "crl-80")]
    Crl80,
    /// Sign-in and registration helpers on 443 (NET-REG).
    #[serde(rename = "registration-443")]
    Registration443,
    /// Certificate trust list downloads on 80 during registration (NET-REG).
    #[serde(rename = "registration-80")]
    Registration80,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Service443, Group::Crl80, Group::Registration443, Group::Registration80];

    /// The requirement the group comes from.
    pub fn requirement(self) -> &'static str {
        match self {
            Group::Service443 => "NET-SVC",
            Group::Crl80 => "NET-CRL",
            Group::Registration443 | Group::Registration80 => "NET-REG",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Group::Service443 | Group::Registration443 => 443,
            Group::Crl80 | Group::Registration80 => 80,
        }
    }

    /// The public cloud's entries (exact names or `*.` suffixes).
    pub fn entries(self) -> &'static [&'static str] {
        self.entries_in(Environment::Public)
    }

    /// The entries of `cloud`'s table.
    pub fn entries_in(self, cloud: Environment) -> &'static [&'static str] {
        if cloud == Environment::UsGov {
            return self.gov_entries();
        }
        match self {
            Group::Service443 => &["*.msappproxy.net", "*.servicebus.windows.net"],
            Group::Crl80 => &[
                "crl3.digicert.com",
                "crl4.digicert.com",
                "ocsp.digicert.com",
                "crl.microsoft.com",
                "oneocsp.microsoft.com",
                "ocsp.msocsp.com",
            ],
            Group::Registration443 => &[
                "login.windows.net",
                "secure.aadcdn.microsoftonline-p.com",
                "*.microsoftonline.com",
                "*.microsoftonline-p.com",
                "*.msauth.net",
                "*.msauthimages.net",
                "*.msecnd.net",
                "*.msftauth.net",
                "*.msftauthimages.net",
                "*.phonefactor.net",
                "enterpriseregistration.windows.net",
                "management.azure.com",
                "policykeyservice.dc.ad.msft.net",
                "ctldl.windowsupdate.com",
                "www.microsoft.com",
            ],
            Group::Registration80 => &["ctldl.windowsupdate.com", "www.microsoft.com"],
        }
    }

    /// The US Government cloud's table (the hybrid identity government
    /// cloud reference).
    fn gov_entries(self) -> &'static [&'static str] {
        match self {
            Group::Service443 => &["*.msappproxy.us", "*.servicebus.usgovcloudapi.net"],
            Group::Crl80 => &["mscrl.microsoft.us", "crl.microsoft.us", "ocsp.msocsp.us", "www.microsoft.us"],
            Group::Registration443 => &[
                "login.windows.us",
                "secure.aadcdn.microsoftonline-p.com",
                "*.microsoftonline.us",
                "*.microsoftonline-p.us",
                "*.msauth.net",
                "*.msauthimages.net",
                "*.msecnd.net",
                "*.msftauth.net",
                "*.msftauthimages.net",
                "*.phonefactor.net",
                "enterpriseregistration.windows.net",
                "management.azure.com",
                "policykeyservice.dc.ad.msft.net",
            ],
            Group::Registration80 => &["ctldl.windowsupdate.us"],
        }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Group::Service443 => "service-443",
            Group::Crl80 => "crl-80",
            Group::Registration443 => "registration-443",
            Group::Registration80 => "registration-80",
        };
        f.write_str(name)
    }
}

/// Whether `host` matches an allow-list `entry` (`*.suffix` or an exact name).
pub fn entry_matches(entry: &str, host: &str) -> bool {
    // `host` read as lower case, byte by byte: no lower-cased copy of it
    // and no copy of the suffix with its dot (the two copies were most of
    // a match's cost, and every bootstrap matches its hosts against the
    // table).
    let lower_is = |host: &[u8], entry: &[u8]| {
        host.len() == entry.len() && host.iter().zip(entry).all(|(h, e)| h.to_ascii_lowercase() == *e)
    };
    let host = host.as_bytes();
    match entry.strip_prefix("*.") {
        Some(suffix) => {
            let Some(dot) = host.len().checked_sub(suffix.len() + 1) else { return false };
            host[dot] == b'.' && lower_is(&host[dot + 1..], suffix.as_bytes())
        }
        None => lower_is(host, entry.as_bytes()),
    }
}

/// The allow-list entry (and its group) covering `host:port`, if any, in
/// either cloud's table (their names do not overlap in meaning: a name
/// shared by both belongs to the same group in each).
pub fn entry_for(host: &str, port: u16) -> Option<(Group, &'static str)> {
    entry_in(Environment::Public, host, port).or_else(|| entry_in(Environment::UsGov, host, port))
}

/// The entry (and its group) of `cloud`'s table covering `host:port`.
fn entry_in(cloud: Environment, host: &str, port: u16) -> Option<(Group, &'static str)> {
    Group::ALL
        .iter()
        .filter(|g| g.port() == port)
        .find_map(|g| g.entries_in(cloud).iter().find(|e| entry_matches(e, host)).map(|e| (*g, *e)))
}

/// The one cloud whose table lists `host:port`, if only one does (names
/// such as `*.msauth.net` are in both tables and belong to neither alone).
pub fn cloud_of(host: &str, port: u16) -> Option<Environment> {
    let listed = |cloud: Environment| entry_in(cloud, host, port).is_some();
    match (listed(Environment::Public), listed(Environment::UsGov)) {
        (true, false) => Some(Environment::Public),
        (false, true) => Some(Environment::UsGov),
        _ => None,
    }
}

impl Environment {
    /// The other cloud.
    pub fn other(self) -> Environment {
        match self {
            Environment::Public => Environment::UsGov,
            Environment::UsGov => Environment::Public,
        }
    }

    /// How people name it.
    pub fn title(self) -> &'static str {
        match self {
            Environment::Public => "public cloud",
            Environment::UsGov => "US Government cloud",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The match as first written: the host lower-cased, then compared.
    fn matches_by_copy(entry: &str, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match entry.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == entry,
        }
    }

    proptest! {
        #[test]
        fn a_match_reads_the_host_as_a_lower_cased_copy_would(
            entry in "(\\*\\.)?[a-zA-Z.ü-]{0,12}",
            host in "[a-zA-Z.ü-]{0,16}",
            suffix_of_entry in any::<bool>(),
        ) {
            // Hosts that do end in the entry's name, in any case, as well.
            let host = if suffix_of_entry { format!("{host}{}", entry.trim_start_matches('*').to_ascii_uppercase()) } else { host };
            prop_assert_eq!(entry_matches(&entry, &host), matches_by_copy(&entry, &host));
        }
    }

    #[test]
    fn a_wildcard_needs_a_label_before_its_suffix() {
        assert!(entry_matches("*.msappproxy.net", "a.msappproxy.net"));
        assert!(entry_matches("*.msappproxy.net", "A.MsAppProxy.NET"));
        assert!(!entry_matches("*.msappproxy.net", "msappproxy.net"));
        assert!(!entry_matches("*.msappproxy.net", "xmsappproxy.net"));
        assert!(!entry_matches("login.microsoftonline.com", "login.microsoftonline.co"));
        assert!(entry_matches("login.microsoftonline.com", "LOGIN.microsoftonline.com"));
    }

    #[test]
    fn hosts_map_to_their_entries() {
        assert_eq!(
            entry_for("cwap-weu-1.servicebus.windows.net", 443),
            Some((Group::Service443, "*.servicebus.windows.net"))
        );
        assert_eq!(
            entry_for("login.microsoftonline.com", 443),
            Some((Group::Registration443, "*.microsoftonline.com"))
        );
        assert_eq!(entry_for("crl3.digicert.com", 80), Some((Group::Crl80, "crl3.digicert.com")));
        assert_eq!(entry_for("ctldl.windowsupdate.com", 80), Some((Group::Registration80, "ctldl.windowsupdate.com")));
        assert_eq!(entry_for("msappproxy.net", 443), None);
        assert_eq!(entry_for("evilmsappproxy.net", 443), None);
        assert_eq!(entry_for("crl3.digicert.com", 443), None);
        assert_eq!(entry_for("t.bootstrap.msappproxy.us", 443), Some((Group::Service443, "*.msappproxy.us")));
        assert_eq!(entry_for("ctldl.windowsupdate.us", 80), Some((Group::Registration80, "ctldl.windowsupdate.us")));
    }

    #[test]
    fn names_of_one_cloud_only_say_which() {
        assert_eq!(cloud_of("login.microsoftonline.us", 443), Some(Environment::UsGov));
        assert_eq!(cloud_of("t.bootstrap.msappproxy.net", 443), Some(Environment::Public));
        assert_eq!(cloud_of("x.msauth.net", 443), None);
        assert_eq!(cloud_of("app.example", 443), None);
    }

    #[test]
    fn environment_name_selects_the_cloud() {
        assert_eq!(Environment::from_environment_name(None), Ok(Environment::Public));
        assert_eq!(Environment::from_environment_name(Some("AzureUSGovernment")), Ok(Environment::UsGov));
        let err = Environment::from_environment_name(Some("AzureGov")).unwrap_err();
        assert!(err.contains("AzureUSGovernment"), "{err}");
    }
}
