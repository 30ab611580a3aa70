//! The portal's view of the tenant's connectors: active while they
//! bootstrap (heartbeat) at least hourly, inactive after an hour without,
//! removed after ten days inactive. Runs as a cloud-internal task that
//! wakes exactly when the next change is due.

use std::rc::Rc;
use std::time::Duration;

use crate::cloud::Cloud;

/// Longest sleep between checks when nothing is due (new registrations
/// are picked up by then).
const IDLE_CHECK: Duration = Duration::from_secs(3600);

pub async fn run(cloud: Rc<Cloud>) {
    loop {
        let next = cloud.update_status();
        let now = cloud.now();
        let wait = next.map_or(IDLE_CHECK, |t| t.duration_since(now).unwrap_or(Duration::ZERO)).min(IDLE_CHECK);
        // A moment past the deadline, so the change is due when it wakes.
        connector::time::sleep(wait + Duration::from_millis(1)).await;
    }
}
