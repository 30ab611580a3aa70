//! Private backends the connector publishes: small hyper servers with a
//! behaviour (echo, slow, failing) and a log of every request they served,
//! which is how scenarios prove that no request ran twice.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::server::{respond, serve_plain, Body, ConnInfo, Listener};

/// Header a load generator sets to a unique id per user request.
pub const REQUEST_MARK: &str = "x-user-request";

/// How a backend answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Behaviour {
    /// 200 with a body naming the backend, method, path and request mark.
    Echo,
    /// Like echo, after a delay.
    Slow { delay_ms: u64 },
    /// Always this status.
    Status { code: u16 },
}

/// How many times each request mark was served (BTreeMap: ordered).
#[derive(Debug, Default, Clone)]
pub struct ServedLog(Rc<RefCell<BTreeMap<String, u32>>>);

impl ServedLog {
    pub fn record(&self, mark: &str) {
        *self.0.borrow_mut().entry(mark.to_string()).or_default() += 1;
    }

    /// Marks served more than once, with their counts.
    pub fn duplicates(&self) -> Vec<(String, u32)> {
        self.0.borrow().iter().filter(|(_, n)| **n > 1).map(|(k, n)| (k.clone(), *n)).collect()
    }

    pub fn total(&self) -> u64 {
        self.0.borrow().values().map(|n| u64::from(*n)).sum()
    }
}

/// Serves a backend named `name` on `listener`.
pub async fn serve(name: String, behaviour: Behaviour, log: ServedLog, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(name.clone(), behaviour.clone(), log.clone(), req)).await;
}

async fn handle(name: String, behaviour: Behaviour, log: ServedLog, req: Request<Incoming>) -> Response<Body> {
    let mark = req
        .headers()
        .get(REQUEST_MARK)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| req.uri().path().to_string());
    log.record(&mark);
    let text = format!("{name}: {} {} mark={mark}\n", req.method(), req.uri());
    match behaviour {
        Behaviour::Echo => respond(200, "text/plain", text),
        Behaviour::Slow { delay_ms } => {
            connector::time::sleep(Duration::from_millis(delay_ms)).await;
            respond(200, "text/plain", text)
        }
        Behaviour::Status { code } => respond(code, "text/plain", format!("{name}: status {code}\n")),
    }
}
