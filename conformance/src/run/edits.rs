//! The handles through which the timeline edits a running world's network:
//! the firewalls (only the timeline's own rules) and the resolvers' faults.
//! The world builds them; the timeline acts through them.

use std::cell::RefCell;
use std::rc::Rc;

use relay_sim::network::{Conn, Owner};
use relay_sim::world::{Action, Dns, Firewall, Rule};

use crate::scenario::TimelineEvent;

/// What the timeline changes in the network while a run goes: rules it
/// adds to and removes from the perimeter and the proxy's egress (only its
/// own: the world file's rules stay), and the world's DNS faults (`dns
/// restore` clears a suffix's faults, the world file's included).
pub(super) struct NetworkEdits {
    pub(super) perimeter: FirewallEdits,
    pub(super) proxy_egress: FirewallEdits,
    pub(super) dns: Rc<RefCell<Dns>>,
    /// The proxy's own resolver.
    pub(super) proxy_dns: Rc<RefCell<Dns>>,
}

impl NetworkEdits {
    pub(super) fn apply(&self, event: &TimelineEvent) {
        match event {
            TimelineEvent::AtProxy(inner) => {
                if !apply_dns(&self.proxy_dns, inner) {
                    self.proxy_egress.apply(inner);
                }
            }
            other => {
                if !apply_dns(&self.dns, other) {
                    self.perimeter.apply(other);
                }
            }
        }
    }
}

/// Applies a DNS event to a resolver's faults (`dns restore` clears the
/// suffix's faults, those the world file set included); whether it was one.
pub(super) fn apply_dns(dns: &RefCell<Dns>, event: &TimelineEvent) -> bool {
    let mut d = dns.borrow_mut();
    match event {
        TimelineEvent::DnsFail(h) => d.fail.push(h.clone()),
        TimelineEvent::DnsSinkhole(h) => d.sinkhole.push(h.clone()),
        TimelineEvent::DnsRestore(h) => {
            d.fail.retain(|s| s != h);
            d.sinkhole.retain(|s| s != h);
        }
        _ => return false,
    }
    true
}

/// One firewall the timeline edits. Its rules are marked as the
/// timeline's, so that "unblock" lifts only those, never a rule of the
/// world file that reads the same.
pub(super) struct FirewallEdits {
    firewall: Rc<RefCell<Firewall>>,
}

impl FirewallEdits {
    pub(super) fn new(firewall: Rc<RefCell<Firewall>>) -> Self {
        FirewallEdits { firewall }
    }

    pub(super) fn apply(&self, event: &TimelineEvent) {
        match event {
            TimelineEvent::BlockPort(p) => self.add(Rule::port(Action::Drop, *p)),
            TimelineEvent::RejectPort(p) => self.add(Rule::port(Action::Reject, *p)),
            TimelineEvent::BlockHost(h) => self.add(Rule::host(Action::Drop, h.clone())),
            TimelineEvent::RejectHost(h) => self.add(Rule::host(Action::Reject, h.clone())),
            TimelineEvent::UnblockPort(p) => self.remove(|r| r.port == Some(*p)),
            TimelineEvent::UnblockHost(h) => self.remove(|r| r.host_suffix.as_ref() == Some(h)),
            _ => {}
        }
    }

    /// What the timeline's own rules say of `conn` (allow when none
    /// matches): the world file's rules were there before any connection
    /// opened, and only a rule added since can cut one.
    pub(super) fn timeline_verdict(&self, conn: &Conn<'_>) -> Action {
        let fw = self.firewall.borrow();
        fw.rules
            .iter()
            .filter(|r| r.owner == Owner::Timeline)
            .find(|r| r.matches(conn))
            .map_or(Action::Allow, |r| r.action)
    }

    fn add(&self, rule: Rule) {
        self.firewall.borrow_mut().rules.insert(0, Rule { owner: Owner::Timeline, ..rule });
    }

    fn remove(&self, which: impl Fn(&Rule) -> bool) {
        self.firewall.borrow_mut().rules.retain(|r| !(r.owner == Owner::Timeline && which(r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unblock_lifts_the_timelines_rule_and_keeps_the_world_files() {
        let world_rule = Rule::port(Action::Drop, 443);
        let fw = Rc::new(RefCell::new(Firewall { rules: vec![world_rule.clone()] }));
        let edits = FirewallEdits::new(fw.clone());
        edits.apply(&TimelineEvent::BlockPort(443));
        assert_eq!(fw.borrow().rules.len(), 2);
        edits.apply(&TimelineEvent::UnblockPort(443));
        assert_eq!(fw.borrow().rules, vec![world_rule], "the world file's drop stays");
    }
}
