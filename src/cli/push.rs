//! `--pyroscope URL` and its options, shared by `record` and `top`: the command line of
//! [`gilscope::push`].

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use gilscope::push::{self, Auth, PushConfig, Pusher, Reporter};

#[derive(Args, Debug, Clone, Default)]
pub struct PushArgs {
    /// Also push a pprof profile of every interval to this Grafana Pyroscope server
    /// (`http://pyroscope:4040`, or a Grafana Cloud profiles URL); docs/fleet.md.
    #[arg(long, value_name = "URL", value_parser = parse_url, help_heading = "Pushing to Pyroscope")]
    pyroscope: Option<String>,
    /// The application name in Pyroscope.
    #[arg(long, value_name = "NAME", default_value = "gilscope", value_parser = parse_app, requires = "pyroscope", help_heading = "Pushing to Pyroscope")]
    app: String,
    /// A label of the series, KEY=VALUE (repeat for more): `--tag env=prod --tag host=a1`.
    #[arg(long = "tag", value_name = "K=V", value_parser = push::parse_tag, requires = "pyroscope", help_heading = "Pushing to Pyroscope")]
    tags: Vec<(String, String)>,
    /// How often to push (`10s`, `500ms`, `1m`; at least 1 s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_interval, requires = "pyroscope", help_heading = "Pushing to Pyroscope")]
    push_interval: Duration,
    /// Windows kept while the server is unreachable; the oldest are dropped (and counted)
    /// beyond this.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000), requires = "pyroscope", help_heading = "Pushing to Pyroscope")]
    push_queue: u32,
    /// HTTP basic auth, USER:PASSWORD (or set GILSCOPE_PYROSCOPE_BASIC_AUTH, which keeps it
    /// out of `ps`).
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        requires = "pyroscope",
        conflicts_with = "auth_token",
        help_heading = "Pushing to Pyroscope"
    )]
    basic_auth: Option<String>,
    /// A bearer token (or set GILSCOPE_PYROSCOPE_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        requires = "pyroscope",
        help_heading = "Pushing to Pyroscope"
    )]
    auth_token: Option<String>,
    /// The tenant, sent as `X-Scope-OrgID` (multi-tenant Pyroscope).
    #[arg(
        long,
        value_name = "ID",
        requires = "pyroscope",
        help_heading = "Pushing to Pyroscope"
    )]
    tenant: Option<String>,
    /// Also label pushed samples with `thread_id` (one series value per thread: use with care).
    #[arg(long, requires = "pyroscope", help_heading = "Pushing to Pyroscope")]
    push_thread_id: bool,
}

fn parse_url(s: &str) -> std::result::Result<String, String> {
    PushConfig::new(s)
        .map(|c| c.url)
        .map_err(|e| format!("{e:#}"))
}

fn parse_app(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() || s.contains(['{', '}', ',', '=', ' ']) || s.chars().any(char::is_control) {
        return Err(format!(
            "{s:?}: an application name is not empty and has no spaces, braces, commas or ="
        ));
    }
    Ok(s.to_string())
}

/// `10s`, `500ms`, `2m`, `10` (seconds).
pub fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 1m)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && (1.0..=3600.0).contains(&secs)) {
        return Err(format!("{s:?}: the push interval is between 1 s and 1 h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl PushArgs {
    /// The pusher's configuration, when `--pyroscope` was given.
    pub fn config(&self) -> Result<Option<PushConfig>> {
        let Some(url) = &self.pyroscope else {
            return Ok(None);
        };
        let mut c = PushConfig::new(url)?;
        c.app = self.app.clone();
        c.tags = self.tags.clone();
        c.interval = self.push_interval;
        c.max_queued = self.push_queue as usize;
        c.timeout = self
            .push_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        c.tenant = self.tenant.clone();
        c.thread_id = self.push_thread_id;
        let basic = self
            .basic_auth
            .clone()
            .or_else(|| std::env::var("GILSCOPE_PYROSCOPE_BASIC_AUTH").ok())
            .filter(|s| !s.is_empty());
        let token = self
            .auth_token
            .clone()
            .or_else(|| std::env::var("GILSCOPE_PYROSCOPE_TOKEN").ok())
            .filter(|s| !s.is_empty());
        c.auth = match (basic, token) {
            (Some(b), _) => {
                let Some((user, password)) = b.split_once(':') else {
                    bail!("--basic-auth: give USER:PASSWORD");
                };
                Some(Auth::Basic {
                    user: user.to_string(),
                    password: password.to_string(),
                })
            }
            (None, Some(t)) => Some(Auth::Bearer(t)),
            (None, None) => None,
        };
        Ok(Some(c))
    }

    /// Starts the pusher when `--pyroscope` was given, reporting on stderr.
    pub fn start(&self, rate_hz: f64) -> Result<Option<Pusher>> {
        self.start_with(rate_hz, push::stderr_reporter())
    }

    pub fn start_with(&self, rate_hz: f64, report: Reporter) -> Result<Option<Pusher>> {
        match self.config()? {
            None => Ok(None),
            Some(c) => {
                let what = format!(
                    "pushing {} every {:.0} s to {}",
                    c.series_name(),
                    c.interval.as_secs_f64(),
                    c.url
                );
                report(&what);
                Pusher::start(c, rate_hz, report).map(Some)
            }
        }
    }
}

/// How long the end of a recording waits for the last windows to go out.
pub const FINISH_GRACE: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_interval("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_interval("5"), Ok(Duration::from_secs(5)));
        assert!(parse_interval("100ms").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
