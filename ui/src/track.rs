//! A time-sorted sequence of non-overlapping spans, each adding its duration
//! to one or more of `N` categories, with a sparse prefix-sum index so that
//! "how much time in each category between `a` and `b`" costs two binary
//! searches plus at most `2 * BLOCK` additions, whatever the span count.
//!
//! Memory: the spans themselves plus one `[u64; N]` per `BLOCK` spans.

/// Spans per checkpoint.
const BLOCK: usize = 16;

/// A span of time of a [`Track`] (a thread's state segment, a GIL's lock segment).
pub trait Span<const N: usize>: Copy {
    fn start(&self) -> u64;
    fn end(&self) -> u64;
    fn set_start(&mut self, t: u64);
    fn set_end(&mut self, t: u64);
    /// Add `ns` of this span's time to its categories.
    fn add(&self, acc: &mut [u64; N], ns: u64);
    /// Whether `next` (starting where `self` ends) carries the same data.
    fn same_kind(&self, next: &Self) -> bool;
}

/// One timeline of spans: a thread's lane ([`crate::Lane`]) and a GIL's track
/// ([`crate::GilTrack`]) are both this, with their own span type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track<S, const N: usize> {
    spans: Vec<S>,
    /// `cum[k]` = totals over `spans[..k * BLOCK]`. `cum[0]` is zero. A
    /// checkpoint is only made once the span after it exists, so the last span
    /// (the one [`Track::push`] may extend) is never inside a checkpoint.
    cum: Vec<[u64; N]>,
    /// `starts[k]` = start of `spans[k * BLOCK]`: a small index searched
    /// first, so a lookup touches a few cache lines, not ~log2(n).
    starts: Vec<u64>,
}

impl<S: Span<N>, const N: usize> Default for Track<S, N> {
    fn default() -> Self {
        Track {
            spans: Vec::new(),
            cum: vec![[0; N]],
            starts: Vec::new(),
        }
    }
}

impl<S: Span<N>, const N: usize> Track<S, N> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sorts by start, drops empty spans, clips overlaps (an earlier span wins)
    /// and merges touching spans of the same kind.
    pub fn from_segments(spans: impl IntoIterator<Item = S>) -> Self {
        let mut spans: Vec<S> = spans.into_iter().collect();
        spans.sort_by_key(|s| s.start());
        let mut t = Track::default();
        t.spans.reserve(spans.len());
        for s in spans {
            t.push(s);
        }
        t
    }

    /// Appends a span. Parts before the end of the last span are cut off;
    /// empty spans are ignored; a span continuing the last one is merged in.
    pub fn push(&mut self, mut s: S) {
        if let Some(last) = self.spans.last_mut() {
            if s.start() < last.end() {
                s.set_start(last.end());
            }
            if s.end() <= s.start() {
                return;
            }
            if s.start() == last.end() && last.same_kind(&s) {
                last.set_end(s.end());
                return;
            }
        } else if s.end() <= s.start() {
            return;
        }
        let idx = self.spans.len();
        if idx > 0 && idx.is_multiple_of(BLOCK) {
            let mut acc = *self.cum.last().expect("cum[0] exists");
            for sp in &self.spans[idx - BLOCK..idx] {
                sp.add(&mut acc, sp.end() - sp.start());
            }
            self.cum.push(acc);
        }
        if idx.is_multiple_of(BLOCK) {
            self.starts.push(s.start());
        }
        self.spans.push(s);
    }

    pub fn segments(&self) -> &[S] {
        &self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Start of the first and end of the last span.
    pub fn extent(&self) -> Option<(u64, u64)> {
        Some((self.spans.first()?.start(), self.spans.last()?.end()))
    }

    /// Drops everything before `t` (spans ending at or before `t` go, a span
    /// straddling `t` is cut). Rebuilds the index: O(n), call it now and then.
    pub fn trim_before(&mut self, t: u64) {
        let cut = self.spans.partition_point(|s| s.end() <= t);
        if cut == 0 && self.spans.first().is_none_or(|s| s.start() >= t) {
            return;
        }
        let mut rest: Vec<S> = self.spans.split_off(cut);
        if let Some(first) = rest.first_mut() {
            if first.start() < t {
                first.set_start(t);
            }
        }
        *self = Track::default();
        self.spans.reserve(rest.len());
        for s in rest.drain(..) {
            self.push(s);
        }
    }

    /// Number of spans starting before `t` (at or before, if `inclusive`).
    fn count_starting_before(&self, t: u64, inclusive: bool) -> usize {
        self.count_starting_before_from(t, inclusive, 0)
    }

    /// As [`Self::count_starting_before`], knowing the answer is at least
    /// `from`: gallops forward from there (consecutive cells search close
    /// to each other).
    fn count_starting_before_from(&self, t: u64, inclusive: bool, from: usize) -> usize {
        let before = |st: u64| if inclusive { st <= t } else { st < t };
        let first = (from / BLOCK).min(self.starts.len());
        let starts = &self.starts[first..];
        // Gallop: find a bound where the start is no longer before t.
        let mut hi = 1;
        while hi < starts.len() && before(starts[hi]) {
            hi *= 2;
        }
        let lo = hi / 2;
        let hi = hi.min(starts.len());
        let b = first + lo + starts[lo..hi].partition_point(|&st| before(st));
        if b == 0 {
            return 0;
        }
        let base = (b - 1) * BLOCK;
        let block = &self.spans[base..(base + BLOCK).min(self.spans.len())];
        base + block.partition_point(|s| before(s.start()))
    }

    /// Index of the first span ending after `t`.
    fn first_ending_after(&self, t: u64) -> usize {
        let k = self.count_starting_before(t, true);
        if k > 0 && self.spans[k - 1].end() > t {
            k - 1
        } else {
            k
        }
    }

    /// Totals over `spans[..k]`.
    fn prefix(&self, k: usize) -> [u64; N] {
        let b = (k / BLOCK).min(self.cum.len() - 1);
        let mut acc = self.cum[b];
        for s in &self.spans[b * BLOCK..k] {
            s.add(&mut acc, s.end() - s.start());
        }
        acc
    }

    /// Totals over `spans[i..j]` (whole spans).
    fn range_sum(&self, i: usize, j: usize) -> [u64; N] {
        let mut acc = [0; N];
        if j <= i {
            return acc;
        }
        if j - i <= 2 * BLOCK {
            for s in &self.spans[i..j] {
                s.add(&mut acc, s.end() - s.start());
            }
            return acc;
        }
        let hi = self.prefix(j);
        let lo = self.prefix(i);
        for c in 0..N {
            acc[c] = hi[c] - lo[c];
        }
        acc
    }

    /// Time per category within `[a, b)`.
    pub fn sum(&self, a: u64, b: u64) -> [u64; N] {
        if b <= a {
            return [0; N];
        }
        let i = self.first_ending_after(a);
        let j = self.count_starting_before(b, false).max(i);
        self.clipped(i, j, a, b)
    }

    /// Totals of `spans[i..j]` clipped to `[a, b)`, where `spans[i..j]` are
    /// exactly the spans overlapping it.
    fn clipped(&self, i: usize, j: usize, a: u64, b: u64) -> [u64; N] {
        if j <= i {
            return [0; N];
        }
        if j - i == 1 {
            let s = &self.spans[i];
            let mut acc = [0; N];
            s.add(&mut acc, s.end().min(b) - s.start().max(a));
            return acc;
        }
        let mut acc = self.range_sum(i + 1, j - 1);
        let first = &self.spans[i];
        first.add(&mut acc, first.end() - first.start().max(a));
        let last = &self.spans[j - 1];
        last.add(&mut acc, last.end().min(b) - last.start());
        acc
    }

    /// Calls `f(col, totals)` for each of `cols` equal cells covering
    /// `[a, b)`, walking the spans once.
    pub fn cells_with(&self, a: u64, b: u64, cols: usize, mut f: impl FnMut(usize, &[u64; N])) {
        if cols == 0 || b <= a {
            return;
        }
        let width = (b - a) as u128;
        let edge = |c: usize| a + (width * c as u128 / cols as u128) as u64;
        let mut lo = self.first_ending_after(a);
        let mut t0 = a;
        for c in 0..cols {
            let t1 = edge(c + 1);
            if t1 <= t0 {
                continue;
            }
            let rest = &self.spans[lo..];
            // Spans overlapping [t0, t1) are rest[..n].
            let n = if rest.first().is_none_or(|s| s.start() >= t1) {
                0
            } else if rest.get(1).is_none_or(|s| s.start() >= t1) {
                1
            } else {
                self.count_starting_before_from(t1, false, lo) - lo
            };
            if n > 0 {
                let totals = self.clipped(lo, lo + n, t0, t1);
                f(c, &totals);
                // The last overlapping span may continue into the next cell.
                lo += if rest[n - 1].end() > t1 { n - 1 } else { n };
            }
            t0 = t1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Sp(u64, u64, usize);

    impl Span<3> for Sp {
        fn start(&self) -> u64 {
            self.0
        }
        fn end(&self) -> u64 {
            self.1
        }
        fn set_start(&mut self, t: u64) {
            self.0 = t
        }
        fn set_end(&mut self, t: u64) {
            self.1 = t
        }
        fn add(&self, acc: &mut [u64; 3], ns: u64) {
            acc[self.2] += ns
        }
        fn same_kind(&self, next: &Self) -> bool {
            self.2 == next.2
        }
    }

    fn naive(spans: &[Sp], a: u64, b: u64) -> [u64; 3] {
        let mut acc = [0; 3];
        for s in spans {
            let lo = s.0.max(a);
            let hi = s.1.min(b);
            if hi > lo {
                acc[s.2] += hi - lo;
            }
        }
        acc
    }

    fn sample() -> Vec<Sp> {
        // Deterministic pseudo-random spans with gaps.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut t = 5;
        let mut v = Vec::new();
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + x % 17;
            let gap = if x.is_multiple_of(11) { x % 5 } else { 0 };
            t += gap;
            v.push(Sp(t, t + len, (x % 3) as usize));
            t += len;
        }
        v
    }

    #[test]
    fn sums_match_naive() {
        let spans = sample();
        let tr = Track::from_segments(spans.clone());
        let end = spans.last().unwrap().1 + 10;
        for (a, b) in [
            (0, end),
            (3, 17),
            (100, 101),
            (777, 5000),
            (0, 1),
            (end - 20, end),
        ] {
            assert_eq!(tr.sum(a, b), naive(&spans, a, b), "[{a},{b})");
        }
        let mut a = 0;
        while a < end {
            assert_eq!(tr.sum(a, a + 333), naive(&spans, a, a + 333));
            a += 97;
        }
    }

    #[test]
    fn cells_match_sum() {
        let spans = sample();
        let tr = Track::from_segments(spans.clone());
        let end = spans.last().unwrap().1 + 10;
        for cols in [1, 7, 60, 500, 20000] {
            for (a, b) in [(0, end), (123, 456), (50, 52)] {
                let mut seen = vec![[0u64; 3]; cols];
                tr.cells_with(a, b, cols, |c, t| seen[c] = *t);
                let w = (b - a) as u128;
                for (c, got) in seen.iter().enumerate() {
                    let t0 = a + (w * c as u128 / cols as u128) as u64;
                    let t1 = a + (w * (c + 1) as u128 / cols as u128) as u64;
                    let want = if t1 > t0 {
                        naive(&spans, t0, t1)
                    } else {
                        [0; 3]
                    };
                    assert_eq!(*got, want, "cols {cols} [{a},{b}) cell {c}");
                }
            }
        }
    }

    #[test]
    fn push_merges_clips_and_trims() {
        let mut tr: Track<Sp, 3> = Track::default();
        tr.push(Sp(0, 10, 0));
        tr.push(Sp(10, 20, 0));
        tr.push(Sp(15, 30, 1)); // overlap clipped
        tr.push(Sp(40, 40, 2)); // empty
        tr.push(Sp(40, 50, 2));
        assert_eq!(tr.segments(), &[Sp(0, 20, 0), Sp(20, 30, 1), Sp(40, 50, 2)]);
        tr.trim_before(25);
        assert_eq!(tr.segments(), &[Sp(25, 30, 1), Sp(40, 50, 2)]);
        assert_eq!(tr.sum(0, 100), [0, 5, 10]);
        let mut big = Track::from_segments(sample());
        let all = big.segments().to_vec();
        big.trim_before(4000);
        assert_eq!(big.sum(0, u64::MAX), naive(&all, 4000, u64::MAX));
    }
}
