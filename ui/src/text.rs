//! Shortening names to a width, shared by the TUI and gilscope's text outputs (`summary`,
//! the timeline SVG), so a name looks the same everywhere.

/// `s` cut to at most `w` characters with `…` in the middle, keeping its start and its end
/// (the end tells pool threads apart: `ThreadPoolExecutor-0_17`). Unchanged when it fits.
pub fn shorten_middle(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w < 3 {
        return s.chars().take(w).collect();
    }
    let tail = (w - 1) / 2;
    cut(s, n, w - 1 - tail, tail)
}

/// `s` as its first `head` and last `tail` characters around `…` (`n` = its length).
fn cut(s: &str, n: usize, head: usize, tail: usize) -> String {
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(n - tail));
    out
}

/// Every name cut to `w` characters like [`shorten_middle`], except that names which would
/// come out the same although they differ are cut elsewhere (more of the end first, then
/// more of the start) so that they stay distinct, where any cut of that width can do it.
/// Same names stay the same.
pub fn shorten_distinct(names: &[&str], w: usize) -> Vec<String> {
    let mut out: Vec<String> = names.iter().map(|s| shorten_middle(s, w)).collect();
    if w < 3 {
        return out;
    }
    let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, s) in out.iter().enumerate() {
        groups.entry(s.as_str()).or_default().push(i);
    }
    let clashes: Vec<Vec<usize>> = groups
        .into_values()
        .filter(|g| {
            let mut originals: Vec<&str> = g.iter().map(|&i| names[i]).collect();
            originals.sort_unstable();
            originals.dedup();
            originals.len() > 1
        })
        .collect();
    for group in clashes {
        let balanced = (w - 1) / 2;
        // Tails from the balanced cut up to all of the width, then down to none.
        let tails = (balanced + 1..w).chain((0..balanced).rev());
        for tail in tails {
            let head = w - 1 - tail;
            let cuts: Vec<String> = group
                .iter()
                .map(|&i| {
                    let n = names[i].chars().count();
                    if n <= w {
                        names[i].to_string()
                    } else {
                        cut(names[i], n, head, tail)
                    }
                })
                .collect();
            let mut pairs: Vec<(&str, &str)> = group
                .iter()
                .zip(&cuts)
                .map(|(&i, c)| (c.as_str(), names[i]))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            let distinct = pairs.windows(2).all(|p| p[0].0 != p[1].0);
            if distinct {
                for (&i, c) in group.iter().zip(cuts) {
                    out[i] = c;
                }
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_in_the_middle() {
        assert_eq!(shorten_middle("worker", 10), "worker");
        assert_eq!(
            shorten_middle("InterpreterPoolExecutor-0_1", 12),
            "Interp…r-0_1"
        );
        assert_eq!(shorten_middle("abcdef", 2), "ab");
        assert_eq!(shorten_middle("héllo wörld", 5), "hé…ld");
    }

    #[test]
    fn keeps_distinct_names_distinct() {
        // Differ only in the middle: the balanced cut makes them equal.
        let names = [
            "pool-alpha-worker-7",
            "pool-betaa-worker-7",
            "pool-alpha-worker-7",
        ];
        let plain: Vec<String> = names.iter().map(|n| shorten_middle(n, 9)).collect();
        assert_eq!(plain[0], plain[1]);
        let got = shorten_distinct(&names, 9);
        assert_ne!(got[0], got[1]);
        assert_eq!(got[0], got[2], "same names stay the same");
        assert!(got.iter().all(|g| g.chars().count() <= 9), "{got:?}");
        // Different at the end: the usual cut already tells them apart.
        let pool = ["ThreadPoolExecutor-0_0", "ThreadPoolExecutor-0_1"];
        assert_eq!(
            shorten_distinct(&pool, 12),
            vec!["Thread…r-0_0".to_string(), "Thread…r-0_1".to_string()]
        );
        // Short names untouched.
        assert_eq!(shorten_distinct(&["a", "b"], 12), vec!["a", "b"]);
    }
}
