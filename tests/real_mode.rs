//! Real mode, end to end, on 127.0.0.1: relay-sim serves the cloud on
//! loopback ports with real TLS; the real agent runs on tokio sockets with
//! `--resolve`-style overrides; a user request through the ingress reaches
//! a local backend, with revocation checked against relay-sim's CRL and
//! OCSP servers. Then a restarted connector reuses its stored identity.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use connector::event::AgentEvent;
use connector::net::ResolveEntry;
use connsim_tests::real_world::{exchange, real_env, start_cloud, start_connector, wait_tunnels};
use relay_sim::serve::Manifest;

fn get(manifest: &Manifest, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(manifest.ingress).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", manifest.apps[0]).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn connector_registers_and_serves_over_real_sockets() {
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let manifest = start_cloud(state.path().to_path_buf());

    let events = start_connector(&manifest, install.path().to_path_buf(), true);
    let seen = wait_tunnels(&events, 2);
    assert!(seen.iter().any(|e| matches!(e, AgentEvent::Registered { .. })), "{seen:?}");
    // Revocation was checked over (loopback) port 80: CRLs and OCSP.
    assert!(seen.iter().any(|e| matches!(e, AgentEvent::CrlFetched { .. })), "{seen:?}");
    assert!(seen.iter().any(|e| matches!(e, AgentEvent::OcspChecked { status, .. } if status == "good")), "{seen:?}");
    assert!(install.path().join("identity/cert.pem").exists());
    assert!(install.path().join("identity/key.pem").exists());

    let resp = get(&manifest, "/hello?x=1");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("echo.corp.local: GET /hello?x=1"), "{resp}");

    // A second connector process on the same install folder, without
    // credentials, must come up from the stored identity.
    let again = start_connector(&manifest, install.path().to_path_buf(), false);
    let seen = wait_tunnels(&again, 2);
    assert!(matches!(seen.first(), Some(AgentEvent::IdentityLoaded { .. })), "{seen:?}");
    for _ in 0..4 {
        let resp = get(&manifest, "/again");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

/// Answers and uploads longer than the ingress holds (and than its old
/// 16 MiB limit) stream through whole, byte for byte, both ways.
#[test]
fn large_bodies_stream_through_whole() {
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let manifest = start_cloud(state.path().to_path_buf());
    let events = start_connector(&manifest, install.path().to_path_buf(), true);
    wait_tunnels(&events, 2);
    let (app, size) = (&manifest.apps[0], 40 << 20);
    let down = exchange(manifest.ingress, app, "GET", &format!("/download?size={size}"), "", b"");
    assert_eq!(down.status, 200, "{}", down.header("x-relay-error").unwrap_or_default());
    assert_eq!(down.body.len(), size);
    assert_eq!(down.header("x-response-sha256"), Some(relay_sim::backend::sha256_hex(&down.body).as_str()));
    let upload = relay_sim::pattern::pattern(size);
    let up = exchange(manifest.ingress, app, "POST", "/upload", "", &upload);
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.header("x-body-bytes"), Some(size.to_string().as_str()));
    assert_eq!(up.header("x-body-sha256"), Some(relay_sim::backend::sha256_hex(&upload).as_str()));
}

#[test]
fn wrong_password_stops_with_the_services_error() {
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let mut manifest = start_cloud(state.path().to_path_buf());
    manifest.password = "wrong".into();
    let events = start_connector(&manifest, install.path().to_path_buf(), true);
    let mut diag = None;
    loop {
        match events.recv_timeout(Duration::from_secs(30)).expect("connector neither stopped nor diagnosed") {
            AgentEvent::Diagnostic(d) => diag = Some(d),
            AgentEvent::Stopped { .. } => break,
            _ => {}
        }
    }
    let d = diag.expect("a diagnostic before stopping");
    assert!(d.message.contains("AADSTS50126"), "{d:?}");
    assert!(!install.path().join("identity/connector.json").exists());
}

/// `connector diagnose` on real sockets: every destination relay-sim serves
/// passes (TLS chains seen, trust list and CRLs downloaded); a relay name
/// pointed at a closed port fails with a finding that names its entry.
#[test]
fn diagnose_probes_the_real_network() {
    use connector::api::RelayEndpoint;
    use connector::diagnose::{self, DiagnoseConfig};
    let state = tempfile::tempdir().unwrap();
    let manifest = start_cloud(state.path().to_path_buf());
    let roots = connector::identity::parse_pem_certs(&std::fs::read_to_string(&manifest.root_pem).unwrap()).unwrap();
    let run = |resolve: Vec<ResolveEntry>, relays: Vec<RelayEndpoint>| {
        let cfg = DiagnoseConfig {
            tenant_id: manifest.tenant_id.clone(),
            trusted_roots: roots.clone(),
            service_roots: Vec::new(),
            relays,
            timeout: Duration::from_secs(5),
            cloud: Default::default(),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&rt, async move {
            let (tx, _rx) = mpsc::channel();
            diagnose::run(&real_env(resolve, tx), &cfg).await
        })
    };
    let resolve: Vec<ResolveEntry> = manifest.resolve.iter().map(|r| r.parse().unwrap()).collect();
    let relay = RelayEndpoint { host: "cwap-weu-1.servicebus.windows.net".into(), port: 443 };
    let good = run(resolve.clone(), vec![relay.clone()]);
    assert_eq!(good.failed(), 0, "{}", good.text());
    assert!(good.checks.iter().any(|c| c.port == 80 && c.host == "crl.microsoft.com"), "{}", good.text());
    assert!(good.checks.iter().any(|c| c.chain.iter().any(|l| l.contains("Baltimore"))), "{}", good.text());

    // Point a second relay name at a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut broken = resolve;
    broken.push(format!("cwap-weu-9.servicebus.windows.net={closed}").parse().unwrap());
    let bad_relay = RelayEndpoint { host: "cwap-weu-9.servicebus.windows.net".into(), port: 443 };
    let bad = run(broken, vec![relay, bad_relay]);
    assert_eq!(bad.failed(), 1, "{}", bad.text());
    // The other relay, under the same allow-list entry, answers: the entry
    // is fine and this one host is down.
    let finding =
        bad.findings.iter().find(|d| d.code == "SVC.host-unavailable").unwrap_or_else(|| panic!("{}", bad.text()));
    assert!(finding.message.contains("cwap-weu-1.servicebus.windows.net:443"), "{finding}");
    assert_eq!(bad.findings.len(), 1, "{}", bad.text());

    // Field repro: the real network's report, as JSON, becomes a scenario
    // whose simulation shows the same finding.
    let bundle = serde_json::to_string_pretty(&bad).unwrap();
    let report = conformance::bundle::parse(&bundle).unwrap();
    let tr = conformance::bundle::translate(&report, "field-closed-relay");
    assert!(
        tr.toml.contains("action = \"reject\", port = 443, host_suffix = \"cwap-weu-2.servicebus.windows.net\""),
        "{}",
        tr.toml
    );
    let v = conformance::bundle::verify(&tr).unwrap();
    assert!(v.missing.is_empty(), "not reproduced: {:?}\n{}", v.missing, v.toml);
    let replay = conformance::Scenario::parse(&v.toml, std::path::Path::new("field.toml")).unwrap();
    let r = conformance::run(&replay, 1);
    assert_eq!(r.verdict, conformance::Verdict::Pass, "{:?}\n{}", r.failures, v.toml);
}

/// The data path on real sockets (DATA-INTACT): a 100 KiB header gets 431
/// (from the ingress, before any tunnel) while 32 concurrent ordinary
/// requests, sent at the same moment, get 200;
/// 5 MiB uploads arrive byte for byte (the echo backend's SHA-256); an
/// 8 MiB download comes back whole; repeated `Set-Cookie` headers all
/// reach the user; the OCSP responder answers RFC 6960 GET requests.
#[test]
fn data_path_holds_on_real_sockets() {
    use relay_sim::backend::sha256_hex;
    use relay_sim::pattern::pattern;
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let manifest = start_cloud(state.path().to_path_buf());
    let events = start_connector(&manifest, install.path().to_path_buf(), true);
    wait_tunnels(&events, 2);
    let (ingress, app) = (manifest.ingress, manifest.apps[0].clone());

    let ordinary: Vec<_> = (0..32)
        .map(|i| {
            let app = app.clone();
            std::thread::spawn(move || exchange(ingress, &app, "GET", &format!("/user/{i}"), "", b"").status)
        })
        .collect();
    let cookie = format!("Cookie: big={}\r\n", "c".repeat(100 * 1024));
    let big = exchange(ingress, &app, "GET", "/big-header", &cookie, b"");
    assert_eq!(big.status, 431, "{}", String::from_utf8_lossy(&big.body));
    for (i, t) in ordinary.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), 200, "ordinary request {i}");
    }

    let upload = pattern(5 << 20);
    let want = sha256_hex(&upload);
    let uploads: Vec<_> = (0..10)
        .map(|i| {
            let (app, upload) = (app.clone(), upload.clone());
            std::thread::spawn(move || exchange(ingress, &app, "POST", &format!("/upload/{i}"), "", &upload))
        })
        .collect();
    for (i, t) in uploads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "upload {i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-body-sha256"), Some(want.as_str()), "upload {i} arrived changed");
    }

    let down = exchange(ingress, &app, "GET", "/download?size=8388608", "", b"");
    assert_eq!(down.status, 200);
    assert_eq!(down.body.len(), 8 << 20);
    assert_eq!(down.header("x-response-sha256"), Some(sha256_hex(&down.body).as_str()));

    let cookies = exchange(ingress, &app, "GET", "/c", "x-echo-set-cookie: a=1\r\nx-echo-set-cookie: b=2\r\n", b"");
    let set: Vec<&str> =
        cookies.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(set, ["a=1", "b=2"], "{:?}", cookies.headers);

    // RFC 6960 A.1: base64 of a DER request in the path (this one is not a
    // valid request: the answer is OCSP's malformedRequest, not a 404).
    let ocsp = manifest.resolve.iter().find_map(|r| r.strip_prefix("ocsp.digicert.com=")).unwrap();
    let r = exchange(ocsp.parse().unwrap(), "ocsp.digicert.com", "GET", "/MAMCAQA%3D", "", b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/ocsp-response"));
}

fn status_of(manifest: &Manifest, path: &str) -> u16 {
    exchange(manifest.ingress, &manifest.apps[0], "GET", path, "", b"").status
}

/// The simulation's timeline stories, told on real sockets through
/// relay-sim's control API: a relay stops (the other carries the users)
/// and comes back; port 443 is refused (the connector says so; users get
/// 503) and opened again; the root rotates under live tunnels; a
/// connector moved to another group no longer serves its old group's app;
/// a revoked connector's tunnels end.
#[test]
fn control_api_tells_the_sims_stories() {
    use connsim_tests::real_world::{control, wait_for};
    use relay_sim::control::Action;
    use relay_sim::gate::{Block, Flow};
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let manifest = start_cloud(state.path().to_path_buf());
    let events = start_connector(&manifest, install.path().to_path_buf(), true);
    wait_tunnels(&events, 2);
    let status = control(&manifest, None);
    assert_eq!(status.connectors.len(), 1, "{status:?}");
    assert_eq!(status.tunnels.len(), 2, "{status:?}");
    let connector = status.connectors[0].id.clone();
    let relay1 = status.tunnels[0].1.clone();

    // One relay stops: its tunnel ends, users are served by the other.
    let after = control(&manifest, Some(Action::StopRelay { host: Some(relay1.clone()) }));
    assert!(after.hosts.iter().any(|h| h.hosts == [relay1.clone()] && h.flow == Flow::Refusing), "{after:?}");
    wait_for(&events, 1, Duration::from_secs(30), |e| matches!(e, AgentEvent::TunnelDown { .. }));
    for i in 0..4 {
        assert_eq!(status_of(&manifest, &format!("/one-relay/{i}")), 200);
    }
    control(&manifest, Some(Action::StartRelay { host: Some(relay1.clone()) }));
    wait_tunnels(&events, 1);

    // Port 443 refused: every tunnel ends, the connector names the port,
    // users wait for a connector in vain (503).
    control(&manifest, Some(Action::BlockPort { port: 443, mode: Block::Reject }));
    let seen = wait_for(
        &events,
        1,
        Duration::from_secs(60),
        |e| matches!(e, AgentEvent::Diagnostic(d) if d.code.starts_with("NET-443") || d.code.starts_with("SVC.")),
    );
    assert_eq!(status_of(&manifest, "/blocked"), 503, "{seen:?}");
    control(&manifest, Some(Action::UnblockPort { port: 443 }));
    wait_tunnels(&events, 2);
    assert_eq!(status_of(&manifest, "/unblocked"), 200);

    // The root rotates; a relay restart makes the tunnels handshake again
    // on the new chains, which the connector trusts.
    control(&manifest, Some(Action::RotateRoot { to: relay_sim::pki::Generation::DigicertG2 }));
    control(&manifest, Some(Action::RestartRelay { host: None }));
    wait_tunnels(&events, 2);
    assert_eq!(status_of(&manifest, "/rotated"), 200);

    // Moved to another group: the echo app (default group) has no
    // connector; moved back, it is served again.
    control(&manifest, Some(Action::MoveConnector { connector: connector.clone(), group: "elsewhere".into() }));
    assert_eq!(status_of(&manifest, "/moved"), 503);
    control(&manifest, Some(Action::MoveConnector { connector: connector.clone(), group: "Default".into() }));
    assert_eq!(status_of(&manifest, "/back"), 200);

    // Revoked: the relays end its tunnels and refuse it.
    let revoked = control(&manifest, Some(Action::RevokeConnector { connector }));
    assert!(revoked.connectors[0].revoked, "{revoked:?}");
    wait_for(&events, 2, Duration::from_secs(30), |e| matches!(e, AgentEvent::TunnelDown { .. }));
    assert_eq!(status_of(&manifest, "/revoked"), 503);
    let status = control(&manifest, None);
    assert!(status.tunnels.is_empty(), "{status:?}");
    assert!(status.duplicates.is_empty(), "{status:?}");
}

/// Loads short enough for a test: one run of a second per point.
const BRIEF: [&str; 10] =
    ["--duration", "1", "--runs", "1", "--rate", "50", "--rate-duration", "1", "--open-streams", "0"];

/// `connsim bench-real` with [`BRIEF`] loads and `args`, this build's
/// binaries and a scratch chart; its output, once it succeeded.
fn bench_real(args: &[&str]) -> (String, String) {
    let bins = connsim_tests::real_world::binaries().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&bins.connsim)
        .arg("bench-real")
        .args(BRIEF)
        .args(args)
        .arg("--bin-dir")
        .arg(bins.connsim.parent().unwrap())
        .arg("--plot")
        .arg(dir.path().join("bench-real.svg"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout.into_owned(), stderr.into_owned())
}

/// Each of `paths` has a closed-loop row with no errors.
fn answered_without_errors(stdout: &str, paths: &[&str]) {
    for path in paths {
        let row = stdout.lines().find(|l| l.starts_with(path)).unwrap_or_default();
        // ... errors, CPU/request ("159.2 us").
        let errors = row.split_whitespace().rev().nth(2);
        assert_eq!(errors, Some("0"), "{path}: {row}\n{stdout}");
    }
}

/// `connsim bench-real` end to end, briefly, with its TLS tunnel floor:
/// every path answers, nothing errs, and the floor's lines are printed.
#[test]
fn bench_real_measures_the_tunnel_beside_its_floor() {
    let (stdout, _) = bench_real(&["--conns", "2,1", "--large-mib", "1", "--transfers", "1"]);
    answered_without_errors(&stdout, &["direct", "connsim tunnel", "TLS tunnel floor"]);
    assert!(stdout.contains("against the TLS tunnel floor"), "{stdout}");
    assert!(stdout.contains("  c2: tunnel / floor "), "{stdout}");
}

/// `connsim bench-real --split-cores` end to end, briefly: every process
/// is pinned to its side's core (the run says so) and every path answers.
#[test]
fn bench_real_on_split_cores_pins_and_measures() {
    // The tool's own check (two cores this process may use, on Linux).
    if let Err(why) = conformance::cores::two() {
        eprintln!("skipped: {why}");
        return;
    }
    let (stdout, stderr) = bench_real(&["--split-cores", "--no-floor", "--conns", "2", "--large-mib", "0"]);
    assert!(stdout.starts_with("cores split:"), "{stdout}");
    assert!(stderr.contains("split cores: the load generator and the client ends on core"), "{stderr}");
    answered_without_errors(&stdout, &["direct", "connsim tunnel"]);
    // The open loop's added p99 is a load target: not judged on split cores.
    let p99 = stdout.lines().find(|l| l.starts_with("p99 added")).unwrap_or_default();
    assert!(p99.ends_with("not judged (split cores)"), "{p99}\n{stdout}");
}
