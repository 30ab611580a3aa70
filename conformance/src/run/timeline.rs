//! The timeline: the scenario's events, applied to the world at their
//! times (hosts crashed and started, firewall rules and DNS faults added and
//! lifted, the PKI changed, connectors upgraded).

use connector::install::Installation;
use connector::service::ServiceState;
use relay_sim::network::{Conn, NETWORK_SERVICE};
use relay_sim::pki::Generation;
use relay_sim::world::Action;

use super::edits::{apply_dns, FirewallEdits};
use super::world::{Peer, World};
use super::{PROXY_HOST, REVOCATION_HOST};
use crate::scenario::{FeedChange, HostChange, RelayVerb, TimelineEvent};

/// Applies one timeline event to the world.
pub(super) fn apply(event: &TimelineEvent, sim: &mut turmoil::Sim<'_>, w: &World) -> Result<(), String> {
    match event {
        TimelineEvent::RestartRelay => w.relay_hosts.iter().for_each(|h| sim.bounce(h.as_str())),
        TimelineEvent::CrashRelay => w.relay_hosts.iter().for_each(|h| sim.crash(h.as_str())),
        TimelineEvent::StartRelay => w.relay_hosts.iter().for_each(|h| sim.bounce(h.as_str())),
        TimelineEvent::BlockPort(_)
        | TimelineEvent::RejectPort(_)
        | TimelineEvent::UnblockPort(_)
        | TimelineEvent::BlockHost(_)
        | TimelineEvent::RejectHost(_)
        | TimelineEvent::UnblockHost(_)
        | TimelineEvent::AtProxy(_)
        | TimelineEvent::DnsFail(_)
        | TimelineEvent::DnsSinkhole(_)
        | TimelineEvent::DnsRestore(_) => w.network.apply(event),
        TimelineEvent::StopBackend(n) | TimelineEvent::StartBackend(n) => {
            if let Some(switch) = w.backend_switches.get(n) {
                switch.send_replace(matches!(event, TimelineEvent::StartBackend(_)));
            }
        }
        TimelineEvent::RestartConnector(n) | TimelineEvent::StartConnector(n) => sim.bounce(n.as_str()),
        TimelineEvent::StopConnector(n) => sim.crash(n.as_str()),
        TimelineEvent::RotateRoot => w.cloud.rotate_root(Generation::DigicertG2),
        TimelineEvent::RevokeRelayCertificate => {
            let now = w.cloud.now();
            for h in &w.relay_hosts {
                if w.cloud.with_pki(|p| p.revoke_server(h, now)) {
                    w.cloud.emit(relay_sim::event::CloudEvent::ServerRevoked { host: h.clone() });
                }
            }
        }
        TimelineEvent::RevokeConnector(n) => {
            for rec in w.cloud.connectors().into_iter().filter(|r| &r.machine == n) {
                w.cloud.revoke_connector(&rec.id);
            }
        }
        TimelineEvent::StopProxy => sim.crash(PROXY_HOST),
        TimelineEvent::StartProxy => sim.bounce(PROXY_HOST),
        TimelineEvent::StopRevocationServers => sim.crash(REVOCATION_HOST),
        TimelineEvent::StartRevocationServers => sim.bounce(REVOCATION_HOST),
        TimelineEvent::StopRevocationServer(n) => {
            w.down_names.borrow_mut().insert(n.clone());
        }
        TimelineEvent::StartRevocationServer(n) => {
            w.down_names.borrow_mut().remove(n);
        }
        TimelineEvent::OneRelay(verb, which) => {
            let host = relay_named(w, which)?;
            match verb {
                RelayVerb::Crash => sim.crash(host),
                RelayVerb::Restart | RelayVerb::Start => sim.bounce(host),
            }
        }
        TimelineEvent::AdvanceIpWeek => w.addresses.borrow_mut().week += 1,
        TimelineEvent::StopUpdater(n) | TimelineEvent::StartUpdater(n) => {
            if let Some(switch) = w.updater_switches.get(n) {
                let start = matches!(event, TimelineEvent::StartUpdater(_));
                switch.send_replace(if start { ServiceState::Running } else { ServiceState::Stopped });
            }
        }
        TimelineEvent::UpgradeConnector(n) | TimelineEvent::UpgradeConnectorKeepingFolders(n) => {
            let (Some(dir), Some(next)) = (w.install_dirs.get(n), w.reinstall_versions.get(n)) else { return Ok(()) };
            sim.crash(n.as_str());
            let installation = Installation::at(dir.path());
            let uninstalled = installation.uninstall().and_then(|()| {
                if matches!(event, TimelineEvent::UpgradeConnector(_)) {
                    installation.delete_folders()
                } else {
                    Ok(())
                }
            });
            uninstalled.map_err(|e| format!("{event}: {e}"))?;
            *next.borrow_mut() = Some(connector::agent::DEFAULT_VERSION.to_string());
            sim.bounce(n.as_str());
        }
        TimelineEvent::Host { name, change } => change_host(sim, w, name, change),
        TimelineEvent::Feed(change) => w.cloud.with_feed(|feed| change_feed(feed, change)),
        TimelineEvent::MoveTenant(n) => w.cloud.move_tenant(*n),
        TimelineEvent::PinGroup(group, region) => w.cloud.pin_group(group, region),
        TimelineEvent::OnHost(name, inner) => {
            let resolver = w.host_dns.get(name).is_some_and(|dns| apply_dns(dns, inner));
            if let (false, Some(firewall)) = (resolver, w.host_firewalls.get(name)) {
                firewall.apply(inner);
                cut_or_mend(sim, w, name, inner, firewall);
            }
        }
    }
    Ok(())
}

/// A host firewall, unlike the perimeter's, applies a rule added mid-run to
/// connections already open as well (Windows' filtering platform checks
/// them again when its rules change): the links to the destinations the
/// event's rule touches are cut while a rule the timeline added refuses
/// them, and mended once none does. The cut is the whole link between the
/// two hosts, and a refusal stalls rather than resets: connections find
/// out by their keepalives. (CDN names served by one host are cut
/// together.)
fn cut_or_mend(sim: &mut turmoil::Sim<'_>, w: &World, name: &str, rule: &TimelineEvent, firewall: &FirewallEdits) {
    for peer in w.peers.iter().filter(|p| touches(rule, p)) {
        let conn = Conn { host: &peer.name, addr: None, port: peer.port, account: NETWORK_SERVICE };
        if firewall.timeline_verdict(&conn) == Action::Allow {
            sim.repair(name, peer.host.as_str());
        } else {
            sim.partition(name, peer.host.as_str());
        }
    }
}

/// Whether a firewall event's rule is about `peer`.
fn touches(rule: &TimelineEvent, peer: &Peer) -> bool {
    match rule {
        TimelineEvent::BlockPort(p) | TimelineEvent::RejectPort(p) | TimelineEvent::UnblockPort(p) => *p == peer.port,
        TimelineEvent::BlockHost(h) | TimelineEvent::RejectHost(h) | TimelineEvent::UnblockHost(h) => {
            h.matches(&peer.name)
        }
        _ => false,
    }
}

/// Changes what the release feed offers. Offering a release to a group
/// starts (or widens) its staged rollout: groups not listed no longer get it.
fn change_feed(feed: &mut relay_sim::feed::Feed, change: &FeedChange) {
    match change {
        FeedChange::Publish(v) => {
            feed.withheld.remove(v);
        }
        FeedChange::Withdraw(v) => {
            feed.withheld.insert(v.clone());
        }
        FeedChange::OfferTo(v, group) => {
            feed.rollout.entry(v.clone()).or_default().insert(group.clone());
        }
        FeedChange::OfferToAll(v) => {
            feed.rollout.remove(v);
        }
    }
}

/// The relay host `which` names: its number (from 1) or its name.
fn relay_named<'w>(w: &'w World, which: &str) -> Result<&'w str, String> {
    let by_number = which.parse::<usize>().ok().and_then(|i| i.checked_sub(1)).and_then(|i| w.relay_hosts.get(i));
    by_number.or_else(|| w.relay_hosts.iter().find(|h| h.eq_ignore_ascii_case(which))).map(String::as_str).ok_or_else(
        || format!("no relay {which:?}: the relays are {:?} (or 1 to {})", w.relay_hosts, w.relay_hosts.len()),
    )
}

/// Changes a connector's server; the connector finds out for itself.
fn change_host(sim: &mut turmoil::Sim<'_>, w: &World, name: &str, change: &HostChange) {
    let Some(server) = w.servers.get(name) else { return };
    match change {
        HostChange::Install(p) => server.change(|h| {
            if !h.installed.contains(p) {
                h.installed.push(*p);
            }
        }),
        HostChange::Uninstall(p) => server.change(|h| h.installed.retain(|q| q != p)),
        HostChange::DisableTls12 | HostChange::EnableTls12 => server.change(|h| {
            let keys = match change {
                HostChange::DisableTls12 => connector::host::TLS12_CLIENT_DISABLED_REG,
                _ => connector::host::SPEC_TLS12_REG,
            };
            // What was in effect stays so until the server restarts.
            if !h.restart_pending {
                h.registry_in_effect = h.registry.clone();
            }
            h.registry = Some(keys.to_string());
            h.restart_pending = true;
        }),
        HostChange::Reboot => {
            server.change(|h| {
                h.restart_pending = false;
                h.registry_in_effect = None;
            });
            sim.bounce(name);
        }
        HostChange::DotNet(release) => server.change(|h| h.dotnet_release = *release),
        HostChange::SetClock(skew) => {
            if let Some(s) = w.clock_skews.get(name) {
                s.store(skew.ahead_s, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}
