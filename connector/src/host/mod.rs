//! The Windows server the connector is installed on, as data (HOST-*): a
//! [`HostProfile`] (a JSON file on a real machine, part of a scenario in a
//! simulation) plus a `.reg` export of the TLS settings, and the
//! [`preflight`] checks the installer runs before anything is changed.

pub mod reg;

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use reg::RegFile;

/// .NET Framework 4.7.1's release number (the `Release` DWORD under
/// `NDP\v4\Full`).
pub const NET471_RELEASE: u32 = 461_308;

/// Products whose presence matters to the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Product {
    /// Microsoft Entra Password Protection Proxy (HOST-PPP).
    PasswordProtectionProxy,
    /// Microsoft Entra Connect (HOST-COEXIST).
    EntraConnect,
    /// A private network connector already (HOST-ONE).
    PrivateNetworkConnector,
}

/// What preflight needs to know about the server. Every field defaults to
/// a compliant server ([`HostProfile::compliant`]): a profile names only
/// what differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostProfile {
    /// Windows NT version, `major.minor[.build]` (`6.3.9600` is 2012 R2).
    pub os_version: String,
    /// `.reg` export of the SCHANNEL and .NET keys (HOST-TLS12).
    pub registry: Option<String>,
    /// The TLS keys changed and the server was not restarted since.
    pub restart_pending: bool,
    /// .NET Framework release number (461308 = 4.7.1).
    pub dotnet_release: u32,
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

fn fail(requirement: &'static str, finding: &str, message: String, remedy: &str) -> Check {
    Check {
        requirement,
        passed: false,
        detail: message.clone(),
        diagnostic: Some(Diagnostic::new(requirement, finding, None, message, remedy)),
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
            "HOST-OS",
            "unsupported",
            format!("Windows NT {} is older than Windows Server 2012 R2 (NT 6.3)", host.os_version),
            "install the connector on Windows Server 2012 R2 or later",
        ),
        None => fail(
            "HOST-OS",
            "unknown",
            format!("the OS version {:?} cannot be read (expected major.minor[.build])", host.os_version),
            "check the host profile",
        ),
    });
    checks.push(tls12(host));
    checks.push(if host.installed.contains(&Product::PasswordProtectionProxy) {
        fail(
            "HOST-PPP",
            "conflict",
            "Microsoft Entra Password Protection Proxy is installed on this server: the two install incompatible versions of the Connect Agent Updater service".into(),
            "install the connector on another server",
        )
    } else {
        pass("HOST-PPP", "no Password Protection Proxy")
    });
    let needs_471 = product_version(connector_version).is_some_and(|v| v >= [1, 5, 3437, 0]);
    checks.push(if needs_471 && host.dotnet_release < NET471_RELEASE {
        fail(
            "HOST-NET471",
            "too-old",
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
            "HOST-ONE",
            "already-installed",
            "a private network connector is already installed on this server: one connector per server".into(),
            "install and register the additional connector on another server",
        )
    } else {
        pass("HOST-ONE", "no connector installed yet")
    });
    checks.push(if host.ie_esc {
        fail(
            "HOST-IEESC",
            "on",
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

fn tls12(host: &HostProfile) -> Check {
    const REMEDY: &str = "import the spec's .reg file (SCHANNEL TLS 1.2 Client and Server Enabled=1, DisabledByDefault=0; .NETFramework v4.0.30319 SchUseStrongCrypto=1), then restart the server";
    let Some(text) = &host.registry else {
        return fail("HOST-TLS12", "unknown", "no registry export was given: TLS 1.2 cannot be checked".into(), REMEDY);
    };
    let reg = match RegFile::parse(text) {
        Ok(r) => r,
        Err(e) => return fail("HOST-TLS12", "unreadable", format!("the registry export cannot be read: {e}"), REMEDY),
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
    if !wrong.is_empty() {
        return fail("HOST-TLS12", "disabled", format!("TLS 1.2 is not enabled: {}", wrong.join("; ")), REMEDY);
    }
    if host.restart_pending {
        return fail(
            "HOST-TLS12",
            "restart-pending",
            "the TLS 1.2 keys are set but the server has not been restarted since: they are not in effect".into(),
            "restart the server, then install",
        );
    }
    pass("HOST-TLS12", "TLS 1.2 enabled (SCHANNEL client and server, strong crypto for .NET)")
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
    fn versions_compare_as_four_numbers() {
        assert!(product_version("1.5.3437.0") > product_version("1.5.3417.0"));
        assert!(product_version("1.5.10.0") > product_version("1.5.9.0"));
        assert_eq!(product_version("1.5"), None);
    }
}
