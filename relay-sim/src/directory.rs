//! The cloud's directory: the tenant, its users and roles, its published
//! applications and connector groups, and the registry of connectors with
//! their last heartbeat (bootstrap).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Roles that matter to registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    GlobalAdministrator,
    ApplicationAdministrator,
    User,
}

/// A user of the tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub upn: String,
    pub password: String,
    pub role: Role,
    /// Other directories the account belongs to (as a guest or member);
    /// it can sign in to any of them.
    #[serde(default)]
    pub directories: Vec<String>,
    /// Where the account comes from (OPS-IDENTITY): created in the tenant,
    /// or synchronised from an on-premises directory.
    #[serde(default)]
    pub source: UserSource,
    /// Conditional Access demands multi-factor authentication to sign in.
    #[serde(default)]
    pub mfa: bool,
}

/// Where a user account comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    /// Created in the tenant (cloud-only).
    #[default]
    Cloud,
    /// Synchronised from on-premises Active Directory, where its account
    /// is `on_premises` (`CONTOSO\alice`).
    Synced { on_premises: String },
}

/// How the service lets users through to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PreAuthentication {
    /// Anyone who reaches the external URL is forwarded.
    #[default]
    Passthrough,
    /// Users sign in with Microsoft Entra ID first; only users of the
    /// tenant's directory reach the connector (OPS-IDENTITY).
    EntraId,
}

/// Which single sign-on the application gets from the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SingleSignOn {
    #[default]
    None,
    /// Header-based: the backend receives the signed-in user in
    /// [`PRINCIPAL_HEADER`] (and, for a synced user, the on-premises
    /// account in [`ON_PREMISES_HEADER`]).
    Headers,
}

/// The header carrying the pre-authenticated user's name to the backend.
pub const PRINCIPAL_HEADER: &str = "x-ms-client-principal-name";
/// The header carrying a synced user's on-premises account to the backend.
pub const ON_PREMISES_HEADER: &str = "x-ms-client-onprem-account";

/// Domains of personal Microsoft accounts: they cannot sign in to a
/// tenant (AADSTS50059).
pub const PERSONAL_DOMAINS: [&str; 4] = ["outlook.com", "hotmail.com", "live.com", "msn.com"];

/// The domain part of a user principal name.
pub fn upn_domain(upn: &str) -> String {
    upn.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default()
}

/// An application published through connectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    /// The host name users reach it by (`app1-contoso.msappproxy.net`).
    pub external_host: String,
    /// Where the connector sends the request (`http://app1.corp:8080`).
    pub internal_url: String,
    /// The connector group that serves it.
    pub group: String,
    #[serde(default)]
    pub pre_authentication: PreAuthentication,
    #[serde(default)]
    pub sso: SingleSignOn,
}

/// The tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// Appears in the service host names (`<id>.bootstrap.msappproxy.net`).
    pub id: String,
    pub domains: Vec<String>,
    pub region: String,
    pub users: Vec<User>,
    pub apps: Vec<App>,
    /// Machine name → connector group, for connectors registered from it.
    pub group_of_machine: BTreeMap<String, String>,
    /// Whether the directory uses application proxy / Private Access.
    #[serde(default = "enabled")]
    pub app_proxy_enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The group a connector lands in when no assignment names its machine.
pub const DEFAULT_GROUP: &str = "Default";

impl Tenant {
    /// Whether `upn` is on one of the tenant's domains (REG-DOMAIN).
    pub fn owns_domain_of(&self, upn: &str) -> bool {
        let d = upn_domain(upn);
        self.domains.iter().any(|t| t.eq_ignore_ascii_case(&d))
    }

    pub fn user(&self, upn: &str) -> Option<&User> {
        self.users.iter().find(|u| u.upn.eq_ignore_ascii_case(upn))
    }

    pub fn app_by_host(&self, host: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.external_host.eq_ignore_ascii_case(host))
    }

    pub fn group_for(&self, machine: &str) -> String {
        self.group_of_machine.get(machine).cloned().unwrap_or_else(|| DEFAULT_GROUP.to_string())
    }
}

/// A registered connector as the tenant's connector list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorRecord {
    pub id: String,
    pub machine: String,
    pub group: String,
    pub version: String,
    pub registered_at: SystemTime,
    pub last_bootstrap: Option<SystemTime>,
    /// The status the portal last showed.
    pub shown: Status,
}

/// The portal shows a connector inactive after this long without bootstrap.
pub const INACTIVE_AFTER: Duration = Duration::from_secs(60 * 60);
/// Connectors inactive this long are removed from the tenant.
pub const REMOVE_AFTER: Duration = Duration::from_secs(10 * 86_400);

/// What the portal shows for a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Inactive,
}

impl ConnectorRecord {
    /// Active = bootstrapped within the last hour (not the same as working:
    /// OPS-ACTIVE).
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.last_bootstrap.and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age < INACTIVE_AFTER)
    }

    /// When the record next changes on its own: turns inactive, or is
    /// removed.
    pub fn next_change(&self) -> SystemTime {
        let seen = self.last_bootstrap.unwrap_or(self.registered_at);
        match self.shown {
            Status::Active => seen + INACTIVE_AFTER,
            Status::Inactive => seen + REMOVE_AFTER,
        }
    }
}
