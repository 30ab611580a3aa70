//! Every diagnostic code and Windows event ID the connector reports, in one
//! table. A finding is made from one of these constants, never from text,
//! so a misspelt code is a compile error rather than a new code; the table
//! ([`ALL`]) is what `connsim explain` reads and what scenario expectations
//! are checked against.
//!
//! A code is `<REQUIREMENT>.<finding>`: the requirement of the catalogue
//! the finding is about, and what was found. Two forms are built from a
//! code instead of listed: `<REQUIREMENT>.soft-fail` (a revocation failure
//! the soft-fail policy let through, see [`soft_fail`]) and
//! `SVC.<service's code>` (a refusal the service names with a code of its
//! own, see [`SERVICE_REQUIREMENT`]).

use std::fmt;

/// One kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Code {
    /// The requirement of the catalogue it is about (`NET-443`).
    pub requirement: &'static str,
    /// What was found (`unreachable`).
    pub finding: &'static str,
    /// What it means, for `connsim explain`.
    pub meaning: &'static str,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.requirement, self.finding)
    }
}

/// The real connector's Windows event IDs that this one reports beside a
/// finding (from the product's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventId {
    /// 1000: re-registration failed, the trust certificate expired.
    TrustExpired,
    /// 12015: the connector failed to connect to the service.
    CannotConnect,
    /// 12019: the client certificate (or a certificate seen) is not valid.
    Certificate,
    /// 12020: a networking issue, with the URL tried.
    Networking,
    /// 13006: a backend application could not be reached or answered badly.
    Backend,
}

impl EventId {
    /// The number Windows logs.
    pub const fn number(self) -> u32 {
        match self {
            EventId::TrustExpired => 1000,
            EventId::CannotConnect => 12015,
            EventId::Certificate => 12019,
            EventId::Networking => 12020,
            EventId::Backend => 13006,
        }
    }
}

impl From<EventId> for u32 {
    fn from(id: EventId) -> u32 {
        id.number()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// The code prefixes that name no requirement of the catalogue but a part
/// of the world a finding can be about, with what each covers.
pub const GENERAL: &[(&str, &str)] = &[
    ("BACKEND", "the private applications the connector forwards requests to"),
    ("REG", "registration as a whole"),
    ("SVC", "the cloud service itself (a refusal it names, a host of it down)"),
];

/// The requirement of a refusal the service names with its own code.
pub const SERVICE_REQUIREMENT: &str = "SVC";

/// The finding of a revocation failure the soft-fail policy allowed.
pub const SOFT_FAIL: &str = "soft-fail";

/// `<requirement>.soft-fail`: the code of a revocation failure about
/// `requirement` when the soft-fail revocation policy let the connection
/// through.
pub fn soft_fail(requirement: &str) -> String {
    format!("{requirement}.{SOFT_FAIL}")
}

/// The code `text` names: one of [`ALL`], a soft-fail form of one of their
/// requirements, or a service's own refusal code (`SVC.…`). `None` for
/// anything else: a code the connector never reports.
pub fn known(text: &str) -> Option<Known> {
    let (requirement, finding) = text.split_once('.')?;
    if let Some(code) = ALL.iter().find(|c| c.requirement == requirement && c.finding == finding) {
        return Some(Known::Listed(*code));
    }
    // A revocation failure is a network finding (the revocation hosts could
    // not be reached, and why).
    if finding == SOFT_FAIL && requirement.starts_with("NET-") {
        if let Some(code) = ALL.iter().find(|c| c.requirement == requirement) {
            return Some(Known::SoftFail { requirement: code.requirement });
        }
    }
    // The service's own codes are snake_case (`quota_exceeded`), ours
    // kebab-case: a misspelt `SVC.host-unavailable` is not a service code.
    let service_code =
        !finding.is_empty() && finding.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (requirement == SERVICE_REQUIREMENT && service_code).then_some(Known::Service)
}

/// What [`known`] found a code to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Listed(Code),
    /// `<requirement>.soft-fail`, for a network requirement.
    SoftFail {
        requirement: &'static str,
    },
    /// `SVC.<the service's code>`.
    Service,
}

/// Defines each code as a constant and [`ALL`] as the list of them.
macro_rules! codes {
    ($($name:ident = $requirement:literal . $finding:literal : $meaning:literal;)*) => {
        $(
            #[doc = $meaning]
            pub const $name: Code = Code { requirement: $requirement, finding: $finding, meaning: $meaning };
        )*
        /// Every code the connector reports, in requirement order.
        pub const ALL: &[Code] = &[$($name),*];
    };
}

codes! {
    BACKEND_BAD_TARGET = "BACKEND"."bad-target": "a pushed request names no backend this connector may forward to";
    BACKEND_BROKEN = "BACKEND"."broken": "the backend broke the exchange off (connection reset or closed mid-answer)";
    BACKEND_RESPONSE_HEAD_TOO_LARGE = "BACKEND"."response-head-too-large": "the backend's response head is larger than a tunnel frame can carry";
    BACKEND_TIMEOUT = "BACKEND"."timeout": "the backend did not answer within the application's timeout";
    BACKEND_UNREACHABLE = "BACKEND"."unreachable": "the connector cannot open a connection to the backend";
    HOST_IEESC_ON = "HOST-IEESC"."on": "IE Enhanced Security Configuration is on, which blocks the registration sign-in";
    HOST_NET471_TOO_OLD = "HOST-NET471"."too-old": ".NET Framework older than 4.7.1 is installed";
    HOST_ONE_ALREADY_INSTALLED = "HOST-ONE"."already-installed": "a connector is already installed on this server (one per server)";
    HOST_OS_UNKNOWN = "HOST-OS"."unknown": "the Windows version of this server cannot be read";
    HOST_OS_UNSUPPORTED = "HOST-OS"."unsupported": "the server's Windows version is older than the connector supports";
    HOST_PPP_CO_INSTALLED = "HOST-PPP"."co-installed": "the Password Protection Proxy was installed beside the running connector";
    HOST_PPP_CONFLICT = "HOST-PPP"."conflict": "the Password Protection Proxy is installed on this server";
    HOST_TLS12_DISABLED = "HOST-TLS12"."disabled": "TLS 1.2 is not enabled in the registry keys the installer checks";
    HOST_TLS12_DISABLED_AT_RESTART = "HOST-TLS12"."disabled-at-restart": "TLS 1.2 was disabled while the connector ran and is off after its restart";
    HOST_TLS12_DISABLED_IN_SERVICE = "HOST-TLS12"."disabled-in-service": "TLS 1.2 is disabled on the server the connector runs on";
    HOST_TLS12_RESTART_PENDING = "HOST-TLS12"."restart-pending": "TLS 1.2 was enabled but the server has not restarted since";
    HOST_TLS12_UNKNOWN = "HOST-TLS12"."unknown": "no registry export was given, so TLS 1.2 cannot be checked";
    HOST_TLS12_UNREADABLE = "HOST-TLS12"."unreadable": "the registry export of the TLS keys cannot be read";
    NET_443_BROKEN_EXCHANGE = "NET-443"."broken-exchange": "a connection on 443 opened but the exchange with the service broke off";
    NET_443_UNREACHABLE = "NET-443"."unreachable": "nothing answers on outbound 443: the port is blocked";
    NET_80_OCSP_UNREACHABLE = "NET-80"."ocsp-unreachable": "no OCSP responder answers on port 80";
    NET_80_UNREACHABLE = "NET-80"."unreachable": "nothing answers on outbound 80, where revocation data is fetched";
    NET_CRL_OCSP_UNREACHABLE = "NET-CRL"."ocsp-unreachable": "the OCSP responder's name is not allowed on port 80";
    NET_CRL_STALE = "NET-CRL"."stale": "only an expired CRL could be had: the distribution points cannot be reached";
    NET_CRL_UNREACHABLE = "NET-CRL"."unreachable": "the CRL distribution points are not reachable on port 80 while other hosts are";
    NET_DNS_SINKHOLE = "NET-DNS"."sinkhole": "a service name resolves to a sinkhole address (a DNS filter blocks it)";
    NET_DNS_UNRESOLVED = "NET-DNS"."unresolved": "a service name does not resolve";
    NET_NOINSPECT_INSPECTION_DETECTED = "NET-NOINSPECT"."inspection-detected": "a TLS inspection box re-signs the service's traffic";
    NET_NOINSPECT_UNEXPECTED_RESPONSE = "NET-NOINSPECT"."unexpected-response": "something between the connector and the service answered instead of it";
    NET_PROXY_AUTH_UNSUPPORTED = "NET-PROXY"."auth-unsupported": "the outbound proxy demands authentication, which the connector does not support";
    NET_PROXY_REFUSED = "NET-PROXY"."refused": "the outbound proxy refused to open a tunnel to the service";
    NET_PROXY_UNREACHABLE = "NET-PROXY"."unreachable": "the outbound proxy itself does not answer";
    NET_REG_TRUST_LIST = "NET-REG"."trust-list": "the certificate trust list cannot be downloaded on port 80 during registration";
    NET_REG_UNREACHABLE = "NET-REG"."unreachable": "a registration host is not reachable while others on its port are: its entry is missing";
    NET_RULES_STALE_RANGES = "NET-RULES"."stale-ranges": "a service host moved to an address the IP allow-list does not have";
    NET_SVC_UNREACHABLE = "NET-SVC"."unreachable": "a service host is not reachable while others on 443 are: its entry is missing";
    NET_USER_ACCOUNT_BLOCKED = "NET-USER"."account-blocked": "a firewall rule by user blocks the account the services run as";
    OPS_ACTIVE_NO_TUNNEL = "OPS-ACTIVE"."no-tunnel": "the connector bootstraps (active in the portal) but holds no tunnel";
    OPS_GEO_FAR_FROM_INSTANCE = "OPS-GEO"."far-from-instance": "the connector is far from the tenant's instance: requests take long round trips";
    OPS_SERVICES_UPDATER_STOPPED = "OPS-SERVICES"."updater-stopped": "the updater service is stopped: no automatic upgrades";
    REG_BAD_CERTIFICATE = "REG"."bad-certificate": "the certificate registration returned cannot be used";
    REG_ADMIN_APP_PROXY_DISABLED = "REG-ADMIN"."app-proxy-disabled": "application proxy is not enabled in the directory";
    REG_ADMIN_BAD_CREDENTIALS = "REG-ADMIN"."bad-credentials": "the administrator's user name or password is wrong";
    REG_ADMIN_MFA_REQUIRED = "REG-ADMIN"."mfa-required": "the administrator's sign-in needs multi-factor authentication";
    REG_ADMIN_NOT_GLOBAL_ADMIN = "REG-ADMIN"."not-global-admin": "the account that registers is not an administrator allowed to";
    REG_DIR_NOT_A_MEMBER = "REG-DIR"."not-a-member": "the account is not a member of the directory that uses application proxy";
    REG_DIR_WRONG_DIRECTORY = "REG-DIR"."wrong-directory": "the account signed in to another of its directories";
    REG_DOMAIN_NOT_TENANT_DOMAIN = "REG-DOMAIN"."not-tenant-domain": "the account is not on the tenant's domain or one of its aliases";
    REG_DOMAIN_PERSONAL_ACCOUNT = "REG-DOMAIN"."personal-account": "a personal Microsoft account tried to register";
    REG_GOV_NETWORK_FOR_OTHER_CLOUD = "REG-GOV"."network-for-other-cloud": "the network allows the other cloud's hosts, not this cloud's";
    REG_GOV_TENANT_NOT_IN_CLOUD = "REG-GOV"."tenant-not-in-cloud": "the tenant is not in the cloud the connector signs in to";
    REG_GOV_TENANT_NOT_IN_GOV_CLOUD = "REG-GOV"."tenant-not-in-gov-cloud": "a US Government installation signs in to a tenant of the public cloud";
    REG_VISIBLE_NOT_REGISTERED = "REG-VISIBLE"."not-registered": "the service no longer knows this connector (deleted, or unseen for 10 days)";
    SVC_HOST_UNAVAILABLE = "SVC"."host-unavailable": "one service host is down while its siblings under the same entry answer";
    TLS_CLIENT_EXPIRED = "TLS-CLIENT"."expired": "the connector's client certificate has expired";
    TLS_CLIENT_REFUSED = "TLS-CLIENT"."refused": "the service did not accept the connector's client certificate";
    TLS_CLIENT_RENEWAL_FAILED = "TLS-CLIENT"."renewal-failed": "the client certificate could not be renewed before it runs out";
    TLS_CLIENT_REVOKED = "TLS-CLIENT"."revoked": "the connector's client certificate is revoked";
    TLS_MIN12_HANDSHAKE_FAILED = "TLS-MIN12"."handshake-failed": "the TLS handshake failed in a way that points at a protocol version";
    TLS_MIN12_PEER_TOO_OLD = "TLS-MIN12"."peer-too-old": "the peer offers only TLS older than 1.2";
    TLS_REVOKE_BAD_CERTIFICATE = "TLS-REVOKE"."bad-certificate": "a certificate of the chain cannot be read for its revocation check";
    TLS_REVOKE_BAD_RESPONSE = "TLS-REVOKE"."bad-response": "a CRL or OCSP answer cannot be used (garbled, truncated or badly signed)";
    TLS_REVOKE_NO_DISTRIBUTION_POINT = "TLS-REVOKE"."no-distribution-point": "a certificate names no CRL distribution point";
    TLS_REVOKE_REVOKED = "TLS-REVOKE"."revoked": "a certificate of the service's chain is revoked";
    TLS_ROOTS_MISSING_ROOT = "TLS-ROOTS"."missing-root": "the server does not trust a root the service's certificates chain to";
    TLS_ROOTS_NO_COMMON_ROOT = "TLS-ROOTS"."no-common-root": "no root the service uses is trusted on this server";
    TLS_ROOTS_UNTRUSTED_ISSUER = "TLS-ROOTS"."untrusted-issuer": "the service's chain ends at an issuer this server does not trust";
    TLS_TIME_SKEW = "TLS-TIME"."skew": "the server's clock is off from the service's";
    TLS_TIME_VALIDITY = "TLS-TIME"."validity": "a certificate is not valid at the time the server's clock says";
    VER_NET471_UPGRADE_REFUSED = "VER-NET471"."upgrade-refused": "the updater refused a release that needs a newer .NET than installed";
    VER_PA_MIN_TOO_OLD = "VER-PA-MIN"."too-old": "the connector's version is older than the service accepts";
    VER_UPDATER_DOWNLOAD_FAILED = "VER-UPDATER"."download-failed": "the updater could not download a release's package";
    VER_UPDATER_PACKAGE_CORRUPT = "VER-UPDATER"."package-corrupt": "a downloaded package does not match its announced digest";
    VER_UPDATER_PACKAGE_UNTRUSTED = "VER-UPDATER"."package-untrusted": "a downloaded package is not signed by the publisher";
    VER_UPDATER_RELEASE_PULLED = "VER-UPDATER"."release-pulled": "the installed release was pulled by the service";
    VER_UPDATER_ROLLED_BACK = "VER-UPDATER"."rolled-back": "the updater rolled a new version back after it failed to prove itself";
    VER_UPGRADE_INSTALL_FAILED = "VER-UPGRADE"."install-failed": "the installation could not be written";
    VER_UPGRADE_LEFTOVER_FOLDERS = "VER-UPGRADE"."leftover-folders": "an install over an earlier installation's folders was refused";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ALL {
            assert!(seen.insert(c.to_string()), "{c} twice");
            assert!(c.requirement.chars().all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '-'), "{c}");
            assert!(c.finding.chars().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '-'), "{c}");
            assert!(!c.meaning.is_empty(), "{c} has no meaning");
        }
    }

    #[test]
    fn known_codes_and_their_forms() {
        assert_eq!(known("NET-443.unreachable"), Some(Known::Listed(NET_443_UNREACHABLE)));
        assert_eq!(known("NET-CRL.soft-fail"), Some(Known::SoftFail { requirement: "NET-CRL" }));
        assert_eq!(known("SVC.quota_exceeded"), Some(Known::Service));
        assert_eq!(known("SVC.host-unavilable"), None);
        assert_eq!(known("TLS-TIME.soft-fail"), None);
        assert_eq!(known("NET-443.unreachabel"), None);
        assert_eq!(known("NOPE.soft-fail"), None);
        assert_eq!(known("SVC."), None);
        assert_eq!(u32::from(EventId::Networking), 12020);
    }
}
