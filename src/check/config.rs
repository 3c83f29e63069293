//! `[tool.gilscope]` in `pyproject.toml`, merged under the command line.
//!
//! ```toml
//! [tool.gilscope]
//! max-hold = "50ms"            # or a number of milliseconds
//! rate = 1000                  # samples per second
//! subinterpreters = false      # also try importing extensions in an own-GIL interpreter
//! include-imports = false      # also fail on holds while a module is imported
//! allow = [
//!   { object = "libcrypto*.so*", reason = "hashing big buffers; tracked in #123" },
//!   { object = "_mymod*.so", symbol = "slow_path", reason = "only in tests" },
//! ]
//! ```
//!
//! Unknown keys are errors that name the key: a typo must not silently turn a check off.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One allow-list entry: findings whose object (and symbol, when given) match are reported as
/// allowed and do not fail the check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Glob (`*`, `?`) on the shared object's file name, or on its full path when it has a `/`.
    pub object: Option<String>,
    /// Glob on the native symbol.
    pub symbol: Option<String>,
    /// Why it is allowed (required: it is shown beside every allowed finding).
    pub reason: String,
}

impl AllowRule {
    pub fn matches(&self, object: &str, symbol: Option<&str>) -> bool {
        let obj_ok = self.object.as_deref().is_none_or(|pat| {
            if pat.contains('/') {
                glob(pat, object)
            } else {
                glob(pat, object.rsplit('/').next().unwrap_or(object))
            }
        });
        let sym_ok = self
            .symbol
            .as_deref()
            .is_none_or(|pat| symbol.is_some_and(|s| glob(pat, s)));
        obj_ok && sym_ok
    }
}

/// `*` matches any run of characters, `?` one character; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A duration in the file: `"50ms"`, `"0.2s"`, or a number of milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Millis {
    Number(f64),
    Text(String),
}

/// Parses "50ms", "0.2s", "1500us" or a plain number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else {
        (s, 1.0)
    };
    // Scaled first: "1e308s" is no finite number of milliseconds, "5e-324us" no positive one.
    match num.trim().parse::<f64>().map(|v| v * scale) {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!(
            "{s:?} is not a duration: use e.g. 50ms, 0.2s or a number of milliseconds"
        )),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileTable {
    max_hold: Option<Millis>,
    rate: Option<f64>,
    subinterpreters: Option<bool>,
    include_imports: Option<bool>,
    include_interpreter: Option<bool>,
    max_gc_pause: Option<Millis>,
    #[serde(default)]
    allow: Vec<AllowRule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Tool {
    gilscope: Option<FileTable>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Pyproject {
    tool: Option<Tool>,
}

/// What `[tool.gilscope]` said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    /// The file it came from.
    pub path: Option<PathBuf>,
    pub max_hold_ms: Option<f64>,
    pub rate_hz: Option<f64>,
    pub subinterpreters: Option<bool>,
    pub include_imports: Option<bool>,
    pub include_interpreter: Option<bool>,
    pub max_gc_pause_ms: Option<f64>,
    pub allow: Vec<AllowRule>,
}

/// Parses the text of a pyproject.toml (`path` for messages). No `[tool.gilscope]` → empty.
pub fn parse_pyproject(text: &str, path: &Path) -> Result<FileConfig> {
    // toml's message names the key and shows the line ("unknown field `max_hold`, expected
    // one of `max-hold`, ...").
    let doc: Pyproject = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let Some(t) = doc.tool.and_then(|t| t.gilscope) else {
        return Ok(FileConfig {
            path: Some(path.to_path_buf()),
            ..FileConfig::default()
        });
    };
    let max_hold_ms = millis(t.max_hold, "max-hold", path)?;
    let max_gc_pause_ms = millis(t.max_gc_pause, "max-gc-pause", path)?;
    if let Some(r) = t.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!(
                "{}: [tool.gilscope] rate = {r}: must be a positive number of samples per second",
                path.display()
            );
        }
    }
    for (i, a) in t.allow.iter().enumerate() {
        if a.object.is_none() && a.symbol.is_none() {
            bail!(
                "{}: [tool.gilscope] allow[{i}]: give `object` or `symbol` (or both)",
                path.display()
            );
        }
        if a.reason.trim().is_empty() {
            bail!(
                "{}: [tool.gilscope] allow[{i}]: `reason` must say why it is allowed",
                path.display()
            );
        }
    }
    Ok(FileConfig {
        path: Some(path.to_path_buf()),
        max_hold_ms,
        rate_hz: t.rate,
        subinterpreters: t.subinterpreters,
        include_imports: t.include_imports,
        include_interpreter: t.include_interpreter,
        max_gc_pause_ms,
        allow: t.allow,
    })
}

/// A duration key of `[tool.gilscope]`: a number of milliseconds or a text like "50ms".
fn millis(v: Option<Millis>, key: &str, path: &Path) -> Result<Option<f64>> {
    Ok(match v {
        None => None,
        Some(Millis::Number(n)) if n.is_finite() && n > 0.0 => Some(n),
        Some(Millis::Number(n)) => bail!(
            "{}: [tool.gilscope] {key} = {n}: must be a positive number of milliseconds",
            path.display()
        ),
        Some(Millis::Text(s)) => Some(
            parse_duration_ms(&s)
                .map_err(|e| anyhow::anyhow!("{}: [tool.gilscope] {key}: {e}", path.display()))?,
        ),
    })
}

/// Reads `pyproject.toml` from `dir` or its nearest ancestor that has one; `None` when there
/// is none.
pub fn find_pyproject(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("pyproject.toml"))
        .find(|p| p.is_file())
}

/// Loads the configuration file: `explicit` when given, else the nearest pyproject.toml.
pub fn load(explicit: Option<&Path>, cwd: &Path) -> Result<FileConfig> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match find_pyproject(cwd) {
            Some(p) => p,
            None => return Ok(FileConfig::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    parse_pyproject(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FileConfig> {
        parse_pyproject(s, Path::new("pyproject.toml"))
    }

    #[test]
    fn globs() {
        assert!(glob("libcrypto*.so*", "libcrypto.so.3"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*_hold_*", "gilext_hold_spin"));
        assert!(!glob("*_hold_*", "gilext_release_spin"));
    }

    #[test]
    fn reads_the_table() {
        let c = parse(
            r#"
[project]
name = "x"
[tool.black]
line-length = 100
[tool.gilscope]
max-hold = "20ms"
rate = 500
allow = [{ object = "gilext*.so", symbol = "gilext_hold_*", reason = "the test's own" }]
"#,
        )
        .unwrap();
        assert_eq!(c.max_hold_ms, Some(20.0));
        assert_eq!(c.rate_hz, Some(500.0));
        assert_eq!(c.allow.len(), 1);
        assert!(c.allow[0].matches(
            "/x/gilext.cpython-312-x86_64-linux-gnu.so",
            Some("gilext_hold_spin")
        ));
        assert!(!c.allow[0].matches(
            "/x/gilext.cpython-312-x86_64-linux-gnu.so",
            Some("gilext_release_spin")
        ));
        assert!(!c.allow[0].matches("/x/other.so", Some("gilext_hold_spin")));
        assert_eq!(
            parse("[tool.gilscope]\nmax-hold = 75\n")
                .unwrap()
                .max_hold_ms,
            Some(75.0)
        );
        assert_eq!(
            parse("[project]\nname='x'\n").unwrap(),
            FileConfig {
                path: Some("pyproject.toml".into()),
                ..FileConfig::default()
            }
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = format!(
            "{:#}",
            parse("[tool.gilscope]\nmax_hold = 20\n").unwrap_err()
        );
        assert!(e.contains("max_hold"), "{e}");
        let e = format!(
            "{:#}",
            parse("[tool.gilscope]\nallow = [{ object = \"a\", reason = \"r\", symbl = \"s\" }]\n")
                .unwrap_err()
        );
        assert!(e.contains("symbl"), "{e}");
        let e = format!(
            "{:#}",
            parse("[tool.gilscope]\nmax-hold = \"fast\"\n").unwrap_err()
        );
        assert!(e.contains("max-hold") && e.contains("fast"), "{e}");
        let e = format!(
            "{:#}",
            parse("[tool.gilscope]\nallow = [{ object = \"a\", reason = \" \" }]\n").unwrap_err()
        );
        assert!(e.contains("reason"), "{e}");
        let e = format!("{:#}", parse("[tool.gilscope\n").unwrap_err());
        assert!(e.contains("pyproject.toml"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("50ms"), Ok(50.0));
        assert_eq!(parse_duration_ms("0.2s"), Ok(200.0));
        assert_eq!(parse_duration_ms("1500us"), Ok(1.5));
        assert_eq!(parse_duration_ms("7"), Ok(7.0));
        assert!(parse_duration_ms("-1ms").is_err());
        assert!(parse_duration_ms("soon").is_err());
        // Fuzzed: finite and positive only after scaling.
        assert!(parse_duration_ms("1e308s").is_err());
        assert!(parse_duration_ms("5e-324us").is_err());
    }
}
