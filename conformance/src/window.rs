//! `[[expect.window]]`: expectations about one connector host and one
//! stretch of simulated time ("between 16m and 40m connector-2 serves
//! nothing and reports NET-SVC.unreachable naming the relay"). The world's
//! `[expect]` judges the run as a whole; a window judges the findings and
//! the requests served that fall in it, each with the host that reported
//! or served it.

use std::time::Duration;

use connector::diag::Diagnostic;
use serde::Serialize;

use crate::scenario::WindowExpect;

/// One finding as the trace has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Simulated milliseconds since the start.
    pub t_ms: u64,
    pub host: String,
    pub diagnostic: Diagnostic,
}

/// What is wrong against each window: `served` is every request served,
/// `(t_ms, host)`.
pub fn failures(windows: &[WindowExpect], findings: &[Finding], served: &[(u64, String)]) -> Vec<String> {
    windows.iter().flat_map(|w| window_failures(w, findings, served)).collect()
}

/// Findings of a code that only windows name, reported outside every
/// window naming it: a window allows a code where and when it says, not
/// anywhere else. (`known` says whether the scenario's `[expect]` names
/// the code itself.)
pub fn stray_failures(windows: &[WindowExpect], findings: &[Finding], known: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in findings.iter().filter(|f| !known(&f.diagnostic.code)) {
        let naming: Vec<&WindowExpect> = windows.iter().filter(|w| w.names(&f.diagnostic.code)).collect();
        if naming.is_empty() || naming.iter().any(|w| contains(w, f.t_ms, &f.host)) {
            continue;
        }
        let text =
            format!("{} reported {} at {} ms, outside the windows that expect it", f.host, f.diagnostic.code, f.t_ms);
        if !out.iter().any(|o| o.starts_with(&format!("{} reported {} ", f.host, f.diagnostic.code))) {
            out.push(text);
        }
    }
    out
}

/// Whether a finding or a served request at `t_ms` by `host` falls in `w`.
fn contains(w: &WindowExpect, t_ms: u64, host: &str) -> bool {
    let in_time = w.between.is_none_or(|(from, to)| ms(from.0) <= t_ms && t_ms <= ms(to.0));
    in_time && w.host.as_ref().is_none_or(|h| h.get_ref() == host)
}

fn window_failures(w: &WindowExpect, findings: &[Finding], served: &[(u64, String)]) -> Vec<String> {
    let label = label(w);
    let inside = |t_ms: u64, host: &str| contains(w, t_ms, host);
    let seen: Vec<&Diagnostic> = findings.iter().filter(|f| inside(f.t_ms, &f.host)).map(|f| &f.diagnostic).collect();
    let reported = |code: &str| seen.iter().any(|d| d.code == code);
    let mut out = Vec::new();
    for code in w.diagnostics.iter().filter(|c| !reported(c)) {
        out.push(format!("{label}: diagnostic {code} expected, reported {:?}", codes(&seen)));
    }
    if !w.any_of.is_empty() && !w.any_of.iter().any(|c| reported(c)) {
        out.push(format!("{label}: one of {:?} expected, reported {:?}", w.any_of, codes(&seen)));
    }
    for code in w.no_diagnostics.iter().filter(|c| reported(c)) {
        out.push(format!("{label}: diagnostic {code} must not be reported, but was"));
    }
    // Words are asked of a code that was reported (one of `any_of` that
    // was not is no failure of its words).
    for (code, words) in w.mentions.iter().filter(|(c, _)| reported(c.get_ref())) {
        let code = code.get_ref();
        let said = |word: &str| {
            seen.iter().filter(|d| &d.code == code).any(|d| d.message.contains(word) || d.remedy.contains(word))
        };
        for word in words.iter().filter(|word| !said(word)) {
            out.push(format!("{label}: no {code} finding mentions {word:?}"));
        }
    }
    let n = served.iter().filter(|(t, host)| inside(*t, host)).count() as u32;
    if let Some(min) = w.served_min.filter(|min| n < *min) {
        out.push(format!("{label}: at least {min} requests served expected, {n} were"));
    }
    if let Some(max) = w.served_max.filter(|max| n > *max) {
        out.push(format!("{label}: at most {max} requests served expected, {n} were"));
    }
    out
}

/// How a failure names its window: `connector-2 between 16m and 40m`.
fn label(w: &WindowExpect) -> String {
    let who = w.host.as_ref().map_or("every host".to_string(), |h| h.get_ref().clone());
    match w.between {
        Some((from, to)) => format!("{who} between {from} and {to}"),
        None => who,
    }
}

fn codes(seen: &[&Diagnostic]) -> Vec<String> {
    let mut codes: Vec<String> = seen.iter().map(|d| d.code.clone()).collect();
    codes.sort();
    codes.dedup();
    codes
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn finding(t_ms: u64, host: &str, code: &str, message: &str) -> Finding {
        let Some(connector::code::Known::Listed(code)) = connector::code::known(code) else { panic!("{code}") };
        let diagnostic = Diagnostic::new(code, None, message, "remedy");
        Finding { t_ms, host: host.into(), diagnostic }
    }

    fn windows(toml: &str) -> Vec<WindowExpect> {
        let head = "name = \"x\"\nduration = \"1h\"\n[world]\nadmin = { user = \"a@contoso.com\", password = \"p\" }\n[[world.connectors]]\nname = \"c1\"\n[[world.connectors]]\nname = \"c2\"\n[expect]\noutcome = \"serving\"\n";
        Scenario::parse(&format!("{head}{toml}"), std::path::Path::new("x.toml")).unwrap().expect.window
    }

    #[test]
    fn a_window_sees_only_its_host_and_its_time() {
        let w = windows(
            "[[expect.window]]\nhost = \"c2\"\nbetween = [\"10m\", \"20m\"]\ndiagnostics = [\"NET-SVC.unreachable\"]\nmentions = { \"NET-SVC.unreachable\" = [\"cwap-weu-1\"] }\nserved_max = 0\n",
        );
        let hit = finding(15 * 60_000, "c2", "NET-SVC.unreachable", "cannot reach cwap-weu-1");
        assert!(failures(&w, std::slice::from_ref(&hit), &[]).is_empty());
        let early = Finding { t_ms: 5 * 60_000, ..hit.clone() };
        let other = Finding { host: "c1".into(), ..hit.clone() };
        for outside in [early, other] {
            let f = failures(&w, &[outside], &[]);
            assert!(
                f.iter().any(|f| f.contains("c2 between 10m and 20m: diagnostic NET-SVC.unreachable expected")),
                "{f:?}"
            );
        }
        let vague = finding(15 * 60_000, "c2", "NET-SVC.unreachable", "cannot reach a relay");
        assert!(failures(&w, &[vague], &[]).iter().any(|f| f.contains("mentions \"cwap-weu-1\"")));
        let served = [(12 * 60_000, "c2".to_string()), (12 * 60_000, "c1".to_string())];
        let f = failures(&w, &[hit], &served);
        assert_eq!(f, ["c2 between 10m and 20m: at most 0 requests served expected, 1 were"]);
    }

    #[test]
    fn any_of_wants_one_and_no_diagnostics_none() {
        let w = windows(
            "[[expect.window]]\nany_of = [\"NET-443.unreachable\", \"NET-SVC.unreachable\"]\nno_diagnostics = [\"TLS-ROOTS.untrusted-issuer\"]\n",
        );
        assert_eq!(failures(&w, &[finding(1, "c1", "NET-443.unreachable", "m")], &[]), Vec::<String>::new());
        assert!(failures(&w, &[], &[])[0].contains("one of"));
        let both = [finding(1, "c1", "NET-443.unreachable", "m"), finding(2, "c2", "TLS-ROOTS.untrusted-issuer", "m")];
        assert!(failures(&w, &both, &[])[0].contains("must not be reported"));
    }

    #[test]
    fn a_code_only_a_window_names_is_allowed_only_there() {
        let w = windows(
            "[[expect.window]]\nhost = \"c2\"\nbetween = [\"10m\", \"20m\"]\nany_of = [\"SVC.host-unavailable\"]\n",
        );
        let inside = finding(15 * 60_000, "c2", "SVC.host-unavailable", "m");
        let known = |_: &str| false;
        assert!(stray_failures(&w, std::slice::from_ref(&inside), known).is_empty());
        let later = Finding { t_ms: 30 * 60_000, ..inside.clone() };
        let other = Finding { host: "c1".into(), ..inside.clone() };
        assert_eq!(stray_failures(&w, &[later.clone(), other], known).len(), 2);
        assert!(stray_failures(&w, &[later], |c| c == "SVC.host-unavailable").is_empty(), "[expect] allows it");
    }

    #[test]
    fn a_window_is_checked_when_loaded() {
        let head = "name = \"x\"\nduration = \"1h\"\n[world]\nadmin = { user = \"a@contoso.com\", password = \"p\" }\n[[world.connectors]]\nname = \"c1\"\n[expect]\noutcome = \"serving\"\n";
        for (toml, says) in [
            ("[[expect.window]]\nhost = \"c9\"\n", "names host \"c9\""),
            ("[[expect.window]]\nbetween = [\"20m\", \"10m\"]\n", "ends before it starts"),
            ("[[expect.window]]\nmentions = { \"NET-443.unreachable\" = [\"x\"] }\n", "does not expect"),
            ("[[expect.window]]\nhots = \"c1\"\n", "unknown field"),
        ] {
            let err =
                Scenario::parse(&format!("{head}{toml}"), std::path::Path::new("x.toml")).unwrap_err().to_string();
            assert!(err.contains(says), "{toml}: {err}");
        }
    }
}
