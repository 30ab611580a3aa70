//! The way out of each connector host, in the order the world applies it
//! (for `connsim repro`): which account, which firewalls, resolvers, the
//! explicit proxy and the inspection box a connection meets before it
//! reaches the service. Read with the trace, it says why an event happened
//! where it did.

use crate::scenario::{ConnectorSpec, Scenario};
use relay_sim::world::{Dns, Rule};

/// One line per connector host.
pub fn describe(s: &Scenario) -> Vec<String> {
    s.world.connectors.iter().map(|c| format!("{}: {}", c.name, steps(s, c).join(" -> "))).collect()
}

fn steps(s: &Scenario, c: &ConnectorSpec) -> Vec<String> {
    let w = &s.world;
    let account = c.account.clone().unwrap_or_else(|| "network-service".into());
    let mut out = vec![match &c.installed_by {
        Some(setup) => format!("services as {account}, registration as {setup}"),
        None => format!("as {account}"),
    }];
    out.extend(rules("host firewall", &c.host_firewall));
    out.extend(resolver("host resolver", &c.dns));
    out.extend(rules("perimeter firewall", &w.firewall));
    if let Some(allow) = &w.allow_list {
        out.push(format!("allow-list of the spec minus {:?}", allow.minus));
    }
    match (&w.proxy, c.use_proxy) {
        (Some(p), true) => {
            let auth = if p.auth { ", demands authentication" } else { "" };
            out.push(format!("proxy {}:{}{auth}", crate::run::PROXY_HOST, p.port));
            out.extend(rules("proxy's own list", &p.allow));
            out.extend(resolver("proxy's resolver", &p.dns));
            out.extend(rules("proxy egress firewall", &p.egress));
        }
        _ => out.extend(resolver("world DNS", &w.dns)),
    }
    if let (Some(_), true) = (&w.proxy, c.use_proxy) {
        out.extend(resolver("world DNS", &w.dns));
    }
    if let Some(i) = &w.inspection {
        out.push(format!("inspection box for {:?} ({:?})", i.hosts, i.mode));
    }
    out.push("service".into());
    out
}

fn rules(what: &str, rules: &[Rule]) -> Option<String> {
    (!rules.is_empty()).then(|| format!("{what} ({} rule{})", rules.len(), if rules.len() == 1 { "" } else { "s" }))
}

fn resolver(what: &str, dns: &Dns) -> Option<String> {
    let faults = dns.fail.len() + dns.sinkhole.len();
    (faults > 0).then(|| format!("{what} ({} failing, {} sinkholed)", dns.fail.len(), dns.sinkhole.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_each_middlebox_in_order() {
        let toml = "name = \"x\"\nduration = \"1m\"\n[world]\nadmin = { user = \"a@contoso.com\", password = \"p\" }\nproxy = { egress = [{ action = \"drop\", port = 80 }] }\nfirewall = [{ action = \"drop\", port = 443 }]\ninspection = { hosts = [\"*.servicebus.windows.net\"] }\n[[world.connectors]]\nname = \"c1\"\nuse_proxy = true\ninstalled_by = \"contoso\\\\alice\"\n[expect]\noutcome = \"serving\"\n";
        let s = Scenario::parse(toml, std::path::Path::new("x.toml")).unwrap();
        let line = &describe(&s)[0];
        let order = [
            "registration as contoso\\alice",
            "perimeter firewall (1 rule)",
            "proxy proxy.corp.local:8080",
            "proxy egress firewall (1 rule)",
            "inspection box",
            "service",
        ];
        let mut at = 0;
        for step in order {
            let found = line[at..].find(step).unwrap_or_else(|| panic!("{step:?} after {at} in {line}"));
            at += found + step.len();
        }
    }
}
