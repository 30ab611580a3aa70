//! The product's two Windows services (OPS-SERVICES): the connector
//! service serves, the updater service keeps it current. Both must be
//! Running. Whoever hosts the agent (the service control manager; in a
//! simulation, the scenario's timeline) starts and stops the updater
//! through a [`ServiceSwitch`]; the connector service is the agent's own
//! process and stops with it.

use serde::Serialize;
use tokio::sync::watch;

/// A service's state as the service control manager reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Running,
    Stopped,
}

/// The agent's view of one service's desired state.
#[derive(Debug, Clone)]
pub struct ServiceSwitch(watch::Receiver<ServiceState>);

impl ServiceSwitch {
    /// A switch and its control: send on the sender to start or stop.
    pub fn new(initial: ServiceState) -> (watch::Sender<ServiceState>, ServiceSwitch) {
        let (tx, rx) = watch::channel(initial);
        (tx, ServiceSwitch(rx))
    }

    /// A service nobody stops.
    pub fn always_running() -> ServiceSwitch {
        ServiceSwitch::new(ServiceState::Running).1
    }

    pub fn state(&self) -> ServiceState {
        *self.0.borrow()
    }

    /// Waits until the service is started again; never returns if nobody
    /// can start it any more.
    pub async fn running(&mut self) {
        if self.0.wait_for(|s| *s == ServiceState::Running).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Default for ServiceSwitch {
    fn default() -> Self {
        ServiceSwitch::always_running()
    }
}
