//! pprof's fuzz target (`fuzz/fuzz_targets/pprof.rs`): the decoder on arbitrary bytes, and
//! the encoder on the model of arbitrary trace bytes.
//!
//! * What decodes re-encodes to a profile that decodes to the same.
//! * What the encoder makes decodes to itself; every location, function and string it refers
//!   to exists; its values add up to the model's stack totals; a window over nothing new is
//!   empty.

use crate::output::export::pprof::{
    decode, encode_gz, estimate_comment, profile, proto, PprofOptions, Selection, StackTotals,
};
use crate::trace::Metadata;

use super::trace::{fix_crcs, read_model};
use crate::model::timeline::Timeline;

pub fn fuzz_one(bytes: &[u8]) {
    if let Ok(p) = decode(bytes) {
        let again = decode(&encode_gz(&p)).expect("a re-encoded profile decodes");
        assert!(
            again == p,
            "a decoded profile does not survive a round trip"
        );
    }
    let mut fixed = bytes.to_vec();
    fix_crcs(&mut fixed);
    if let Some((meta, tl)) = read_model(&fixed) {
        encode(&meta, &tl);
    }
}

fn encode(meta: &Metadata, tl: &Timeline) {
    let rate = meta.options.rate_hz;
    let opts = PprofOptions {
        thread_id: true,
        rate_hz: rate,
        start_unix_ns: meta.clock.start_unix_ns,
        duration_ns: tl.duration_ns(),
        comments: vec![estimate_comment(rate, false)],
        no_lines: false,
    };
    let p = profile(tl, None, &Selection::default(), &opts);
    let back = decode(&encode_gz(&p)).expect("an encoded profile decodes");
    assert!(back == p, "an encoded profile does not decode to itself");
    check_references(&p);

    // The values add up to the model (unless a value had to be clamped to i64::MAX).
    let want = StackTotals::of(tl).total();
    let mut got = (0u128, 0u128);
    let mut clamped = want.samples == u64::MAX || want.ns == u64::MAX;
    for s in &p.sample {
        assert_eq!(s.value.len(), 2, "a sample has {} values", s.value.len());
        clamped |= s.value.contains(&i64::MAX);
        got.0 += u128::try_from(s.value[0]).expect("a negative sample count");
        got.1 += u128::try_from(s.value[1]).expect("a negative duration");
    }
    if !clamped {
        assert_eq!(
            got,
            (u128::from(want.samples), u128::from(want.ns)),
            "the profile's values are not the model's totals"
        );
    }
    let window = profile(tl, Some(&StackTotals::of(tl)), &Selection::default(), &opts);
    assert!(
        window.sample.is_empty(),
        "a window over nothing new has samples"
    );
}

fn check_references(p: &proto::Profile) {
    let strings = p.string_table.len() as i64;
    assert_eq!(p.string_table.first().map(String::as_str), Some(""));
    let string = |i: i64, what: &str| assert!((0..strings).contains(&i), "{what} {i}");
    for vt in p.sample_type.iter().chain(&p.period_type) {
        string(vt.r#type, "value type");
        string(vt.unit, "value unit");
    }
    for c in &p.comment {
        string(*c, "comment");
    }
    string(p.default_sample_type, "default sample type");
    for (i, f) in p.function.iter().enumerate() {
        assert_eq!(f.id, i as u64 + 1, "function ids are 1, 2, ...");
        string(f.name, "function name");
        string(f.filename, "file name");
    }
    for (i, l) in p.location.iter().enumerate() {
        assert_eq!(l.id, i as u64 + 1, "location ids are 1, 2, ...");
        for line in &l.line {
            assert!(
                (1..=p.function.len() as u64).contains(&line.function_id),
                "location {} names function {}",
                l.id,
                line.function_id
            );
        }
    }
    for s in &p.sample {
        assert!(!s.location_id.is_empty(), "a sample without a location");
        for id in &s.location_id {
            assert!(
                (1..=p.location.len() as u64).contains(id),
                "a sample names location {id}"
            );
        }
        for l in &s.label {
            string(l.key, "label key");
            string(l.str, "label value");
        }
    }
}
