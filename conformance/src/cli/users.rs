//! The hidden `connsim users`: user requests from inside the netns
//! world's cloud namespace.

use std::collections::BTreeMap;
use std::process::ExitCode;

/// Where the requests go and when.
#[derive(clap::Args)]
pub struct UsersArgs {
    #[arg(long)]
    pub addr: std::net::SocketAddr,
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value_t = 1)]
    pub requests: usize,
    /// Wait this long before the first request.
    #[arg(long, default_value_t = 0)]
    pub start_ms: u64,
    /// Between requests (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
}

/// Sends the requests and prints how many got each status.
pub fn users(args: UsersArgs) -> Result<ExitCode, String> {
    let UsersArgs { addr, host, requests, start_ms, interval_ms } = args;
    let target = conformance::loadgen::Target { addr, host, path: "/".into() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    let answers = tokio::task::LocalSet::new().block_on(
        &rt,
        conformance::loadgen::each_once(
            &target,
            requests.min(10_000),
            std::time::Duration::from_millis(start_ms),
            std::time::Duration::from_millis(interval_ms),
        ),
    );
    let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
    for a in answers {
        let key = match a {
            Ok(status) => status.to_string(),
            Err(_) => "none".to_string(),
        };
        *statuses.entry(key).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&statuses).map_err(|e| e.to_string())?);
    Ok(ExitCode::SUCCESS)
}
