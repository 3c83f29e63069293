//! Pushing GIL profiles to Grafana Pyroscope while recording (`--pyroscope URL`).
//!
//! Fed from the same event stream the trace writer writes (an [`EventTap`]), so the sampler
//! does nothing but hand each event to a channel: it never waits for the network.
//!
//! ```text
//!  sampler ──events (channel)──▶ window builder ──windows (bounded queue)──▶ sender ──HTTP──▶
//!            (the trace file         a live Timeline; every       oldest dropped      POST /ingest
//!             gets them too)         interval the difference      when full, counted  backoff on
//!                                    of its stack totals → pprof                      failure
//! ```
//!
//! A window is the model's stacks gained since the previous window
//! ([`crate::output::export::pprof::StackTotals`]), so the backend shows the shares the trace
//! file's `summary` gives. A backend that is down, slow or answers an error is reported on
//! stderr (first failure, then at most every 30 s, and when it is back) and retried with
//! exponential backoff (1 s doubling to the push interval, at most 30 s); recording goes on, and while the backend is away at
//! most `max_queued` windows wait (the oldest are dropped and counted). A window the backend
//! refuses for good (4xx other than 408/429) is dropped and counted as rejected.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::model::timeline::{Event, Timeline};
use crate::output::export::pprof::{self, PprofOptions, Selection, StackTotals};
use crate::trace::EventTap;

/// How a push authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic base64(user:password)` (Grafana Cloud: the stack's user id and an
    /// access-policy token).
    Basic { user: String, password: String },
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
}

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The server's base URL (`http://pyroscope:4040`); `/ingest` is appended.
    pub url: String,
    /// The application name (`name=APP{tags}`).
    pub app: String,
    /// Series labels, `k=v`, in order.
    pub tags: Vec<(String, String)>,
    pub interval: Duration,
    pub auth: Option<Auth>,
    /// `X-Scope-OrgID` (multi-tenant Pyroscope).
    pub tenant: Option<String>,
    /// Label samples with `thread_id` too.
    pub thread_id: bool,
    /// Windows kept while the backend is away; the oldest go first.
    pub max_queued: usize,
    /// One request's time limit (connect + send + answer).
    pub timeout: Duration,
}

impl PushConfig {
    pub fn new(url: &str) -> Result<PushConfig> {
        let url = url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("{url:?}: give the server's URL, e.g. http://localhost:4040");
        }
        Ok(PushConfig {
            url,
            app: "gilscope".into(),
            tags: Vec::new(),
            interval: Duration::from_secs(10),
            auth: None,
            tenant: None,
            thread_id: false,
            max_queued: 60,
            timeout: Duration::from_secs(10),
        })
    }

    /// `APP{k=v,...}`, the `name` query parameter.
    pub fn series_name(&self) -> String {
        if self.tags.is_empty() {
            return self.app.clone();
        }
        let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}{{{}}}", self.app, tags.join(","))
    }
}

/// Checks a `--tag k=v` (Pyroscope label rules: a name of letters, digits, `_` and `.`, not
/// starting with a digit; a value without `,{}=`).
pub fn parse_tag(s: &str) -> std::result::Result<(String, String), String> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(format!("{s:?}: a tag is KEY=VALUE"));
    };
    let ok_key = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !ok_key {
        return Err(format!(
            "{k:?}: a tag name is letters, digits, `_` and `.`, not starting with a digit"
        ));
    }
    if v.is_empty() || v.contains([',', '{', '}', '=', '\n']) {
        return Err(format!(
            "{v:?}: a tag value is not empty and has no , {{ }} ="
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// What the pusher did, for the final summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Windows built (with samples).
    pub windows: u64,
    pub pushed: u64,
    /// Requests that failed (down, timeout, 5xx, 408, 429); retried.
    pub failed_attempts: u64,
    /// Windows dropped because the queue was full (the backend was away too long).
    pub dropped: u64,
    /// Windows the backend refused for good (4xx).
    pub rejected: u64,
    /// Windows still queued when recording ended (the backend was away then).
    pub unsent: u64,
    pub last_error: Option<String>,
}

impl PushStats {
    /// `gilscope: pyroscope: ...` for the end of a recording.
    pub fn summary_line(&self, url: &str) -> String {
        let mut s = format!(
            "gilscope: pyroscope: {} of {} windows pushed to {url}",
            self.pushed, self.windows
        );
        let mut parts = Vec::new();
        if self.failed_attempts > 0 {
            parts.push(format!(
                "{} failed attempts (retried)",
                self.failed_attempts
            ));
        }
        if self.dropped > 0 {
            parts.push(format!(
                "{} dropped (queue full while the backend was away, oldest first)",
                self.dropped
            ));
        }
        if self.rejected > 0 {
            parts.push(format!("{} rejected by the backend", self.rejected));
        }
        if self.unsent > 0 {
            parts.push(format!("{} not sent at exit", self.unsent));
        }
        if !parts.is_empty() {
            s.push_str(&format!("; {}", parts.join(", ")));
        }
        if self.pushed < self.windows {
            if let Some(e) = &self.last_error {
                s.push_str(&format!(" (last error: {e})"));
            }
            s.push_str("; the local trace has everything");
        }
        s
    }
}

/// One window, ready to send.
#[derive(Debug, Clone)]
struct Window {
    seq: u64,
    from_s: u64,
    until_s: u64,
    rate_hz: f64,
    body: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    windows: VecDeque<Window>,
    /// No more windows will come; the sender delivers what it can until `deadline`.
    closed: bool,
    deadline: Option<Instant>,
    /// The sender thread has returned.
    sender_done: bool,
    stats: PushStats,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the pusher's messages go (stderr for `record`; the TUI's notice line for `top`).
pub type Reporter = Arc<dyn Fn(&str) + Send + Sync>;

pub fn stderr_reporter() -> Reporter {
    Arc::new(|m: &str| eprintln!("gilscope: pyroscope: {m}"))
}

/// A running pusher: [`Pusher::tap`] gives the event tap for the recorder,
/// [`Pusher::finish`] sends what is left and says what was done.
pub struct Pusher {
    cfg: PushConfig,
    tx: Option<mpsc::Sender<Event>>,
    builder: Option<JoinHandle<()>>,
    sender: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Pusher {
    /// Starts the window builder and the sender. `rate_hz` is the sampling rate (the
    /// recording's MODE records update it).
    pub fn start(cfg: PushConfig, rate_hz: f64, report: Reporter) -> Result<Pusher> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<Event>();
        let b_shared = shared.clone();
        let b_cfg = cfg.clone();
        let builder = std::thread::Builder::new()
            .name("gilscope-push-windows".into())
            .spawn(move || build_windows(rx, &b_cfg, rate_hz, &b_shared))
            .context("starting the push window thread")?;
        let s_shared = shared.clone();
        let s_cfg = cfg.clone();
        let sender = std::thread::Builder::new()
            .name("gilscope-push".into())
            .spawn(move || {
                send_windows(&s_cfg, &s_shared, &*report);
                s_shared.lock().sender_done = true;
                s_shared.cv.notify_all();
            })
            .context("starting the push thread")?;
        Ok(Pusher {
            cfg,
            tx: Some(tx),
            builder: Some(builder),
            sender: Some(sender),
            shared,
        })
    }

    /// The tap to give the recorder (once): every event is handed to the window builder.
    pub fn tap(&mut self) -> Option<EventTap> {
        let tx = self.tx.take()?;
        Some(Box::new(move |e: &Event| {
            let _ = tx.send(e.clone());
        }))
    }

    pub fn url(&self) -> &str {
        &self.cfg.url
    }

    /// Call once the tap is gone (the recording ended): the last window is cut, and what
    /// is queued is sent for at most `grace` (without backoff: a backend that fails now is
    /// not retried). Returns after `grace` at the latest, even when a request hangs (the
    /// sender is then left to the process's exit; its window counts as unsent).
    pub fn finish(mut self, grace: Duration) -> PushStats {
        self.tx = None;
        if let Some(b) = self.builder.take() {
            let _ = b.join();
        }
        let deadline = Instant::now() + grace;
        let mut q = self.shared.lock();
        q.closed = true;
        q.deadline = Some(deadline);
        self.shared.cv.notify_all();
        while !q.sender_done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = self
                .shared
                .cv
                .wait_timeout(q, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if q.sender_done {
            if let Some(s) = self.sender.take() {
                let _ = s.join();
            }
        }
        q.stats.unsent = q.windows.len() as u64;
        q.stats.clone()
    }
}

/// The window builder: events into a live model; every interval, the stacks gained since
/// the last window, as a gzip'd pprof, onto the queue.
fn build_windows(rx: mpsc::Receiver<Event>, cfg: &PushConfig, rate_hz: f64, shared: &Shared) {
    let mut tl = Timeline::new();
    let mut prev = StackTotals::default();
    let mut rate = rate_hz;
    let mut exact = false;
    let mut from_ns = unix_now_ns();
    let mut next_cut = Instant::now() + cfg.interval;
    let mut seq = 0u64;
    let mut cut = |tl: &mut Timeline, rate: f64, exact: bool, from_ns: &mut u64| {
        let until_ns = unix_now_ns().max(*from_ns + 1);
        let totals = StackTotals::of(tl);
        let opts = PprofOptions {
            thread_id: cfg.thread_id,
            rate_hz: rate,
            start_unix_ns: Some(*from_ns),
            duration_ns: until_ns - *from_ns,
            comments: vec![pprof::estimate_comment(rate, exact)],
            no_lines: false,
        };
        let p = pprof::profile(tl, Some(&prev), &Selection::default(), &opts);
        prev = totals;
        if let Some(end) = tl.end_ns {
            // Bounded memory: the intervals are not needed for stack totals.
            tl.trim_intervals_before(end.saturating_sub(60_000_000_000));
        }
        if !p.sample.is_empty() {
            seq += 1;
            let w = Window {
                seq,
                // Whole seconds (the API's unit), adjacent windows sharing their boundary.
                from_s: *from_ns / 1_000_000_000,
                until_s: (until_ns / 1_000_000_000).max(*from_ns / 1_000_000_000 + 1),
                rate_hz: rate,
                body: pprof::encode_gz(&p),
            };
            let mut q = shared.lock();
            q.stats.windows += 1;
            if q.windows.len() >= cfg.max_queued.max(1) {
                q.windows.pop_front();
                q.stats.dropped += 1;
            }
            q.windows.push_back(w);
            drop(q);
            shared.cv.notify_all();
        }
        *from_ns = until_ns;
    };
    loop {
        let wait = next_cut.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(e) => {
                if let Event::Mode { rate_hz, mode, .. } = &e {
                    rate = *rate_hz;
                    exact = *mode == crate::model::timeline::Source::Exact;
                }
                if let Event::Run(r) = &e {
                    exact |= r.source == crate::model::timeline::Source::Exact;
                }
                tl.apply(&e);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                cut(&mut tl, rate, exact, &mut from_ns);
                return;
            }
        }
        let now = Instant::now();
        if now >= next_cut {
            cut(&mut tl, rate, exact, &mut from_ns);
            next_cut += cfg.interval;
            if next_cut <= now {
                next_cut = now + cfg.interval;
            }
        }
    }
}

/// What one POST came to.
enum Outcome {
    Ok,
    /// Retry later (down, timeout, 5xx, 408, 429).
    Retry(String),
    /// Refused for good (other 4xx): drop the window.
    Rejected(String),
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REPORT_EVERY: Duration = Duration::from_secs(30);

fn send_windows(cfg: &PushConfig, shared: &Shared, report: &(dyn Fn(&str) + Send + Sync)) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .timeout_connect(Some(cfg.timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .user_agent(concat!("gilscope/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let mut backoff = Duration::ZERO;
    let mut failing: Option<(u64, Instant)> = None; // (failed attempts, last report)
    loop {
        let w = {
            let mut q = shared.lock();
            loop {
                if q.closed
                    && (q.windows.is_empty() || q.deadline.is_some_and(|d| Instant::now() >= d))
                {
                    return;
                }
                if let Some(w) = q.windows.front() {
                    break w.clone();
                }
                q = shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let outcome = post(&agent, cfg, &w);
        let mut q = shared.lock();
        let remove = |q: &mut Queue| {
            if q.windows.front().is_some_and(|f| f.seq == w.seq) {
                q.windows.pop_front();
            }
        };
        match outcome {
            Outcome::Ok => {
                remove(&mut q);
                q.stats.pushed += 1;
                if let Some((n, _)) = failing.take() {
                    let waiting = q.windows.len();
                    let dropped = q.stats.dropped;
                    drop(q);
                    report(&format!(
                        "{} is back after {n} failed attempts; {waiting} more windows queued \
                         ({dropped} dropped so far)",
                        cfg.url
                    ));
                }
                backoff = Duration::ZERO;
            }
            Outcome::Rejected(msg) => {
                remove(&mut q);
                q.stats.rejected += 1;
                q.stats.last_error = Some(msg.clone());
                drop(q);
                report(&format!(
                    "window {}–{} rejected: {msg}",
                    w.from_s, w.until_s
                ));
            }
            Outcome::Retry(msg) => {
                q.stats.failed_attempts += 1;
                q.stats.last_error = Some(msg.clone());
                if q.closed {
                    // Recording is over: no backoff, what is queued stays unsent.
                    return;
                }
                let waiting = q.windows.len();
                let dropped = q.stats.dropped;
                // Capped at the interval too: once the server is back, the windows that
                // waited go out within about one interval.
                let cap = MAX_BACKOFF.min(cfg.interval).max(Duration::from_secs(1));
                backoff = (backoff * 2).clamp(Duration::from_secs(1), cap);
                let (n, last) = failing.get_or_insert((0, Instant::now() - REPORT_EVERY));
                *n += 1;
                let say = last.elapsed() >= REPORT_EVERY;
                if say {
                    *last = Instant::now();
                }
                let n = *n;
                // Wait for the backoff, unless recording ends meanwhile.
                let until = Instant::now() + backoff;
                if say {
                    let msg = format!(
                        "cannot push to {}: {msg}; retrying in {:.0} s ({n} failed attempts, \
                         {waiting} windows waiting, {dropped} dropped; recording goes on)",
                        cfg.url,
                        backoff.as_secs_f64()
                    );
                    drop(q);
                    report(&msg);
                    q = shared.lock();
                }
                while !q.closed {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = shared
                        .cv
                        .wait_timeout(q, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

const BOUNDARY: &str = "gilscope-pprof-boundary-7d3f1c";

/// The request body: multipart/form-data with the profile in the `profile` field (what
/// Pyroscope's ingest takes for `format=pprof`).
fn multipart(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"profile\"; \
             filename=\"profile.pb.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn post(agent: &ureq::Agent, cfg: &PushConfig, w: &Window) -> Outcome {
    let url = format!("{}/ingest", cfg.url);
    let mut req = agent
        .post(&url)
        .query("name", cfg.series_name())
        .query("from", w.from_s.to_string())
        .query("until", w.until_s.to_string())
        .query("format", "pprof")
        .query("sampleRate", format!("{}", w.rate_hz.round() as u64))
        .query("spyName", "gilscope")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    match &cfg.auth {
        Some(Auth::Basic { user, password }) => {
            req = req.header(
                "Authorization",
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            );
        }
        Some(Auth::Bearer(t)) => req = req.header("Authorization", format!("Bearer {t}")),
        None => {}
    }
    if let Some(t) = &cfg.tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    match req.send(&multipart(&w.body)[..]) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Outcome::Ok;
            }
            let text = resp
                .body_mut()
                .with_config()
                .limit(2048)
                .read_to_string()
                .unwrap_or_default();
            let msg = format!(
                "HTTP {status} {}",
                text.trim().chars().take(200).collect::<String>()
            );
            if (400..500).contains(&status) && status != 408 && status != 429 {
                Outcome::Rejected(msg)
            } else {
                Outcome::Retry(msg)
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// Standard base64 (RFC 4648, padded): only for the basic-auth header.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn names_and_tags() {
        let mut c = PushConfig::new("http://h:4040/").unwrap();
        assert_eq!(c.url, "http://h:4040");
        assert_eq!(c.series_name(), "gilscope");
        c.tags = vec![
            parse_tag("env=prod").unwrap(),
            parse_tag("host.name=a1").unwrap(),
        ];
        assert_eq!(c.series_name(), "gilscope{env=prod,host.name=a1}");
        assert!(parse_tag("env").is_err());
        assert!(parse_tag("1x=a").is_err());
        assert!(parse_tag("a=b,c").is_err());
        assert!(PushConfig::new("localhost:4040").is_err());
    }

    /// Feeds `n` runs of 10 ns (one every `every`) to `tap`, after the definitions.
    fn feed(tap: &mut EventTap, n: u64, every: Duration) {
        let frame = crate::model::timeline::Frame {
            function: "f".into(),
            file: "f.py".into(),
            line: 1,
            interpreter: 0,
        };
        tap(&Event::Frame { id: 1, frame });
        tap(&Event::Stack {
            id: 1,
            parent: 0,
            frame: 1,
        });
        tap(&Event::ThreadStart {
            time_ns: 0,
            thread: 0,
            tid: 1,
            start_ticks: 1,
            name: "t".into(),
            os_name: "t".into(),
        });
        for i in 0..n {
            tap(&Event::Run(crate::model::timeline::Run {
                thread: 0,
                start_ns: i * 10,
                end_ns: i * 10 + 10,
                samples: 1,
                interpreter: 0,
                state: crate::model::snapshot::GilState::Held,
                on_cpu: true,
                stack: 1,
                source: crate::model::timeline::Source::Sampled,
            }));
            std::thread::sleep(every);
        }
    }

    /// A server on 127.0.0.1 that accepts connections and, per request, either never answers
    /// (`None`) or answers `Some(status line)`. Returns its URL.
    fn server(answer: Option<&'static str>) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let Some(status) = answer else {
                    held.push(c); // never answered, never closed
                    continue;
                };
                std::thread::spawn(move || {
                    // Read the whole request (headers, then Content-Length bytes of body)
                    // before answering, and say the connection closes: a kept-alive
                    // connection that this server then closed would be reset when the
                    // client reused it, and that is not what these tests are about.
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut got = Vec::new();
                    let mut buf = [0u8; 65536];
                    let complete = |got: &[u8]| {
                        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                            return false;
                        };
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        got.len() >= end + 4 + len
                    };
                    while !complete(&got) {
                        match c.read(&mut buf) {
                            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let _ = write!(
                        c,
                        "{status}\r\nContent-Length: 7\r\nConnection: close\r\n\r\nno way!"
                    );
                });
            }
        });
        url
    }

    #[test]
    fn a_stalled_backend_never_blocks_the_tap_nor_the_end() {
        // The server accepts and never answers; one request would hang for 60 s. Feeding
        // takes ~0.5 s and finishing ~0.2 s; had either waited for the request, it would
        // take 60 s: the bounds below only tell the two apart (not a speed measurement).
        let mut cfg = PushConfig::new(&server(None)).unwrap();
        cfg.interval = Duration::from_millis(50);
        cfg.timeout = Duration::from_secs(60);
        cfg.max_queued = 4;
        let mut p = Pusher::start(cfg, 100.0, Arc::new(|_: &str| {})).unwrap();
        let mut tap = p.tap().unwrap();
        let t0 = Instant::now();
        feed(&mut tap, 40, Duration::from_millis(10));
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        drop(tap);
        let t1 = Instant::now();
        let st = p.finish(Duration::from_millis(200));
        assert!(t1.elapsed() < Duration::from_secs(30), "{:?}", t1.elapsed());
        assert_eq!(st.pushed, 0);
        assert!(st.windows >= 5 && st.dropped >= 1, "{st:?}");
        assert_eq!(st.dropped + st.unsent, st.windows, "{st:?}");
    }

    #[test]
    fn a_refused_window_is_dropped_and_counted() {
        let mut cfg = PushConfig::new(&server(Some("HTTP/1.1 400 Bad Request"))).unwrap();
        cfg.interval = Duration::from_millis(100);
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = said.clone();
        let mut p = Pusher::start(
            cfg,
            100.0,
            Arc::new(move |m: &str| s2.lock().unwrap().push(m.to_string())),
        )
        .unwrap();
        let mut tap = p.tap().unwrap();
        feed(&mut tap, 30, Duration::from_millis(10));
        drop(tap);
        let st = p.finish(Duration::from_secs(2));
        assert!(st.windows >= 2, "{st:?}");
        assert_eq!(st.rejected, st.windows, "{st:?}");
        assert_eq!(st.failed_attempts, 0, "4xx is not retried: {st:?}");
        let said = said.lock().unwrap();
        assert!(
            said.iter()
                .any(|m| m.contains("HTTP 400") && m.contains("no way!")),
            "{said:?}"
        );
        assert!(st.summary_line("u").contains("rejected by the backend"));
    }

    #[test]
    fn a_dead_backend_drops_the_oldest_and_never_blocks() {
        // Nothing listens on port 9 of 127.0.0.1 (discard is not run here): connections fail.
        let mut cfg = PushConfig::new("http://127.0.0.1:9").unwrap();
        cfg.interval = Duration::from_millis(20);
        cfg.max_queued = 3;
        cfg.timeout = Duration::from_millis(200);
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = said.clone();
        let mut p = Pusher::start(
            cfg,
            100.0,
            Arc::new(move |m: &str| s2.lock().unwrap().push(m.to_string())),
        )
        .unwrap();
        let mut tap = p.tap().unwrap();
        feed(&mut tap, 30, Duration::from_millis(10));
        drop(tap);
        let st = p.finish(Duration::from_millis(100));
        assert!(st.windows >= 5, "{st:?}");
        assert_eq!(st.pushed, 0);
        assert!(st.failed_attempts >= 1);
        assert_eq!(st.dropped + st.unsent + st.rejected, st.windows, "{st:?}");
        assert!(st.unsent <= 3);
        assert!(said
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("cannot push")));
    }
}
