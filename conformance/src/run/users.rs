//! The simulated users: the load plan from the scenario's `[[load]]`
//! entries, and each request's answer judged (status, body intact, the
//! status its load expects) into the trace.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_sim::backend::REQUEST_MARK;

use super::INGRESS_PORT;
use crate::scenario::Scenario;
use crate::trace::{Trace, UserEvent, What};

/// How long a simulated user waits for an answer.
const USER_TIMEOUT: Duration = Duration::from_secs(120);

/// One planned user request.
pub(super) struct Planned {
    at: Duration,
    host: String,
    path: String,
    mark: String,
    upload_bytes: usize,
    header_bytes: usize,
    /// The app's backend echoes what it received (its SHA-256): a success
    /// without that header did not come from it whole.
    echoes: bool,
    /// The load's `expect_status`.
    expect_status: Option<u16>,
    /// Who signs in first, with which password.
    sign_in: Option<(String, String)>,
    /// The identity header the user forges, if any.
    forged: Option<String>,
    /// Whom the backend must be told the user is (header-based single
    /// sign-on with a user signed in); otherwise it must be told no one.
    principal: Option<String>,
}

pub(super) fn user_plan(s: &Scenario) -> Vec<Planned> {
    let mut plan = Vec::new();
    for (li, load) in s.load.iter().enumerate() {
        let app = load.app.get_ref();
        let backend = s.world.apps.iter().find(|a| &a.name == app).map(|a| a.backend.get_ref().as_str());
        let echoes = s.world.backends.iter().find(|b| Some(b.name.as_str()) == backend).is_some_and(|b| {
            matches!(b.behaviour, relay_sim::backend::Behaviour::Echo | relay_sim::backend::Behaviour::Slow { .. })
        });
        let app_spec = s.world.apps.iter().find(|a| &a.name == app);
        let sso = app_spec.is_some_and(|a| a.sso == relay_sim::directory::SingleSignOn::Headers);
        let password = |user: &String| {
            let known = s.world.users.iter().find(|u| u.upn.eq_ignore_ascii_case(user)).map(|u| u.password.clone());
            load.password.clone().or(known).unwrap_or_default()
        };
        let sign_in = load.user.as_ref().map(|u| (u.clone(), password(u)));
        // The backend is told the directory's spelling of the name.
        let in_directory =
            |u: &String| s.world.users.iter().find(|d| d.upn.eq_ignore_ascii_case(u)).map(|d| d.upn.clone());
        let principal = load.user.as_ref().filter(|_| sso).map(|u| in_directory(u).unwrap_or_else(|| u.clone()));
        for i in 0..load.requests {
            plan.push(Planned {
                at: load.start.0 + load.interval.0 * i,
                host: format!("{app}-{}.msappproxy.net", s.world.tenant),
                path: load.path.clone(),
                mark: format!("{app}-{li}-{i}"),
                upload_bytes: load.upload_bytes,
                header_bytes: load.header_bytes,
                echoes,
                expect_status: load.expect_status.as_ref().map(|c| *c.get_ref()),
                sign_in: sign_in.clone(),
                forged: load.forged_principal.clone(),
                principal: principal.clone(),
            });
        }
    }
    plan.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.mark.cmp(&b.mark)));
    plan
}

/// Sends each planned request at its time and records what came back.
pub(super) async fn users(plan: Vec<Planned>, ingress: String, trace: Trace) {
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for p in plan {
        connector::time::sleep_until(start + p.at).await;
        trace.record("users", What::User(UserEvent::Sent { mark: p.mark.clone() }));
        let (ingress, trace) = (ingress.clone(), trace.clone());
        handles.push(tokio::task::spawn_local(async move {
            let what = match connector::time::timeout(USER_TIMEOUT, user_request(&ingress, &p)).await {
                Ok(Ok(answer)) => answer.judge(p.mark, p.expect_status),
                Ok(Err(error)) => UserEvent::Failed { mark: p.mark, error },
                Err(_) => UserEvent::Failed { mark: p.mark, error: "no answer within 120s".into() },
            };
            trace.record("users", What::User(what));
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

/// What a user got.
struct Answer {
    status: u16,
    relay_error: Option<String>,
    /// For a success: how its body differs from what was sent or announced.
    wrong: Option<String>,
}

impl Answer {
    /// What the trace records of it, against the status expected if any.
    fn judge(self, mark: String, expected: Option<u16>) -> UserEvent {
        let Answer { status, relay_error, wrong } = self;
        match (wrong, expected) {
            (Some(what), _) => UserEvent::Corrupted { mark, status, what },
            (None, Some(e)) if e == status => UserEvent::Expected { mark, status, relay_error },
            (None, Some(expected)) => UserEvent::Unexpected { mark, status, expected },
            (None, None) => UserEvent::Answered { mark, status, relay_error },
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>;

async fn connect(ingress: &str) -> Result<Sender, String> {
    let stream =
        turmoil::net::TcpStream::connect((ingress, INGRESS_PORT)).await.map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Signs in at the app's host as the browser does when pre-authentication
/// sends it to sign in: the session cookie, or the refusal the user sees.
async fn sign_in(
    sender: &mut Sender,
    p: &Planned,
    user: &str,
    password: &str,
) -> Result<Result<String, Answer>, String> {
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(relay_sim::services::preauth::SIGN_IN_PATH)
        .header(http::header::HOST, p.host.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("sign-in: {e}"))?;
    let status = resp.status().as_u16();
    let relay_error = resp.headers().get("x-relay-error").and_then(|v| v.to_str().ok()).map(str::to_string);
    let cookie = resp.headers().get(http::header::SET_COOKIE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let _ = resp.into_body().collect().await;
    Ok(match cookie.and_then(|c| c.split(';').next().map(str::to_string)) {
        Some(session) if status / 100 == 2 => Ok(session),
        // A success that opens no session lets no one in.
        None if status / 100 == 2 => {
            Err(Answer { status, relay_error, wrong: Some("the sign-in succeeded without a session".into()) })
        }
        _ => Err(Answer { status, relay_error, wrong: None }),
    })
}

async fn user_request(ingress: &str, p: &Planned) -> Result<Answer, String> {
    let mut sender = connect(ingress).await?;
    let session = match &p.sign_in {
        Some((user, password)) => match sign_in(&mut sender, p, user, password).await? {
            Ok(cookie) => Some(cookie),
            Err(refused) => return Ok(refused),
        },
        None => None,
    };
    let upload = relay_sim::pattern::pattern(p.upload_bytes);
    let mut req = http::Request::builder()
        .method(if p.upload_bytes > 0 { http::Method::POST } else { http::Method::GET })
        .uri(p.path.as_str())
        .header(http::header::HOST, p.host.as_str())
        .header(REQUEST_MARK, p.mark.as_str());
    let big = (p.header_bytes > 0).then(|| format!("big={}", "c".repeat(p.header_bytes)));
    let cookies: Vec<&str> = big.iter().chain(session.iter()).map(String::as_str).collect();
    if !cookies.is_empty() {
        req = req.header(http::header::COOKIE, cookies.join("; "));
    }
    if let Some(f) = &p.forged {
        req = req.header(relay_sim::directory::PRINCIPAL_HEADER, f.as_str());
    }
    let req = req.body(Full::new(upload.clone())).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let relay_error = header("x-relay-error");
    let (sent_digest, announced) = (header("x-body-sha256"), header("x-response-sha256"));
    let seen = header(relay_sim::backend::SEEN_PRINCIPAL);
    // Digested as it arrives, never held whole.
    let mut body = resp.into_body();
    let mut digest = relay_sim::pattern::BodyDigest::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| format!("body: {e}"))?.into_data() {
            digest.update(&data);
        }
    }
    let received = digest.len();
    let mut wrong = None;
    if (200..300).contains(&status) {
        match sent_digest {
            Some(d) if d != relay_sim::pattern::pattern_digest(upload.len()) => {
                wrong = Some(format!("the backend received other bytes than the {} sent", upload.len()));
            }
            None if p.echoes => wrong = Some("the answer lacks the echo backend's x-body-sha256".into()),
            _ => {}
        }
        if p.echoes && seen != p.principal {
            let told = |who: &Option<String>| who.clone().unwrap_or_else(|| "no one".into());
            wrong = Some(format!("the backend was told the user is {}, not {}", told(&seen), told(&p.principal)));
        }
        if announced.is_some_and(|d| d != digest.finish()) {
            wrong = Some(format!("the response body ({received} bytes) is not the one the backend sent"));
        }
    }
    Ok(Answer { status, relay_error, wrong })
}
