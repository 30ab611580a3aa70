//! The Windows server the connector is installed on, as data (HOST-*): a
//! [`HostProfile`] (a JSON file on a real machine, part of a scenario in a
//! simulation) plus a `.reg` export of the TLS settings, and the
//! [`preflight`] checks the installer runs before anything is changed.

pub mod reg;

use serde::{Deserialize, Serialize};

use crate::code::{self, Code};
use crate::diag::Diagnostic;
use reg::RegFile;

/// .NET Framework 4.7.1's release number (the `Release` DWORD under
/// `NDP\v4\Full`).
pub const NET471_RELEASE: u32 = 461_308;

/// Products whose presence matters to the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Product {
    /// Microsoft Entra Password Protection Proxy (HOST-PPP).
    PasswordProtectionProxy,
    /// Microsoft Entra Connect (HOST-COEXIST).
    EntraConnect,
    /// A private network connector already (HOST-ONE).
    PrivateNetworkConnector,
}

/// The server as it is now: shared by the services and changed by what
/// happens on it (another product installed, registry keys edited, .NET
/// upgraded, a restart).
#[derive(Debug, Clone, Default)]
pub struct LiveHost(std::sync::Arc<std::sync::Mutex<HostProfile>>);

impl LiveHost {
    pub fn new(profile: HostProfile) -> Self {
        LiveHost(std::sync::Arc::new(std::sync::Mutex::new(profile)))
    }

    /// The server as it is now.
    pub fn now(&self) -> HostProfile {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the server (what an installer, an admin or a restart does).
    pub fn change(&self, f: impl FnOnce(&mut HostProfile)) {
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// What preflight needs to know about the server. Every field defaults to
/// a compliant server ([`HostProfile::compliant`]): a profile names only
/// what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HostProfile {
    /// Windows NT version, `major.minor[.build]` (`6.3.9600` is 2012 R2).
    pub os_version: String,
    /// `.reg` export of the SCHANNEL and .NET keys (HOST-TLS12).
    pub registry: Option<String>,
    /// The TLS keys changed and the server was not restarted since.
    pub restart_pending: bool,
    /// The keys in effect while a change waits for the restart (`None`:
    /// the same as `registry`, or not known). Set by changes made while
    /// the connector runs; a restart clears it.
    #[serde(skip)]
    pub registry_in_effect: Option<String>,
    /// .NET Framework release number (461308 = 4.7.1).
    pub dotnet_release: u32,
    /// Other products installed on the server.
    pub installed: Vec<Product>,
    /// Internet Explorer Enhanced Security Configuration is on.
    pub ie_esc: bool,
}

impl Default for HostProfile {
    fn default() -> Self {
        HostProfile::compliant()
    }
}

impl HostProfile {
    /// A server that passes every check: Windows Server 2019, TLS 1.2 keys
    /// from the spec, .NET 4.8.
    pub fn compliant() -> HostProfile {
        HostProfile {
            os_version: "10.0.17763".into(),
            registry: Some(SPEC_TLS12_REG.into()),
            restart_pending: false,
            registry_in_effect: None,
            dotnet_release: 528_040,
            installed: Vec::new(),
            ie_esc: false,
        }
    }
}

/// The spec's `.reg` text that enables TLS 1.2.
pub const SPEC_TLS12_REG: &str = r#"Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2]
[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Client]
"DisabledByDefault"=dword:00000000
"Enabled"=dword:00000001
[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Server]
"DisabledByDefault"=dword:00000000
"Enabled"=dword:00000001
[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\.NETFramework\v4.0.30319]
"SchUseStrongCrypto"=dword:00000001
"#;

/// The spec's keys with the TLS 1.2 client side turned off, as a hardening
/// script or group policy leaves them.
pub const TLS12_CLIENT_DISABLED_REG: &str = r#"Windows Registry Editor Version 5.00

[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2]
[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Client]
"DisabledByDefault"=dword:00000001
"Enabled"=dword:00000000
[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Server]
"DisabledByDefault"=dword:00000000
"Enabled"=dword:00000001
[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\.NETFramework\v4.0.30319]
"SchUseStrongCrypto"=dword:00000001
"#;

const SCHANNEL_TLS12: &str =
    r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2";
const NETFX: &str = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\.NETFramework\v4.0.30319";

/// One preflight check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub requirement: &'static str,
    pub passed: bool,
    /// What was found (passed) or the diagnostic with its fix (failed).
    pub detail: String,
    pub diagnostic: Option<Diagnostic>,
}

fn pass(requirement: &'static str, detail: impl Into<String>) -> Check {
    Check { requirement, passed: true, detail: detail.into(), diagnostic: None }
}

fn fail(code: Code, message: String, remedy: &str) -> Check {
    Check {
        requirement: code.requirement,
        passed: false,
        detail: message.clone(),
        diagnostic: Some(Diagnostic::new(code, None, message, remedy)),
    }
}

/// `major.minor` of a version string.
fn nt_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Four-part product version (`1.5.3437.0`) as a comparable tuple.
pub fn product_version(v: &str) -> Option<[u32; 4]> {
    let parts: Vec<u32> = v.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<_>>>()?;
    (parts.len() == 4).then(|| [parts[0], parts[1], parts[2], parts[3]])
}

/// The installer's checks for installing `connector_version` on `host`.
pub fn preflight(host: &HostProfile, connector_version: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(match nt_version(&host.os_version) {
        Some(v) if v >= (6, 3) => pass("HOST-OS", format!("Windows NT {}", host.os_version)),
        Some(_) => fail(
            code::HOST_OS_UNSUPPORTED,
            format!("Windows NT {} is older than Windows Server 2012 R2 (NT 6.3)", host.os_version),
            "install the connector on Windows Server 2012 R2 or later",
        ),
        None => fail(
            code::HOST_OS_UNKNOWN,
            format!("the OS version {:?} cannot be read (expected major.minor[.build])", host.os_version),
            "check the host profile",
        ),
    });
    checks.push(tls12(host));
    checks.push(if host.installed.contains(&Product::PasswordProtectionProxy) {
        fail(code::HOST_PPP_CONFLICT,
            "Microsoft Entra Password Protection Proxy is installed on this server: the two install incompatible versions of the Connect Agent Updater service".into(),
            "install the connector on another server",
        )
    } else {
        pass("HOST-PPP", "no Password Protection Proxy")
    });
    let needs_471 = product_version(connector_version).is_some_and(|v| v >= [1, 5, 3437, 0]);
    checks.push(if needs_471 && host.dotnet_release < NET471_RELEASE {
        fail(code::HOST_NET471_TOO_OLD,
            format!(
                "connector {connector_version} needs .NET Framework 4.7.1 (release {NET471_RELEASE}) or later; this server has release {}",
                host.dotnet_release
            ),
            "install .NET Framework 4.7.1 or later, then run the installer again",
        )
    } else {
        pass("HOST-NET471", format!(".NET release {}", host.dotnet_release))
    });
    checks.push(if host.installed.contains(&Product::PrivateNetworkConnector) {
        fail(
            code::HOST_ONE_ALREADY_INSTALLED,
            "a private network connector is already installed on this server: one connector per server".into(),
            "install and register the additional connector on another server",
        )
    } else {
        pass("HOST-ONE", "no connector installed yet")
    });
    checks.push(if host.ie_esc {
        fail(
            code::HOST_IEESC_ON,
            "Internet Explorer Enhanced Security Configuration is On: the registration sign-in screen may not show"
                .into(),
            "turn IE Enhanced Security Configuration Off in Server Manager, then register",
        )
    } else {
        pass("HOST-IEESC", "IE Enhanced Security Configuration is Off")
    });
    checks.push(pass(
        "HOST-COEXIST",
        if host.installed.contains(&Product::EntraConnect) {
            "Microsoft Entra Connect is installed: it may share the server"
        } else {
            "no other authentication agent"
        },
    ));
    checks
}

const TLS12_REMEDY: &str = "import the spec's .reg file (SCHANNEL TLS 1.2 Client and Server Enabled=1, DisabledByDefault=0; .NETFramework v4.0.30319 SchUseStrongCrypto=1), then restart the server";

fn tls12(host: &HostProfile) -> Check {
    let wrong = match tls12_keys(host) {
        Ok(w) => w,
        Err(check) => return *check,
    };
    if !wrong.is_empty() {
        return fail(code::HOST_TLS12_DISABLED, format!("TLS 1.2 is not enabled: {}", wrong.join("; ")), TLS12_REMEDY);
    }
    if host.restart_pending {
        return fail(
            code::HOST_TLS12_RESTART_PENDING,
            "the TLS 1.2 keys are set but the server has not been restarted since: they are not in effect".into(),
            "restart the server, then install",
        );
    }
    pass("HOST-TLS12", "TLS 1.2 enabled (SCHANNEL client and server, strong crypto for .NET)")
}

/// The TLS 1.2 keys that differ from the spec's (empty: all as given), or
/// the failed check when the export is missing or unreadable.
fn tls12_keys(host: &HostProfile) -> Result<Vec<String>, Box<Check>> {
    let Some(text) = &host.registry else {
        let text = "no registry export was given: TLS 1.2 cannot be checked".into();
        return Err(Box::new(fail(code::HOST_TLS12_UNKNOWN, text, TLS12_REMEDY)));
    };
    let reg = match RegFile::parse(text) {
        Ok(r) => r,
        Err(e) => {
            let text = format!("the registry export cannot be read: {e}");
            return Err(Box::new(fail(code::HOST_TLS12_UNREADABLE, text, TLS12_REMEDY)));
        }
    };
    let shown = |v: Option<u32>| v.map_or_else(|| "missing".to_string(), |v| v.to_string());
    let mut wrong = Vec::new();
    for side in ["Client", "Server"] {
        let key = format!("{SCHANNEL_TLS12}\\{side}");
        if reg.dword(&key, "Enabled") != Some(1) {
            wrong.push(format!("TLS 1.2\\{side} Enabled is {}, not 1", shown(reg.dword(&key, "Enabled"))));
        }
        if reg.dword(&key, "DisabledByDefault") != Some(0) {
            wrong.push(format!(
                "TLS 1.2\\{side} DisabledByDefault is {}, not 0",
                shown(reg.dword(&key, "DisabledByDefault"))
            ));
        }
    }
    if reg.dword(NETFX, "SchUseStrongCrypto") != Some(1) {
        wrong.push(format!(
            ".NETFramework\\v4.0.30319 SchUseStrongCrypto is {}, not 1",
            shown(reg.dword(NETFX, "SchUseStrongCrypto"))
        ));
    }
    Ok(wrong)
}

/// What the running connector finds on its server, at each start of its
/// service and at each check of its updater. Registry changes to SCHANNEL
/// take effect only when the server restarts, as on Windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InService {
    /// What keeps the connector from working now.
    pub fatal: Option<Diagnostic>,
    /// What is wrong without stopping it (yet).
    pub notes: Vec<Diagnostic>,
}

/// The checks of a connector in service on `host` (see [`InService`]).
pub fn in_service(host: &HostProfile) -> InService {
    let mut out = InService::default();
    // The keys in effect: those before a pending change when known; when
    // not known, a pending change is not judged as in effect.
    let effective = HostProfile { registry: host.registry_in_effect.clone().or(host.registry.clone()), ..host.clone() };
    let effect_known = !host.restart_pending || host.registry_in_effect.is_some();
    if let (Ok(wrong), true) = (tls12_keys(&effective), effect_known) {
        if !wrong.is_empty() {
            out.fatal = Some(Diagnostic::new(code::HOST_TLS12_DISABLED_IN_SERVICE, None,
                format!(
                    "TLS 1.2 is disabled on this server, in effect since its last restart ({}): the connector cannot reach the service, which accepts TLS 1.2 only",
                    wrong.join("; ")
                ),
                TLS12_REMEDY,
            ));
        }
    }
    match tls12_keys(host) {
        Ok(wrong) if !wrong.is_empty() && host.restart_pending => out.notes.push(Diagnostic::new(code::HOST_TLS12_DISABLED_AT_RESTART, None,
            format!(
                "the TLS 1.2 keys were changed ({}): at the next restart of the server they take effect, and from then on the connector cannot reach the service",
                wrong.join("; ")
            ),
            "set the keys back as the spec gives them before the server restarts",
        )),
        Ok(_) | Err(_) => {}
    }
    if host.installed.contains(&Product::PasswordProtectionProxy) {
        out.notes.push(Diagnostic::new(code::HOST_PPP_CO_INSTALLED, None,
            "Microsoft Entra Password Protection Proxy is installed on this server: it brings its own, incompatible version of the Connect Agent Updater service, so the connector's updater cannot update the connector",
            "uninstall Password Protection Proxy from this server, or move the connector to another server; the connector keeps serving meanwhile but gets no new versions",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(host: &HostProfile, version: &str) -> Vec<&'static str> {
        preflight(host, version).into_iter().filter(|c| !c.passed).map(|c| c.requirement).collect()
    }

    #[test]
    fn a_compliant_host_passes_everything() {
        assert!(failed(&HostProfile::compliant(), "1.5.3437.0").is_empty());
    }

    #[test]
    fn each_requirement_fails_on_its_own() {
        let base = HostProfile::compliant();
        let with = |f: &dyn Fn(&mut HostProfile)| {
            let mut h = base.clone();
            f(&mut h);
            h
        };
        assert_eq!(failed(&with(&|h| h.os_version = "6.2.9200".into()), "1.5.3437.0"), ["HOST-OS"]);
        assert_eq!(
            failed(
                &with(&|h| {
                    h.registry = Some(SPEC_TLS12_REG.replace("00000001\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.2\\Server]", "00000000\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\TLS 1.2\\Server]"))
                }),
                "1.5.3437.0"
            ),
            ["HOST-TLS12"]
        );
        assert_eq!(failed(&with(&|h| h.restart_pending = true), "1.5.3437.0"), ["HOST-TLS12"]);
        assert_eq!(
            failed(&with(&|h| h.installed = vec![Product::PasswordProtectionProxy]), "1.5.3437.0"),
            ["HOST-PPP"]
        );
        assert_eq!(failed(&with(&|h| h.dotnet_release = 461_308 - 1), "1.5.3437.0"), ["HOST-NET471"]);
        assert!(failed(&with(&|h| h.dotnet_release = 460_000), "1.5.3417.0").is_empty());
        assert_eq!(
            failed(&with(&|h| h.installed = vec![Product::PrivateNetworkConnector]), "1.5.3437.0"),
            ["HOST-ONE"]
        );
        assert_eq!(failed(&with(&|h| h.ie_esc = true), "1.5.3437.0"), ["HOST-IEESC"]);
        assert!(failed(&with(&|h| h.installed = vec![Product::EntraConnect]), "1.5.3437.0").is_empty());
        assert_eq!(failed(&with(&|h| h.registry = None), "1.5.3437.0"), ["HOST-TLS12"]);
    }

    #[test]
    fn registry_changes_stop_the_service_only_after_a_restart() {
        let mut host = HostProfile::compliant();
        assert_eq!(in_service(&host), InService::default());
        host.registry = Some(TLS12_CLIENT_DISABLED_REG.into());
        host.restart_pending = true;
        let found = in_service(&host);
        assert!(found.fatal.is_none(), "not in effect before the restart");
        assert_eq!(found.notes.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(), ["HOST-TLS12.disabled-at-restart"]);
        host.restart_pending = false;
        assert_eq!(in_service(&host).fatal.map(|d| d.code), Some("HOST-TLS12.disabled-in-service".to_string()));
        // Set right again without a restart: the disabled keys stay in effect.
        host.registry_in_effect = host.registry.clone();
        host.registry = Some(SPEC_TLS12_REG.into());
        host.restart_pending = true;
        let found = in_service(&host);
        assert_eq!(found.fatal.map(|d| d.code), Some("HOST-TLS12.disabled-in-service".to_string()));
        assert!(found.notes.is_empty(), "the pending keys are right: {:?}", found.notes);
    }

    #[test]
    fn password_protection_proxy_found_in_service() {
        let mut host = HostProfile::compliant();
        host.installed.push(Product::PasswordProtectionProxy);
        let found = in_service(&host);
        assert!(found.fatal.is_none(), "the connector keeps serving");
        assert_eq!(found.notes.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(), ["HOST-PPP.co-installed"]);
    }

    #[test]
    fn versions_compare_as_four_numbers() {
        assert!(product_version("1.5.3437.0") > product_version("1.5.3417.0"));
        assert!(product_version("1.5.10.0") > product_version("1.5.9.0"));
        assert_eq!(product_version("1.5"), None);
    }
}
