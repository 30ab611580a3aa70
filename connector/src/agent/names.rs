//! The names of the cloud's services for a tenant, per cloud.

use super::TRUST_LIST_HOST;
use crate::allowlist::Environment;

/// The service's host names for a tenant in one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    pub cloud: Environment,
    pub login: String,
    pub registration: String,
    pub bootstrap: String,
    pub renewtrust: String,
    /// The certificate trust list's host (port 80).
    pub trust_list: String,
    /// A CRL host of the cloud's allow-list (port 80), probed as a reference.
    pub crl_reference: String,
}

impl ServiceNames {
    /// Hosts under different allow-list entries, probed to tell "port
    /// blocked" from "name blocked" (see [`crate::reach`]), and the other
    /// cloud's sign-in, CRL and trust-list hosts, to tell a network that
    /// lets the other cloud out (REG-GOV) from a closed port.
    pub fn reference_hosts(&self, service_port: u16) -> Vec<(String, u16)> {
        let other = ServiceNames::in_cloud(self.cloud.other(), "tenant");
        vec![
            (self.bootstrap.clone(), service_port),
            (self.login.clone(), service_port),
            (self.registration.clone(), service_port),
            (self.crl_reference.clone(), 80),
            (self.trust_list.clone(), 80),
            (other.login, service_port),
            (other.crl_reference, 80),
            (other.trust_list, 80),
        ]
    }

    pub fn public(tenant_id: &str) -> Self {
        Self::in_cloud(Environment::Public, tenant_id)
    }

    /// `tenant_id`'s names in `cloud` (REG-GOV: the government cloud's
    /// names end in `.us`).
    pub fn in_cloud(cloud: Environment, tenant_id: &str) -> Self {
        let (login, apps, trust_list, crl) = match cloud {
            Environment::Public => {
                ("login.microsoftonline.com", "msappproxy.net", TRUST_LIST_HOST, "crl.microsoft.com")
            }
            Environment::UsGov => {
                ("login.microsoftonline.us", "msappproxy.us", "ctldl.windowsupdate.us", "crl.microsoft.us")
            }
        };
        ServiceNames {
            cloud,
            login: login.into(),
            registration: format!("{tenant_id}.registration.{apps}"),
            bootstrap: format!("{tenant_id}.bootstrap.{apps}"),
            renewtrust: format!("{tenant_id}.renewtrust.{apps}"),
            trust_list: trust_list.into(),
            crl_reference: crl.into(),
        }
    }
}
