//! `cirrus client load`: many simulated Office clients against one server.
//!
//! N users (object id and UPN derived from an index, so runs are repeatable), each in K of the
//! given groups (chosen from the index) and with M devices. Every device loops like a real
//! client: `GET` the policy with `If-None-Match` of its last ETag (mostly 304s once warm), `POST`
//! a check-in naming the policy's configurations (a share of them failures), then waits.
//! Tokens are minted per user with the dev signing secret of `--data-dir`, as `cirrus token` does.
//!
//! One shared HTTP client; a semaphore bounds the requests in flight. A device that gets 429 or
//! 503 waits for `Retry-After` before trying again, as Graph clients must. Errors (including a
//! server without the check-in endpoint) are counted, never fatal: the summary reports them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::{Checkin, Reply, Target};
use crate::auth::dev::{DevKey, SECRET_FILE, TokenRequest, claims_for};

/// At most this many simulated devices (each is a task holding its user's token).
const MAX_DEVICES: u64 = 1_000_000;
/// Wait after a 429/503 that names no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Wait after a failure below HTTP (refused, reset, timed out): a real client backs off, and
/// without it a dead target turns every device into a busy loop.
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(500);
/// Longest single wait of a device.
const MAX_WAIT: Duration = Duration::from_secs(86_400);
/// After the run ends, in-flight requests get this long before they are abandoned.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Distinct error messages kept for the summary (the rest are counted under one line).
const MAX_DISTINCT_ERRORS: usize = 20;

const PLATFORM_VERSIONS: [&str; 3] = ["10.0.19045", "10.0.22631", "10.0.26100"];
const FAILURES: [&str; 3] = [
    "0x80070005: access denied while applying the policy",
    "0x87D1041C: a setting could not be applied",
    "0x80072EE2: timed out downloading the policy",
];

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Server root, e.g. http://127.0.0.1:8080 (a trailing /beta is ignored). Loopback only
    /// unless --allow-remote.
    #[arg(long, env = "CIRRUS_URL")]
    pub url: String,
    /// Simulated users.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub users: u64,
    /// Devices per user (each loops on its own).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub devices_per_user: u64,
    /// Group object ids (GUIDs, comma-separated) the users are spread over.
    #[arg(long, value_delimiter = ',', required = true, value_name = "G1,G2,…")]
    pub groups: Vec<String>,
    /// Groups each user is a member of (at most the number of --groups).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub groups_per_user: u64,
    /// Seconds to run (Ctrl-C ends the run early, with the summary).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Pause of each device between two rounds, in milliseconds (0: as fast as possible).
    #[arg(long, default_value_t = 0, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub interval_ms: u64,
    /// Share of check-ins reported as failed, with an errorMessage (0 to 1).
    #[arg(long, default_value_t = 0.05)]
    pub failure_rate: f64,
    /// Tenant of the minted tokens (`tid`). Default: the dev tenant of `cirrus serve`.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The server's data directory: its dev signing secret signs the users' tokens.
    #[arg(long, env = "CIRRUS_DATA_DIR", default_value = "./cirrus-data")]
    pub data_dir: PathBuf,
    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: LoadArgs, default_tenant: &str) -> anyhow::Result<()> {
    // The loopback check comes first: a refused target costs nothing, not even the data dir.
    let target = Target::parse(&args.url)?;
    anyhow::ensure!(
        args.allow_remote || target.is_loopback(),
        "refusing to load {}: its host {} is not a loopback address (127.0.0.0/8, ::1, localhost); \
         load tests against another machine need --allow-remote",
        target.root(),
        target.host()
    );
    let plan = Plan::new(&args, default_tenant)?;
    let key = load_key(&args.data_dir)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Tokens outlive the run (an hour beyond it) so no device ever sends an expired one.
    let lifetime = plan.duration.as_secs() as i64 + 3600;
    let mut users = Vec::with_capacity(plan.users as usize);
    for index in 1..=plan.users {
        let request = TokenRequest {
            tenant: plan.tenant.clone(),
            user: Some(user_id(index)),
            upn: Some(user_upn(index)),
            scopes: Some(crate::auth::READ_ALL.into()),
            roles: None,
            groups: Some(plan.groups_of(index).join(" ")),
            expires_in: lifetime,
        };
        let token = key.mint(&claims_for(&request, now)?)?;
        users.push(Arc::<str>::from(token));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        client: super::http_client(plan.concurrency)?,
        target,
        permits: Semaphore::new(plan.concurrency),
        stop: stop_rx,
        interval: plan.interval,
        failure_rate: plan.failure_rate,
        stats: Mutex::new(Stats::default()),
    });
    eprintln!(
        "load: {} devices ({} users × {}) against {} for {:.1} s, concurrency {}",
        plan.users * plan.devices_per_user,
        plan.users,
        plan.devices_per_user,
        ctx.target.root(),
        plan.duration.as_secs_f64(),
        plan.concurrency
    );

    let started = Instant::now();
    let mut devices = tokio::task::JoinSet::new();
    for (i, token) in users.iter().enumerate() {
        let index = i as u64 + 1;
        for device in 1..=plan.devices_per_user {
            let ctx = ctx.clone();
            let token = token.clone();
            devices.spawn(async move { simulate_device(ctx, token, index, device).await });
        }
    }
    let deadline = started + plan.duration;
    let interrupted = tokio::select! {
        _ = tokio::time::sleep_until(deadline) => false,
        _ = async {
            // Without a Ctrl-C handler the run simply lasts its duration.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        } => true,
    };
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while devices.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        devices.abort_all();
    }
    let elapsed = started.elapsed();

    let stats = ctx
        .stats
        .lock()
        .map_err(|_| anyhow::anyhow!("a device task panicked"))?;
    let summary = Summary {
        plan: &plan,
        target: ctx.target.root(),
        elapsed,
        interrupted,
        abandoned: !drained,
        stats: &stats,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        print!("{}", summary.to_text());
    }
    let ok = stats.policy.succeeded() + stats.checkin.succeeded();
    anyhow::ensure!(
        ok > 0,
        "no request succeeded: is a cirrus server at {} and does --data-dir point at its data directory?",
        ctx.target.root()
    );
    Ok(())
}

/// The validated shape of a run.
struct Plan {
    users: u64,
    devices_per_user: u64,
    groups: Vec<String>,
    groups_per_user: usize,
    duration: Duration,
    concurrency: usize,
    interval: Duration,
    failure_rate: f64,
    tenant: String,
}

impl Plan {
    fn new(args: &LoadArgs, default_tenant: &str) -> anyhow::Result<Plan> {
        let mut groups = Vec::new();
        for g in &args.groups {
            let g = g.trim();
            if g.is_empty() {
                continue;
            }
            // The server ignores group claims that are not GUIDs: say so now, not in the results.
            let id = uuid::Uuid::parse_str(g)
                .with_context(|| format!("--groups: {g:?} is not a group object id (a GUID)"))?;
            let id = id.to_string();
            if !groups.contains(&id) {
                groups.push(id);
            }
        }
        anyhow::ensure!(!groups.is_empty(), "--groups needs at least one group id");
        anyhow::ensure!(
            args.groups_per_user <= groups.len() as u64,
            "--groups-per-user {} is more than the {} groups given",
            args.groups_per_user,
            groups.len()
        );
        anyhow::ensure!(
            args.users.saturating_mul(args.devices_per_user) <= MAX_DEVICES,
            "--users × --devices-per-user is at most {MAX_DEVICES}"
        );
        anyhow::ensure!(
            args.duration.is_finite() && args.duration > 0.0 && args.duration <= 1e6,
            "--duration must be a number of seconds above 0"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.failure_rate),
            "--failure-rate must be between 0 and 1"
        );
        Ok(Plan {
            users: args.users,
            devices_per_user: args.devices_per_user,
            groups,
            groups_per_user: args.groups_per_user as usize,
            duration: Duration::from_secs_f64(args.duration),
            concurrency: args.concurrency as usize,
            interval: Duration::from_millis(args.interval_ms),
            failure_rate: args.failure_rate,
            tenant: args
                .tenant
                .clone()
                .unwrap_or_else(|| default_tenant.to_string()),
        })
    }

    /// The groups of user `index`: K consecutive groups (wrapping) from a start spread by a
    /// hash of the index, so memberships are even across groups and the same on every run.
    fn groups_of(&self, index: u64) -> Vec<String> {
        let n = self.groups.len();
        let start = (mix(index) % n as u64) as usize;
        (0..self.groups_per_user)
            .map(|k| self.groups[(start + k) % n].clone())
            .collect()
    }
}

/// Reads the dev signing secret; refuses to invent one (tokens signed with a fresh secret would
/// all be 401s).
fn load_key(data_dir: &std::path::Path) -> anyhow::Result<DevKey> {
    let path = data_dir.join(SECRET_FILE);
    anyhow::ensure!(
        path.is_file(),
        "no dev signing secret at {}: point --data-dir at the server's data directory",
        path.display()
    );
    DevKey::load_or_create(data_dir)
}

/// The stable object id of simulated user `index`.
pub fn user_id(index: u64) -> String {
    format!("5e1a0000-0000-4000-8000-{:012x}", index & 0xffff_ffff_ffff)
}

pub fn user_upn(index: u64) -> String {
    format!("user{index}@sim.cirrus.example")
}

/// SplitMix64's finaliser: a cheap, well-spread hash of an index.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What every device task shares.
struct Ctx {
    client: reqwest::Client,
    target: Target,
    permits: Semaphore,
    stop: watch::Receiver<bool>,
    interval: Duration,
    failure_rate: f64,
    stats: Mutex<Stats>,
}

#[derive(Clone, Copy)]
enum Kind {
    Policy,
    Checkin,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Policy => "policy",
            Kind::Checkin => "checkin",
        }
    }
}

impl Ctx {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `wait` (at most a day: `Retry-After` comes from the server), or less if the
    /// run stops; false if it stopped.
    async fn pause(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait.min(MAX_WAIT);
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(until) => !self.stopping(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// One logical request: retried after 429/503 (waiting `Retry-After`), every attempt
    /// counted. `None` when the run stopped or the request failed below HTTP (after a backoff).
    async fn call<F, Fut>(&self, kind: Kind, send: F) -> Option<Reply>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = reqwest::Result<Reply>>,
    {
        loop {
            if self.stopping() {
                return None;
            }
            let Ok(permit) = self.permits.acquire().await else {
                return None;
            };
            let start = Instant::now();
            let result = send().await;
            let latency = start.elapsed();
            // The permit bounds requests in flight, not waits: release it before any pause.
            drop(permit);
            match result {
                Ok(reply) => {
                    let throttled = matches!(
                        reply.status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    );
                    self.record(kind, latency, Ok(&reply));
                    if !throttled {
                        return Some(reply);
                    }
                    let wait = reply.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                    if !self.pause(wait).await {
                        return None;
                    }
                }
                Err(e) => {
                    self.record(kind, latency, Err(&e));
                    self.pause(TRANSPORT_BACKOFF).await;
                    return None;
                }
            }
        }
    }

    fn record(&self, kind: Kind, latency: Duration, outcome: Result<&Reply, &reqwest::Error>) {
        // The error text is built outside the lock; only failures pay for it.
        let error = match outcome {
            Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_MODIFIED => None,
            Ok(r) => Some(format!(
                "{} {}: {}",
                kind.name(),
                r.status.as_u16(),
                // Throttling waits are counted per status; the message would vary by seconds.
                match r.status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE =>
                        "throttled, waited for Retry-After".to_string(),
                    _ => r.error_summary(),
                }
            )),
            Err(e) => Some(format!("{} transport: {}", kind.name(), error_chain(e))),
        };
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        let s = match kind {
            Kind::Policy => &mut stats.policy,
            Kind::Checkin => &mut stats.checkin,
        };
        s.requests += 1;
        s.latency.record(latency.as_micros() as u64);
        match outcome {
            Ok(r) => *s.statuses.entry(r.status.as_u16()).or_default() += 1,
            Err(_) => s.transport_errors += 1,
        }
        if let Some(message) = error {
            let distinct = stats.errors.len();
            match stats.errors.get_mut(&message) {
                Some(n) => *n += 1,
                None if distinct < MAX_DISTINCT_ERRORS => {
                    stats.errors.insert(message, 1);
                }
                None => stats.other_errors += 1,
            }
        }
    }
}

/// A reqwest error with its causes ("error sending request: … connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

/// One simulated device: fetch, apply, report, wait — until the run stops.
async fn simulate_device(ctx: Arc<Ctx>, token: Arc<str>, user: u64, device: u64) {
    let name = format!("SIM-{user:06}-{device:02}");
    let seed = mix(user.wrapping_mul(1_000_003).wrapping_add(device));
    let mut rng = SmallRng::seed_from_u64(seed);
    let version = PLATFORM_VERSIONS[(seed % PLATFORM_VERSIONS.len() as u64) as usize];
    let mut etag: Option<String> = None;
    let mut applied: Vec<String> = Vec::new();
    // With an interval, devices start spread over it (as a fleet does), not all at once.
    if !ctx.interval.is_zero() {
        let offset = rng.random_range(0..=ctx.interval.as_millis() as u64);
        if !ctx.pause(Duration::from_millis(offset)).await {
            return;
        }
    }
    loop {
        let round = Instant::now();
        let reply = ctx
            .call(Kind::Policy, || {
                super::get_policy(&ctx.client, &ctx.target, &token, etag.as_deref())
            })
            .await;
        if ctx.stopping() {
            return;
        }
        // A client that could not get its policy still reports, as a failure.
        let policy_error = match &reply {
            Some(r) if r.status == StatusCode::NOT_MODIFIED => None,
            Some(r) if r.status.is_success() => match r.json() {
                Ok(doc) => {
                    etag = r.etag.clone();
                    applied = super::configuration_ids(&doc);
                    None
                }
                Err(e) => Some(format!("unreadable policy: {e}")),
            },
            Some(r) => Some(format!("policy request failed: {}", r.error_summary())),
            None => Some("policy request failed: no answer from the server".to_string()),
        };
        let failed = policy_error.is_some() || rng.random_bool(ctx.failure_rate);
        let error_message = failed.then(|| {
            policy_error.unwrap_or_else(|| FAILURES[rng.random_range(0..FAILURES.len())].into())
        });
        let body = Checkin {
            device_name: name.clone(),
            device_platform: "Windows".into(),
            device_platform_version: version.into(),
            was_successful: !failed,
            error_message,
            applied_policies: applied.clone(),
            last_task_name: Some("Sync".into()),
        };
        ctx.call(Kind::Checkin, || {
            super::post_checkin(&ctx.client, &ctx.target, &token, &body)
        })
        .await;
        let rest = ctx.interval.saturating_sub(round.elapsed());
        if ctx.stopping() || (!ctx.interval.is_zero() && !ctx.pause(rest).await) {
            return;
        }
    }
}

#[derive(Default)]
struct Stats {
    policy: KindStats,
    checkin: KindStats,
    /// "kind status: code: message" → count.
    errors: BTreeMap<String, u64>,
    /// Errors beyond [`MAX_DISTINCT_ERRORS`] distinct messages.
    other_errors: u64,
}

#[derive(Default)]
struct KindStats {
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    latency: Histogram,
}

impl KindStats {
    /// 2xx and 304 answers.
    fn succeeded(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(*s) || **s == 304)
            .map(|(_, n)| n)
            .sum()
    }

    fn retried(&self) -> u64 {
        self.statuses.get(&429).copied().unwrap_or(0)
            + self.statuses.get(&503).copied().unwrap_or(0)
    }

    fn to_json(&self, elapsed: Duration) -> Value {
        json!({
            "requests": self.requests,
            "perSecond": per_second(self.requests, elapsed),
            "statuses": self.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "transportErrors": self.transport_errors,
            "latencyMs": {
                "p50": self.latency.quantile_ms(0.50),
                "p99": self.latency.quantile_ms(0.99),
            },
        })
    }

    fn to_text(&self, name: &str, elapsed: Duration) -> String {
        let mut statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        if self.transport_errors > 0 {
            statuses.push(format!("transport-error:{}", self.transport_errors));
        }
        let ms = |q| match self.latency.quantile_ms(q) {
            Some(v) => format!("{v:.2} ms"),
            None => "-".into(),
        };
        format!(
            "{name:<8} requests {:<8} {:>9.1}/s  p50 {:<10} p99 {:<10} statuses {}\n",
            self.requests,
            per_second(self.requests, elapsed),
            ms(0.50),
            ms(0.99),
            if statuses.is_empty() {
                "-".into()
            } else {
                statuses.join(" ")
            }
        )
    }
}

fn per_second(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

struct Summary<'a> {
    plan: &'a Plan,
    target: &'a str,
    elapsed: Duration,
    interrupted: bool,
    abandoned: bool,
    stats: &'a Stats,
}

impl Summary<'_> {
    fn to_text(&self) -> String {
        let s = self.stats;
        let mut out = format!(
            "cirrus client load: {} users × {} devices against {}, concurrency {}, {:.2} s{}\n",
            self.plan.users,
            self.plan.devices_per_user,
            self.target,
            self.plan.concurrency,
            self.elapsed.as_secs_f64(),
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        out.push_str(&s.policy.to_text("policy", self.elapsed));
        out.push_str(&s.checkin.to_text("checkin", self.elapsed));
        let _ = writeln!(
            out,
            "retries after 429/503: {}",
            s.policy.retried() + s.checkin.retried()
        );
        if self.abandoned {
            out.push_str("some requests still in flight at the end were abandoned\n");
        }
        if s.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            out.push_str("errors:\n");
            for (message, n) in &s.errors {
                let _ = writeln!(out, "  {n:>8}  {message}");
            }
            if s.other_errors > 0 {
                let _ = writeln!(out, "  {:>8}  (other messages)", s.other_errors);
            }
        }
        out
    }

    fn to_json(&self) -> Value {
        let s = self.stats;
        json!({
            "target": self.target,
            "users": self.plan.users,
            "devicesPerUser": self.plan.devices_per_user,
            "concurrency": self.plan.concurrency,
            "elapsedSecs": self.elapsed.as_secs_f64(),
            "interrupted": self.interrupted,
            "abandonedInFlight": self.abandoned,
            "policy": s.policy.to_json(self.elapsed),
            "checkin": s.checkin.to_json(self.elapsed),
            "errors": s.errors,
            "otherErrors": s.other_errors,
        })
    }
}

/// Latencies in microseconds, in log-linear buckets (32 per power of two: under 3 % error),
/// so a long run needs constant memory.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this get a bucket each.
const LINEAR: u64 = 2 * SUB;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; Self::index(u64::MAX) + 1],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
        let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
        (LINEAR + u64::from(exp - SUB_BITS - 1) * SUB + sub) as usize
    }

    /// The smallest and largest value of bucket `i`.
    fn bounds(i: usize) -> (u64, u64) {
        let i = i as u64;
        if i < LINEAR {
            return (i, i);
        }
        let exp = (i - LINEAR) / SUB + u64::from(SUB_BITS) + 1;
        let sub = (i - LINEAR) % SUB;
        let width = 1u64 << (exp - u64::from(SUB_BITS));
        let low = (SUB + sub) * width;
        (low, low + (width - 1))
    }

    fn record(&mut self, micros: u64) {
        self.counts[Self::index(micros)] += 1;
        self.total += 1;
    }

    /// The `q` quantile in milliseconds (the middle of its bucket); `None` without data.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = Self::bounds(i);
                return Some((low as f64 + high as f64) / 2.0 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(groups: &[&str], per_user: u64) -> LoadArgs {
        LoadArgs {
            url: "http://127.0.0.1:1".into(),
            users: 10,
            devices_per_user: 2,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            groups_per_user: per_user,
            duration: 1.0,
            concurrency: 4,
            interval_ms: 0,
            failure_rate: 0.05,
            tenant: None,
            data_dir: PathBuf::from("/nonexistent"),
            allow_remote: false,
            json: false,
        }
    }

    const G: [&str; 3] = [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    ];

    #[test]
    fn memberships_are_deterministic_distinct_and_spread() {
        let plan = Plan::new(&args(&G, 2), "contoso").unwrap();
        assert_eq!(plan.tenant, "contoso");
        let mut per_group = [0; 3];
        for i in 1..=300 {
            let groups = plan.groups_of(i);
            assert_eq!(groups, plan.groups_of(i), "same user, same groups");
            assert_eq!(groups.len(), 2);
            assert_ne!(groups[0], groups[1]);
            for g in &groups {
                per_group[G.iter().position(|x| x == g).unwrap()] += 1;
            }
        }
        // 600 memberships over 3 groups: each near 200.
        assert!(
            per_group.iter().all(|n| (150..=250).contains(n)),
            "{per_group:?}"
        );
        assert_eq!(user_id(7), "5e1a0000-0000-4000-8000-000000000007");
        assert!(uuid::Uuid::parse_str(&user_id(100_000)).is_ok());
        assert_eq!(user_upn(7), "user7@sim.cirrus.example");
    }

    #[test]
    fn plan_validation() {
        assert!(Plan::new(&args(&["not-a-guid"], 1), "t").is_err());
        assert!(
            Plan::new(&args(&G[..1], 2), "t").is_err(),
            "K above the group count"
        );
        assert!(Plan::new(&args(&[" ", ""], 1), "t").is_err(), "no groups");
        // Duplicates collapse (any spelling of the same GUID).
        let upper = G[0].to_uppercase();
        let plan = Plan::new(&args(&[G[0], &upper], 1), "t").unwrap();
        assert_eq!(plan.groups.len(), 1);
        let mut a = args(&G, 1);
        a.duration = 0.0;
        assert!(Plan::new(&a, "t").is_err());
        let mut a = args(&G, 1);
        a.failure_rate = 1.5;
        assert!(Plan::new(&a, "t").is_err());
        let mut a = args(&G, 1);
        a.users = 100_000;
        a.devices_per_user = 11;
        assert!(Plan::new(&a, "t").is_err(), "too many devices");
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_quantiles_close() {
        let mut prev_high = None;
        for i in 0..Histogram::index(u64::MAX) {
            let (low, high) = Histogram::bounds(i);
            assert!(low <= high);
            if let Some(p) = prev_high {
                assert_eq!(low, p + 1, "bucket {i}");
            }
            assert_eq!(Histogram::index(low), i);
            assert_eq!(Histogram::index(high), i);
            prev_high = Some(high);
        }
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v * 10); // 10 µs … 100 ms
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 50.0).abs() / 50.0 < 0.03, "p50 {p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.03, "p99 {p99}");
        let mut one = Histogram::default();
        one.record(5);
        assert_eq!(one.quantile_ms(0.99), Some(0.005));
    }

    #[test]
    fn missing_secret_is_refused_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_key(dir.path()).err().unwrap().to_string();
        assert!(err.contains("--data-dir"), "{err}");
        assert!(!dir.path().join(SECRET_FILE).exists());
    }
}
