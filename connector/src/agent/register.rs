//! The connector's identity: registration with an administrator's
//! sign-in (with retries, and the root-trust check before it), the
//! certificate's expiry, and its renewal before it runs out.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::{Agent, AgentError, Credentials, TRUST_LIST_PATH};
use crate::allowlist::Environment;
use crate::api::{LoginRequest, LoginResponse, RegisterRequest, RegisterResponse, RenewRequest, RenewResponse};
use crate::backoff::Backoff;
use crate::code::{self, EventId};
use crate::diag::{self, Diagnostic};
use crate::event::AgentEvent;
use crate::http::{CallError, HttpUrl};
use crate::identity::{self, Identity};
use crate::pki::cert::sha256_hex;
use crate::pki::{ServiceTls, Trust};

/// Why a renewal failed: the call (with the finding that explains it, as
/// on every other path), or something on this host.
enum RenewFailure {
    Service(Diagnostic),
    Local(String),
}

enum RegisterFailure {
    /// Worth another attempt (network trouble).
    Retry(Diagnostic),
    /// The service said no: retrying will not help.
    Final(Diagnostic),
    Identity(identity::IdentityError),
}

impl RegisterFailure {
    fn from_call(e: CallError) -> Self {
        match &e {
            CallError::Status { .. } => RegisterFailure::Final(e.diagnostic()),
            _ => RegisterFailure::Retry(e.diagnostic()),
        }
    }
}

/// Registration's retries: network trouble is tried again with a backoff,
/// up to a number of attempts in all (the installer's patience); a
/// refusal by the service is final and never reaches here.
#[derive(Debug)]
pub(super) struct Retries {
    attempts: u32,
    failed: u32,
}

impl Retries {
    const BACKOFF: Backoff =
        Backoff { initial: Duration::from_secs(3), max: Duration::from_secs(60), multiplier: 2.0, jitter: 0.2 };

    pub(super) fn new(attempts: u32) -> Self {
        Retries { attempts, failed: 0 }
    }

    /// After a failure worth retrying: the wait before the next attempt,
    /// or `None` when every attempt is spent. `jitter` (a unit random
    /// number) is drawn only for a wait.
    pub(super) fn after_failure(&mut self, jitter: impl FnOnce() -> f64) -> Option<Duration> {
        self.failed += 1;
        if self.failed >= self.attempts {
            return None;
        }
        Some(Self::BACKOFF.delay(self.failed - 1, jitter()))
    }
}

/// Whether a certificate valid from `not_before` to `not_after` is due for
/// renewal at `now`: once `fraction` of its lifetime has passed. A clock
/// behind the start counts as no time passed; dates the wrong way round
/// are never due (the certificate is unusable anyway).
pub(super) fn renewal_due(not_before: SystemTime, not_after: SystemTime, now: SystemTime, fraction: f64) -> bool {
    let Ok(lifetime) = not_after.duration_since(not_before) else { return false };
    let age = now.duration_since(not_before).unwrap_or_default();
    age.as_secs_f64() >= lifetime.as_secs_f64() * fraction
}

impl Agent {
    pub(super) async fn register_with_retries(&self, trust: &Rc<Trust>) -> Result<Identity, AgentError> {
        let creds = self.config.credentials.clone().ok_or(AgentError::NoCredentials)?;
        let tls = self.service_tls(trust, None)?;
        let mut retries = Retries::new(self.config.registration_attempts);
        loop {
            self.env.emit(AgentEvent::RegistrationStarted { tenant: self.config.tenant_id.clone() });
            match self.register_once(&creds, &tls).await {
                Ok(id) => return Ok(id),
                Err(RegisterFailure::Final(d)) => return Err(AgentError::Registration(d)),
                Err(RegisterFailure::Identity(e)) => return Err(e.into()),
                Err(RegisterFailure::Retry(d)) => match retries.after_failure(|| self.env.entropy.unit_f64()) {
                    Some(wait) => crate::time::sleep(wait).await,
                    None => return Err(AgentError::Registration(d)),
                },
            }
        }
    }

    /// Registration reads the certificate trust list over port 80 (NET-REG;
    /// Windows' root update). Unreachable: registration fails. A root it
    /// lists that the host lacks is reported ahead of any root change.
    async fn check_trust_list(&self, trust: &Trust) -> Result<(), Diagnostic> {
        let url = HttpUrl { host: self.names.trust_list.clone(), port: 80, path: TRUST_LIST_PATH.into() };
        let resp = crate::http::plain_request(&self.installer, &url, None, self.config.request_timeout, 64 * 1024)
            .await
            .map_err(|e| e.diagnostic())?;
        if resp.status != 200 {
            return Err(Diagnostic::new(
                code::NET_REG_TRUST_LIST,
                Some(EventId::Networking),
                format!("the certificate trust list at {url} answered HTTP {}", resp.status),
                format!("allow {} on TCP 80 without a proxy answering in its place", self.names.trust_list),
            ));
        }
        let have: Vec<String> = trust.host_roots.iter().map(|r| sha256_hex(r.as_ref())).collect();
        for line in String::from_utf8_lossy(&resp.body).lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !have.iter().any(|h| h == line) {
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(code::TLS_ROOTS_MISSING_ROOT, None,
                    format!("the certificate trust list names a root the service uses that this host does not trust (SHA-256 {line})"),
                    "install the service's current roots before the service moves to them",
                )));
            }
        }
        Ok(())
    }

    async fn register_once(&self, creds: &Credentials, tls: &ServiceTls) -> Result<Identity, RegisterFailure> {
        self.check_trust_list(&tls.trust).await.map_err(RegisterFailure::Retry)?;
        let login: LoginResponse = self
            .call_from(&self.installer, &self.names.login, tls)
            .post_json(
                &format!("/{}/oauth2/token", creds.directory.as_deref().unwrap_or(&self.config.tenant_id)),
                &LoginRequest {
                    username: creds.username.clone(),
                    password: creds.password.clone(),
                    mfa: creds.interactive,
                },
                None,
            )
            .await
            .map_err(|e| self.in_this_cloud(RegisterFailure::from_call(e)))?;
        let key = identity::generate_key(self.env.entropy.as_ref()).map_err(RegisterFailure::Identity)?;
        let csr_pem = identity::csr_pem(&key, &self.config.machine_name).map_err(RegisterFailure::Identity)?;
        let version = self.version.borrow().clone();
        let reg: RegisterResponse = self
            .call_from(&self.installer, &self.names.registration, tls)
            .post_json(
                "/register",
                &RegisterRequest { csr_pem, machine_name: self.config.machine_name.clone(), version },
                Some(&login.access_token),
            )
            .await
            .map_err(RegisterFailure::from_call)?;
        let identity = Identity::new(reg.connector_id, login.tenant_id, &key, reg.certificate_pem);
        identity.client_auth().map_err(|e| {
            RegisterFailure::Final(Diagnostic::new(
                code::REG_BAD_CERTIFICATE,
                Some(EventId::Certificate),
                format!("the registration service returned an unusable certificate: {e}"),
                "retry registration; report the service response if it persists",
            ))
        })?;
        identity.save(&self.config.install_dir).map_err(RegisterFailure::Identity)?;
        // The serial as the certificate carries it (hex), as renewal reports it.
        let serial = identity.certificate().map(|c| c.serial).unwrap_or_default();
        self.env.emit(AgentEvent::Registered { connector_id: identity.connector_id.clone(), cert_serial: serial });
        Ok(identity)
    }

    /// A sign-in that does not know the tenant (REG-GOV) means the tenant
    /// lives in the other cloud. The service's wording suggests the
    /// government install parameter; installed with it already, the advice
    /// is the reverse.
    fn in_this_cloud(&self, failure: RegisterFailure) -> RegisterFailure {
        match failure {
            RegisterFailure::Final(d)
                if d.requirement == code::REG_GOV_TENANT_NOT_IN_CLOUD.requirement
                    && self.names.cloud == Environment::UsGov =>
            {
                let found = Diagnostic::new(
                    code::REG_GOV_TENANT_NOT_IN_GOV_CLOUD,
                    None,
                    format!("{} (installed with ENVIRONMENTNAME=\"{}\")", d.message, Environment::GOV_ENVIRONMENT_NAME),
                    "the tenant is not in the US Government cloud: install without ENVIRONMENTNAME, or check the tenant ID",
                );
                // The service's event ID stays, whatever it was.
                RegisterFailure::Final(Diagnostic { event_id: d.event_id, ..found })
            }
            other => other,
        }
    }

    /// Stops the agent when its client certificate has expired: the service
    /// will not take it, and only a new registration helps.
    pub(super) fn check_not_expired(&self, identity: &Identity) -> Result<(), AgentError> {
        let cert = identity.certificate().map_err(AgentError::Tls)?;
        let now = self.env.clock.now();
        if now >= cert.not_after {
            let ago = crate::diag::human_duration(now.duration_since(cert.not_after).unwrap_or_default());
            return Err(AgentError::CertificateExpired(Diagnostic::new(code::TLS_CLIENT_EXPIRED, Some(EventId::TrustExpired),
                format!(
                    "re-registration failed: trust certificate expired on {} ({ago} ago): it was not renewed in time (the connector was offline past its lifetime, or its renewals failed) and the connector stops",
                    httpdate::fmt_http_date(cert.not_after)
                ),
                "register the connector again (run the registration with a Global Administrator's sign-in)",
            )));
        }
        Ok(())
    }

    /// Renews the client certificate over mTLS once
    /// [`AgentConfig::renew_after_fraction`] of its lifetime has passed.
    /// A failure is reported and retried at the next check: the cause
    /// (the network, TLS or service finding, as on every other path) and
    /// what is at stake (TLS-CLIENT.renewal-failed, with the expiry).
    pub(super) async fn renew_if_due(&self, identity: &Identity, tls: &ServiceTls) -> Option<Identity> {
        let cert = identity.certificate().ok()?;
        let now = self.env.clock.now();
        if !renewal_due(cert.not_before, cert.not_after, now, self.config.renew_after_fraction) {
            return None;
        }
        match self.renew(identity, tls).await {
            Ok((renewed, info)) => {
                let valid_for_h = info.not_after.duration_since(now).unwrap_or_default().as_secs() / 3600;
                self.env.emit(AgentEvent::CertificateRenewed { cert_serial: info.serial, valid_for_h });
                Some(renewed)
            }
            Err(failure) => {
                let why = match failure {
                    RenewFailure::Service(cause) => {
                        let why = format!("{}: {} (reported with it)", self.names.renewtrust, cause.code);
                        self.env.emit(AgentEvent::Diagnostic(cause));
                        why
                    }
                    RenewFailure::Local(why) => why,
                };
                let left = diag::human_duration(cert.not_after.duration_since(now).unwrap_or_default());
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(code::TLS_CLIENT_RENEWAL_FAILED, Some(EventId::Certificate),
                    format!("client certificate renewal failed: {why}; the certificate expires in {left}"),
                    "fix the cause reported with it: the connector retries at the next trust-renewal check, and must succeed before the certificate expires (or be registered again)",
                )));
                None
            }
        }
    }

    /// A new key, a CSR, the renewal call, the new identity saved.
    async fn renew(
        &self,
        identity: &Identity,
        tls: &ServiceTls,
    ) -> Result<(Identity, crate::pki::cert::CertInfo), RenewFailure> {
        let local = |e: String| RenewFailure::Local(e);
        let key = identity::generate_key(self.env.entropy.as_ref()).map_err(|e| local(e.to_string()))?;
        let csr_pem = identity::csr_pem(&key, &self.config.machine_name).map_err(|e| local(e.to_string()))?;
        let request = RenewRequest { connector_id: identity.connector_id.clone(), csr_pem };
        let resp: RenewResponse = self
            .call(&self.names.renewtrust, tls)
            .post_json("/renew", &request, None)
            .await
            .map_err(|e| RenewFailure::Service(e.diagnostic()))?;
        let renewed = identity.renewed(&key, resp.certificate_pem);
        let info = renewed.certificate().map_err(local)?;
        renewed.save(&self.config.install_dir).map_err(|e| local(e.to_string()))?;
        Ok((renewed, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_retries_network_trouble_with_a_growing_wait_then_gives_up() {
        let mut retries = Retries::new(4);
        let waits: Vec<Option<Duration>> = (0..4).map(|_| retries.after_failure(|| 0.5)).collect();
        let s = Duration::from_secs;
        assert_eq!(waits, [Some(s(3)), Some(s(6)), Some(s(12)), None]);
        // The jitter drawn is the one used: the most is 20 % over.
        let mut drawn = 0;
        let wait = Retries::new(2).after_failure(|| {
            drawn += 1;
            1.0
        });
        assert_eq!((wait, drawn), (Some(Duration::from_millis(3600)), 1));
        // One attempt in all: no retry, and no random number drawn.
        let mut once = Retries::new(1);
        assert_eq!(once.after_failure(|| panic!("no wait, no jitter")), None);
    }

    #[test]
    fn only_a_services_answer_is_final() {
        let refused = CallError::Status {
            host: "login.microsoftonline.com".into(),
            status: 400,
            code: "invalid_grant".into(),
            message: "bad password".into(),
        };
        assert!(matches!(RegisterFailure::from_call(refused), RegisterFailure::Final(_)));
        let slow =
            CallError::Timeout { host: "login.microsoftonline.com".into(), port: 443, timeout: Duration::from_secs(5) };
        assert!(matches!(RegisterFailure::from_call(slow), RegisterFailure::Retry(_)));
    }

    #[test]
    fn renewal_is_due_once_the_fraction_of_the_lifetime_has_passed() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let end = start + 100 * day;
        assert!(!renewal_due(start, end, start + 79 * day, 0.8));
        assert!(renewal_due(start, end, start + 80 * day, 0.8));
        assert!(renewal_due(start, end, end + day, 0.8), "past expiry is due (the expiry check stops it)");
        assert!(!renewal_due(start, end, start - day, 0.8), "a clock behind the start is no age");
        assert!(!renewal_due(end, start, end, 0.8), "dates the wrong way round are never due");
    }
}
