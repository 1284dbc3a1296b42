//! The compliance export format: writing, verifying, and refusing every damaged or
//! malformed file with the line named, never a panic.

use std::collections::BTreeMap;
use std::io::Cursor;

use ledger::checkpoint::{origin, SigningKey};
use ledger::merkle::{self, Tree};
use ledger::*;
use replay::export::{
    event_line, event_line_paths, event_line_reference, format_event_line, parse_event_line,
    verify_export, verify_export_seekable, verify_export_tuned, CsvWriter, ExportError, Filter,
    Header, JsonlWriter, Tuning, Verified, VerifyError, MAX_LINE,
};

const LEDGER_ID: [u8; 16] = [0xab; 16];
const T0: i64 = 1_700_000_000_000_000;

fn content(bytes: &[u8], mode: Mode) -> Content {
    Content {
        hash: Hash::of_content(bytes),
        mode,
        size: bytes.len() as u64,
    }
}

/// A chain of events of every kind, with awkward text (quotes, control characters,
/// non-UTF-8 names, formula-looking values).
fn events() -> Vec<(Event, Hash)> {
    let bodies: Vec<(&str, &str, Body)> = vec![
        (
            "ledger-init",
            "genesis",
            Body::Genesis(Genesis {
                ledger_id: LEDGER_ID,
                format_version: 1,
            }),
        ),
        (
            "agent-1",
            "c1",
            Body::Change(Change {
                message: Some("add \"files\"\n\tline two \u{1F600}".into()),
                reverts: None,
                resources: vec![
                    ResourceChange {
                        key: ResourceKey::file(b"src/a,b.rs"),
                        op: Op::Create,
                        old: None,
                        new: Some(content(b"a\n", Mode::Regular)),
                    },
                    ResourceChange {
                        key: ResourceKey::file(b"bin/\xff\xfe-raw"),
                        op: Op::Create,
                        old: None,
                        new: Some(content(b"#!/bin/sh\n", Mode::Executable)),
                    },
                ],
            }),
        ),
        (
            "agent-2",
            "c2",
            Body::Check(Check {
                name: "lint".into(),
                level: "blocking".into(),
                passed: false,
                detail: Some("=HYPERLINK(\"x\")".into()),
            }),
        ),
        (
            "agent-1",
            "c3",
            Body::Change(Change {
                message: None,
                reverts: Some("c1".into()),
                resources: vec![
                    ResourceChange {
                        key: ResourceKey::file(b"src/a,b.rs"),
                        op: Op::Modify,
                        old: Some(content(b"a\n", Mode::Regular)),
                        new: Some(content(b"b\n", Mode::Executable)),
                    },
                    ResourceChange {
                        key: ResourceKey {
                            namespace: "flag".into(),
                            name: Name::from("checkout-v2"),
                        },
                        op: Op::Delete,
                        old: Some(content(b"on", Mode::Regular)),
                        new: None,
                    },
                    ResourceChange {
                        key: ResourceKey::file(b"link"),
                        op: Op::Create,
                        old: None,
                        new: Some(content(b"target", Mode::Symlink)),
                    },
                ],
            }),
        ),
        (
            "human",
            "c1",
            Body::Approval(Approval {
                approver: "alice".into(),
                approved: true,
                comment: None,
            }),
        ),
        (
            "deployer",
            "c3",
            Body::Deployment(Deployment {
                environment: "prod".into(),
                percent: 100,
                version: "1.2.3".into(),
            }),
        ),
        (
            "agent-2",
            "c4",
            Body::Failure(Failure {
                stage: "exec".into(),
                error: "exit 2".into(),
                exit_code: Some(-2),
            }),
        ),
        (
            "ops",
            "k1",
            Body::KillSwitch(KillSwitch {
                engaged: true,
                scope: "*".into(),
                reason: "incident".into(),
            }),
        ),
        (
            "ledger",
            "r1",
            Body::Redaction(Redaction {
                hash: Hash::of_content(b"a\n"),
                reason: "secret".into(),
            }),
        ),
        (
            "ledger",
            "checkpoint-9",
            Body::Checkpoint(Checkpoint {
                size: 9,
                root: Hash([9; 32]),
            }),
        ),
        (
            "agent-1",
            "c5",
            Body::Change(Change {
                message: Some("last".into()),
                reverts: None,
                resources: vec![ResourceChange {
                    key: ResourceKey::file(b"-rm"),
                    op: Op::Delete,
                    old: Some(content(b"b\n", Mode::Executable)),
                    new: None,
                }],
            }),
        ),
    ];
    let mut out = Vec::new();
    let mut prev = Hash::ZERO;
    for (i, (agent, change, body)) in bodies.into_iter().enumerate() {
        let mut meta = BTreeMap::new();
        if i % 2 == 1 {
            meta.insert("tool".to_string(), "edit".to_string());
            meta.insert("z\"q".to_string(), "v\u{7}".to_string());
        }
        let ev = Event {
            seq: i as u64,
            prev,
            time_us: T0 + i as i64 * 1_000_000,
            actor: Actor {
                agent: agent.into(),
                principal: (i % 3 == 0).then(|| "alice@example.com".to_string()),
                role: (i % 4 == 0).then(|| "coder".to_string()),
            },
            change_id: change.into(),
            correlation_id: (i % 2 == 0).then(|| format!("req-{i}")),
            body,
            meta,
        };
        let h = ev.hash();
        prev = h;
        out.push((ev, h));
    }
    out
}

fn key() -> SigningKey {
    SigningKey::from_seed(&origin(&LEDGER_ID), [5; 32]).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_seed(&origin(&LEDGER_ID), [6; 32]).unwrap()
}

/// Writes an export of `evs` the way the CLI does.
fn export(evs: &[(Event, Hash)], filter: Filter, sign: Option<&SigningKey>) -> Vec<u8> {
    let leaves: Vec<Hash> = evs.iter().map(|(_, h)| merkle::leaf_hash(h)).collect();
    let tree = Tree::from_leaves(leaves);
    let header = Header::new(
        origin(&LEDGER_ID),
        T0 + 99,
        filter.clone(),
        sign.is_some(),
        tree.size(),
        tree.root(),
    );
    let proofs = (!filter.is_empty()).then(|| tree.clone());
    let mut w = JsonlWriter::new(Vec::new(), header, proofs).unwrap();
    for (e, h) in evs {
        if filter.matches(e) {
            w.event(e, h).unwrap();
        }
    }
    let (out, summary) = w.finish(evs.last().unwrap().1, T0 + 100, sign).unwrap();
    assert_eq!(summary.bytes as usize, out.len());
    out
}

/// Verifies as the CLI does (a seekable file), and checks that streaming verification
/// agrees on success.
fn verify(bytes: &[u8], key: Option<&SigningKey>) -> Result<Verified, VerifyError> {
    let vk = key.map(|k| k.verifier());
    let seekable = verify_export_seekable(&mut Cursor::new(bytes), vk.as_ref(), MAX_LINE);
    let streamed = verify_export(&mut &bytes[..], vk.as_ref(), MAX_LINE);
    match (&seekable, &streamed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("seekable {seekable:?} and streamed {streamed:?} disagree"),
    }
    // The verdict, line and reason do not depend on how the work is spread: one line
    // per batch on worker threads, tiny batches, everything on this thread.
    for (batch_bytes, threads) in [(1, 2), (300, 3), (1 << 20, 0)] {
        let tuning = Tuning {
            batch_bytes,
            threads,
        };
        for (is_seekable, base) in [(true, &seekable), (false, &streamed)] {
            let tuned = verify_export_tuned(
                &mut Cursor::new(bytes),
                vk.as_ref(),
                MAX_LINE,
                is_seekable,
                tuning,
            );
            assert_eq!(
                format!("{tuned:?}"),
                format!("{base:?}"),
                "{tuning:?}, seekable {is_seekable}"
            );
        }
    }
    seekable
}

fn rejected_line(bytes: &[u8], key: Option<&SigningKey>) -> (u64, String) {
    match verify(bytes, key) {
        Err(VerifyError::Rejected { line, reason }) => (line, reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    assert!(v.pop().unwrap().is_empty(), "ends with a newline");
    v
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn by_agent(a: &str) -> Filter {
    Filter {
        agent: Some(a.into()),
        ..Default::default()
    }
}

/// Every kind of export the tests mutate.
fn variants() -> Vec<(&'static str, Vec<u8>, Option<SigningKey>)> {
    let evs = events();
    let k = key();
    vec![
        (
            "unfiltered signed",
            export(&evs, Filter::default(), Some(&k)),
            Some(key()),
        ),
        (
            "unfiltered unsigned",
            export(&evs, Filter::default(), None),
            None,
        ),
        (
            "filtered signed",
            export(&evs, by_agent("agent-1"), Some(&k)),
            Some(key()),
        ),
        (
            "filtered unsigned",
            export(&evs, by_agent("agent-1"), None),
            None,
        ),
        (
            "time filtered signed",
            export(
                &evs,
                Filter {
                    since_us: Some(T0 + 2_000_000),
                    until_us: Some(T0 + 6_000_000),
                    ..Default::default()
                },
                Some(&k),
            ),
            Some(key()),
        ),
    ]
}

#[test]
fn exports_verify() {
    let evs = events();
    let k = key();
    let full = export(&evs, Filter::default(), Some(&k));
    let v = verify(&full, Some(&k)).unwrap();
    assert_eq!(v.events, evs.len() as u64);
    assert_eq!((v.first_seq, v.last_seq), (Some(0), Some(10)));
    assert!(v.signature_checked);
    assert_eq!(v.checkpoint.size, 11);
    assert_eq!(v.checkpoint.head, evs[10].1);
    assert_eq!(v.lines, 13);
    // Without the key everything but the signatures is checked.
    let v = verify(&full, None).unwrap();
    assert!(!v.signature_checked);

    let part = export(&evs, by_agent("agent-1"), Some(&k));
    let v = verify(&part, Some(&k)).unwrap();
    assert_eq!(v.events, 3);
    assert_eq!((v.first_seq, v.last_seq), (Some(1), Some(10)));
    assert_eq!(v.header.filter, by_agent("agent-1"));

    for (name, bytes, key) in variants() {
        verify(&bytes, key.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // An export matching nothing is still a valid (filtered) export.
    let none = export(&evs, by_agent("nobody"), Some(&k));
    assert_eq!(verify(&none, Some(&k)).unwrap().events, 0);
}

#[test]
fn json_lines_look_as_documented() {
    let evs = events();
    let full = export(&evs, Filter::default(), None);
    let ls = lines(&full);
    let header: serde_json::Value = serde_json::from_slice(&ls[0]).unwrap();
    assert_eq!(header["type"], "header");
    assert_eq!(header["format"], "agent-ledger-export");
    assert_eq!(header["version"], 1);
    assert_eq!(header["filter"]["agent"], serde_json::Value::Null);
    let genesis = String::from_utf8(ls[1].clone()).unwrap();
    assert!(
        genesis.contains(r#""body":{"kind":"genesis","ledger_id":"abababababababababababababababab","format_version":1}"#),
        "{genesis}"
    );
    let change = String::from_utf8(ls[2].clone()).unwrap();
    assert!(
        change.contains(r#""name":{"hex":"62696e2fff fe2d726177"}"#.replace(' ', "").as_str()),
        "{change}"
    );
    assert!(change.contains(r#""op":"create""#) && change.contains(r#""mode":"executable""#));
    let trailer: serde_json::Value = serde_json::from_slice(ls.last().unwrap()).unwrap();
    assert_eq!(trailer["type"], "trailer");
    assert!(trailer["statement"]
        .as_str()
        .unwrap()
        .starts_with("agent-ledger export v1\norigin agent-ledger/abab"));
}

#[test]
fn every_deleted_duplicated_or_swapped_line_is_rejected_at_that_line() {
    for (name, bytes, key) in variants() {
        let ls = lines(&bytes);
        for i in 0..ls.len() {
            let line = i as u64 + 1;
            let mut del = ls.clone();
            del.remove(i);
            let (at, why) = rejected_line(&join(&del), key.as_ref());
            assert_eq!(at, line, "{name}: deleting line {line}: {why}");

            let mut dup = ls.clone();
            dup.insert(i, ls[i].clone());
            let (at, why) = rejected_line(&join(&dup), key.as_ref());
            assert_eq!(at, line + 1, "{name}: duplicating line {line}: {why}");

            if i + 1 < ls.len() {
                let mut sw = ls.clone();
                sw.swap(i, i + 1);
                let (at, why) = rejected_line(&join(&sw), key.as_ref());
                assert_eq!(
                    at,
                    line,
                    "{name}: swapping lines {line} and {}: {why}",
                    line + 1
                );
            }
        }
    }
}

/// Calls `f` with every way of editing one scalar in `v`: strings get a character,
/// numbers change, booleans flip, nulls become strings; plus removing each object field
/// and adding an unknown one.
fn each_edit(v: &serde_json::Value, f: &mut dyn FnMut(serde_json::Value, String)) {
    fn set_at(
        root: &serde_json::Value,
        path: &[serde_json::Value],
        new: serde_json::Value,
    ) -> serde_json::Value {
        let mut r = root.clone();
        let mut p = &mut r;
        for k in path {
            p = match k {
                serde_json::Value::String(s) => &mut p[s.as_str()],
                serde_json::Value::Number(n) => &mut p[n.as_u64().unwrap() as usize],
                _ => unreachable!(),
            };
        }
        *p = new;
        r
    }
    fn walk(
        root: &serde_json::Value,
        path: &mut Vec<serde_json::Value>,
        f: &mut dyn FnMut(serde_json::Value, String),
    ) {
        let here = {
            let mut p = root;
            for k in path.iter() {
                p = match k {
                    serde_json::Value::String(s) => &p[s.as_str()],
                    serde_json::Value::Number(n) => &p[n.as_u64().unwrap() as usize],
                    _ => unreachable!(),
                };
            }
            p.clone()
        };
        let name = format!("{path:?}");
        match &here {
            serde_json::Value::Object(m) => {
                for k in m.keys() {
                    let mut without = here.clone();
                    without.as_object_mut().unwrap().remove(k);
                    f(set_at(root, path, without), format!("{name} without {k}"));
                    path.push(serde_json::Value::String(k.clone()));
                    walk(root, path, f);
                    path.pop();
                }
                let mut extra = here.clone();
                extra
                    .as_object_mut()
                    .unwrap()
                    .insert("extra".into(), serde_json::Value::Null);
                f(set_at(root, path, extra), format!("{name} plus a field"));
            }
            serde_json::Value::Array(a) => {
                for i in 0..a.len() {
                    path.push(serde_json::Value::from(i as u64));
                    walk(root, path, f);
                    path.pop();
                }
                if !a.is_empty() {
                    let mut shorter = a.clone();
                    shorter.pop();
                    f(
                        set_at(root, path, serde_json::Value::Array(shorter)),
                        format!("{name} shortened"),
                    );
                }
            }
            serde_json::Value::String(s) => {
                let edited = if s.is_empty() {
                    "x".to_string()
                } else {
                    // Change the last character: keeps hex hex and text text.
                    let mut t: Vec<char> = s.chars().collect();
                    let c = t.pop().unwrap();
                    t.push(if c == '0' {
                        '1'
                    } else if c.is_ascii_hexdigit() {
                        '0'
                    } else {
                        'x'
                    });
                    t.into_iter().collect()
                };
                f(set_at(root, path, serde_json::Value::String(edited)), name);
            }
            serde_json::Value::Number(n) => {
                let edited = match (n.as_u64(), n.as_i64()) {
                    (Some(0), _) => 1.into(),
                    (Some(u), _) => (u - 1).into(),
                    (None, Some(i)) => (i + 1).into(),
                    _ => 0.into(),
                };
                f(set_at(root, path, edited), name);
            }
            serde_json::Value::Bool(b) => f(set_at(root, path, serde_json::Value::Bool(!b)), name),
            serde_json::Value::Null => f(set_at(root, path, "x".into()), name),
        }
    }
    walk(v, &mut Vec::new(), f);
}

/// [`events`] continued with checks by three agents up to `n` events.
fn long_chain(n: usize) -> Vec<(Event, Hash)> {
    let mut out = events();
    let mut prev = out.last().unwrap().1;
    for i in out.len()..n {
        let ev = Event {
            seq: i as u64,
            prev,
            time_us: T0 + i as i64 * 1_000_000,
            actor: Actor {
                agent: format!("agent-{}", i % 3 + 1),
                principal: None,
                role: None,
            },
            change_id: format!("c{i}"),
            correlation_id: None,
            body: Body::Check(Check {
                name: "test".into(),
                level: "info".into(),
                passed: i % 5 != 0,
                detail: None,
            }),
            meta: BTreeMap::new(),
        };
        prev = ev.hash();
        out.push((ev, prev));
    }
    out
}

/// Filtered exports of a 140-event chain (every third event; a run of consecutive
/// events): flipping any one proof hash of a line, including those its path shares with
/// the line before (which the verifier's proof cache skips re-hashing), rejects that
/// line for its proof, however the lines are batched (`verify` checks all batchings).
#[test]
fn every_flipped_proof_hash_is_rejected_at_its_line() {
    let evs = long_chain(140);
    let root = Tree::from_leaves(evs.iter().map(|(_, h)| merkle::leaf_hash(h)).collect()).root();
    let filters = [
        by_agent("agent-1"),
        Filter {
            since_us: Some(T0 + 30_000_000),
            until_us: Some(T0 + 120_000_000),
            ..Default::default()
        },
    ];
    for filter in filters {
        let bytes = export(&evs, filter.clone(), None);
        verify(&bytes, None).unwrap();
        let ls = lines(&bytes);
        let last_event = ls.len() - 2;
        let picked: Vec<usize> = (1..=last_event)
            .step_by(13)
            .chain([2, last_event])
            .collect();
        for i in picked {
            let v: serde_json::Value = serde_json::from_slice(&ls[i]).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            let n_hashes = v["proof"]["hashes"].as_array().unwrap().len();
            assert!(n_hashes >= 4, "{filter:?} line {}: {n_hashes}", i + 1);
            let start = memchr_find(&ls[i], b"\"hashes\":[\"") + 11;
            for j in 0..n_hashes {
                let mut m = ls.clone();
                // The last hex digit of hash j: still lower-case hex, so the line keeps
                // the writer's layout (the fast path reads it).
                let at = start + j * 67 + 63;
                m[i][at] = if m[i][at] == b'0' { b'1' } else { b'0' };
                let (line, why) = rejected_line(&join(&m), None);
                assert_eq!(
                    (line, why.as_str()),
                    (
                        i as u64 + 1,
                        format!(
                            "the inclusion proof of event seq {seq} does not lead to the header's tree root {root}"
                        )
                        .as_str()
                    ),
                    "{filter:?}: hash {j} of line {}",
                    i + 1
                );
            }
        }
    }
}

/// Filtered exports of a 140-event chain: a line whose proof is the text of the proof of
/// the line before (the verifier's parser reuses the hashes of text it decoded on the
/// line before), as it is, with the leaf index changed to the line's own, and then with
/// one of its hashes flipped, is rejected at that line, however the lines are batched.
#[test]
fn a_proof_copied_from_the_line_before_is_rejected() {
    let evs = long_chain(140);
    let root = Tree::from_leaves(evs.iter().map(|(_, h)| merkle::leaf_hash(h)).collect()).root();
    let size = evs.len();
    for filter in [
        by_agent("agent-2"),
        Filter {
            since_us: Some(T0 + 30_000_000),
            until_us: Some(T0 + 120_000_000),
            ..Default::default()
        },
    ] {
        let bytes = export(&evs, filter.clone(), None);
        verify(&bytes, None).unwrap();
        let ls = lines(&bytes);
        let last_event = ls.len() - 2;
        let proof_of = |l: &[u8]| {
            let a = memchr_find(l, b",\"proof\":");
            let b = memchr_find(l, b",\"export_prev\":");
            (a, b)
        };
        for i in (2..=last_event).step_by(7).chain([last_event]) {
            let v: serde_json::Value = serde_json::from_slice(&ls[i]).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            let pv: serde_json::Value = serde_json::from_slice(&ls[i - 1]).unwrap();
            let prev_seq = pv["seq"].as_u64().unwrap();
            let (pa, pb) = proof_of(&ls[i - 1]);
            let copied = ls[i - 1][pa..pb].to_vec();
            let with_index = String::from_utf8(copied.clone()).unwrap().replace(
                &format!("\"leaf_index\":{prev_seq},"),
                &format!("\"leaf_index\":{seq},"),
            );
            assert_ne!(with_index.as_bytes(), &copied[..]);
            let n_hashes = v["proof"]["hashes"].as_array().unwrap().len();
            let mut cases = vec![
                (
                    copied,
                    format!("the proof is for leaf {prev_seq} of a tree of {size}, expected leaf {seq} of the header's tree of {size}"),
                ),
                (
                    with_index.clone().into_bytes(),
                    format!("the inclusion proof of event seq {seq} does not lead to the header's tree root {root}"),
                ),
            ];
            let start = memchr_find(with_index.as_bytes(), b"\"hashes\":[\"") + 11;
            for j in 0..n_hashes.min(pv["proof"]["hashes"].as_array().unwrap().len()) {
                let mut flipped = with_index.clone().into_bytes();
                let at = start + j * 67 + 63;
                flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
                cases.push((
                    flipped,
                    format!("the inclusion proof of event seq {seq} does not lead to the header's tree root {root}"),
                ));
            }
            for (proof, why) in cases {
                let mut m = ls.clone();
                let (a, b) = proof_of(&m[i]);
                m[i].splice(a..b, proof);
                let (line, reason) = rejected_line(&join(&m), None);
                assert_eq!(
                    (line, reason.as_str()),
                    (i as u64 + 1, why.as_str()),
                    "{filter:?} line {}",
                    i + 1
                );
            }
        }
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the line")
}

#[test]
fn every_edited_field_of_every_line_is_rejected_at_that_line() {
    for (name, bytes, key) in variants() {
        let ls = lines(&bytes);
        let t = ls.len();
        for i in 0..t {
            let line = i as u64 + 1;
            let v: serde_json::Value = serde_json::from_slice(&ls[i]).unwrap();
            let mut n = 0;
            each_edit(&v, &mut |edited, what| {
                let mut m = ls.clone();
                m[i] = serde_json::to_vec(&edited).unwrap();
                if m[i] == ls[i] {
                    return;
                }
                n += 1;
                let (at, why) = rejected_line(&join(&m), key.as_ref());
                // A header edit that keeps the header valid is caught by the trailer's
                // digest of line 1, which names line 1 too.
                assert_eq!(at, line, "{name}: line {line} edit {what}: {why}");
            });
            assert!(n > 3, "{name}: line {line} had only {n} edits");
        }
    }
}

/// Checks that the verifier's fast path for the writer's own layout takes a line only
/// when the general parser accepts it with the same fields; returns whether it took it.
fn fast_path_agrees(line: &[u8], filter: &Filter, what: &str) -> bool {
    let (fast, general) = event_line_paths(line, filter);
    if let Some(f) = &fast {
        assert_eq!(
            Ok(f),
            general.as_ref(),
            "{what}: the fast path took a line the general path reads otherwise: {}",
            String::from_utf8_lossy(line)
        );
    }
    fast.is_some()
}

#[test]
fn the_fast_path_accepts_and_rejects_what_the_general_parser_does() {
    let filters = [
        Filter::default(),
        by_agent("agent-1"),
        Filter {
            since_us: Some(T0 + 2_000_000),
            until_us: Some(T0 + 6_000_000),
            change_id: Some("c2".into()),
            ..Default::default()
        },
    ];
    let mut taken = 0;
    let mut edits = 0;
    for (name, bytes, _) in variants() {
        let ls = lines(&bytes);
        for line in &ls[1..ls.len() - 1] {
            let text = String::from_utf8(line.clone()).unwrap();
            for f in &filters {
                // Every line the writer wrote goes the fast way, except names that are
                // not UTF-8 ({"hex": ...}), which the general parser reads.
                let fast = fast_path_agrees(line, f, name);
                assert_eq!(fast, !text.contains("{\"hex\""), "{name}: {text}");
                taken += usize::from(fast);
            }
            // Every edit of one value, field removed or added.
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            each_edit(&v, &mut |edited, what| {
                let m = serde_json::to_vec(&edited).unwrap();
                for f in &filters {
                    fast_path_agrees(&m, f, &format!("{name}: {what}"));
                }
                edits += 1;
            });
            // Textual edits the value edits cannot make: spacing, escapes, numbers,
            // duplicate and reordered keys, truncation, trailing bytes.
            let mut texts: Vec<Vec<u8>> = vec![
                text.replace(",\"", ", \"").into_bytes(),
                text.replace(":", ": ").into_bytes(),
                format!(" {text}").into_bytes(),
                format!("{text} ").into_bytes(),
                format!("{text}x").into_bytes(),
                format!("{text}{text}").into_bytes(),
                text.replace("\"seq\":", "\"seq\":0").into_bytes(),
                text.replace("\"seq\":", "\"seq\":-").into_bytes(),
                text.replace("\"time_us\":", "\"time_us\":-0").into_bytes(),
                text.replace("\"time_us\":", "\"time_us\":-").into_bytes(),
                text.replacen(",", ".5,", 3).into_bytes(),
                text.replace("e\"", "\\u0065\"").into_bytes(),
                text.replace("a", "\\u0061").into_bytes(),
                text.replace("a", "\\ud800").into_bytes(),
                text.replace("a", "\\ud83d\\ude00").into_bytes(),
                text.replace("a", "\\/").into_bytes(),
                text.replace("a", "\\x").into_bytes(),
                text.replace("a", "\t").into_bytes(),
                text.replace("a", "\u{7f}").into_bytes(),
                text.replace("\"meta\":{", "\"meta\":{\"a\":\"b\",")
                    .into_bytes(),
                text.replace("\"meta\":{", "\"meta\":{\"zz\":\"b\",")
                    .into_bytes(),
                text.replace("\"meta\":{}", "\"meta\":{\"b\":\"1\",\"a\":\"2\"}")
                    .into_bytes(),
                text.replace("\"meta\":{}", "\"meta\":{\"a\":\"1\",\"a\":\"2\"}")
                    .into_bytes(),
                text.replace("\"type\":\"event\",\"seq\":", "\"seq\":")
                    .replacen("{", "{\"type\":\"event\",", 1)
                    .into_bytes(),
                text.replace("\"hash\":\"", "\"hash\":\"A").into_bytes(),
                text.replace("\"percent\":", "\"percent\":25").into_bytes(),
                text.replace("\"exit_code\":", "\"exit_code\":-2147483649,\"x\":")
                    .into_bytes(),
                text.replace("\"exit_code\":", "\"exit_code\":-2147483648,\"x\":")
                    .into_bytes(),
                text.replace("\"seq\":", "\"seq\":18446744073709551615")
                    .into_bytes(),
                text.replace("\"seq\":", "\"seq\":18446744073709551616")
                    .into_bytes(),
                text.replace("true", "tru").into_bytes(),
                text.replace("null", "nul").into_bytes(),
                text.replace("\"kind\":\"check\"", "\"kind\":\"checkpoint\"")
                    .into_bytes(),
                text.replace("\"kind\":\"checkpoint\"", "\"kind\":\"check\"")
                    .into_bytes(),
                text.replace("\"proof\":{", "\"proof\":null,\"x\":{")
                    .into_bytes(),
                text.replace("\"name\":\"", "\"name\":{\"hex\":\"")
                    .into_bytes(),
            ];
            for cut in [1, 2, text.len() / 2, text.len() - 1] {
                texts.push(text.as_bytes()[..cut].to_vec());
            }
            let mut bad_utf8 = text.clone().into_bytes();
            let mid = bad_utf8.len() / 2;
            bad_utf8[mid] = 0xff;
            texts.push(bad_utf8);
            // Bytes inside string values (which the fast path checks itself): valid
            // UTF-8 it reads, and invalid UTF-8 and control characters it leaves to
            // the general path.
            let starts: Vec<usize> = text.match_indices("\":\"").map(|(i, _)| i + 3).collect();
            for &at in starts.iter().take(3).chain(starts.last()) {
                let inserts: [&[u8]; 8] = [
                    b"\xff",
                    b"\xc3",
                    b"\xe2\x82",
                    b"\x01",
                    b"\x1f",
                    "\u{e9}".as_bytes(),
                    "\u{1f600}x".as_bytes(),
                    b"\x7fabcdefgh\xc3\xa9abcdefgh",
                ];
                for ins in inserts {
                    let mut t = text.as_bytes().to_vec();
                    t.splice(at..at, ins.iter().copied());
                    texts.push(t);
                }
            }
            for t in texts {
                for f in &filters {
                    fast_path_agrees(&t, f, &format!("{name}: textual edit"));
                }
                edits += 1;
            }
        }
    }
    assert!(
        taken > 50 && edits > 1000,
        "{taken} fast lines, {edits} edits"
    );
}

#[test]
fn the_writers_formatter_writes_what_serde_json_writes() {
    // Every control character, quotes, backslashes, DEL, non-ASCII, empty strings.
    let nasty: String = (0u8..0x20)
        .map(char::from)
        .chain("\"\\/\u{7f}\u{80}\u{2028}é😀 ".chars())
        .collect();
    let mut evs = events();
    let base = evs.clone();
    for (e, _) in &base {
        let mut e = e.clone();
        e.actor.agent = nasty.clone();
        e.actor.principal = Some(String::new());
        e.actor.role = Some(nasty.clone());
        e.change_id = format!("{nasty}x");
        e.correlation_id = Some(nasty.clone());
        e.time_us = -e.time_us;
        e.meta.insert(nasty.clone(), nasty.clone());
        e.meta.insert(String::new(), String::new());
        match &mut e.body {
            Body::Change(c) => {
                c.message = Some(nasty.clone());
                c.reverts = Some(nasty.clone());
                for r in &mut c.resources {
                    r.key.namespace = nasty.clone();
                }
            }
            Body::Check(c) => {
                c.name = nasty.clone();
                c.detail = Some(nasty.clone());
            }
            Body::Failure(f) => {
                f.error = nasty.clone();
                f.exit_code = Some(i32::MIN);
            }
            _ => {}
        }
        let h = e.hash();
        evs.push((e, h));
    }
    let hashes: Vec<Hash> = (0..20u8).map(|i| Hash([i; 32])).collect();
    let mut n = 0;
    for (e, h) in &evs {
        let proofs: [Option<(u64, u64, &[Hash])>; 4] = [
            None,
            Some((e.seq, u64::MAX, &hashes)),
            Some((0, 1, &[])),
            Some((e.seq, 12, &hashes[..3])),
        ];
        for proof in proofs {
            for export_prev in [None, Some(None), Some(Some(Hash([0xfe; 32])))] {
                let want = event_line_reference(e, h, proof, export_prev);
                let mut got = b"left alone".to_vec();
                format_event_line(&mut got, e, h, proof, export_prev);
                assert_eq!(
                    String::from_utf8_lossy(&got[10..]),
                    String::from_utf8_lossy(&want),
                    "seq {}",
                    e.seq
                );
                assert_eq!(&got[..10], b"left alone");
                n += 1;
            }
        }
        assert_eq!(event_line(e, h), event_line_reference(e, h, None, None));
    }
    assert!(n > 200);
}

#[test]
fn reformatting_a_line_is_caught_by_the_trailer_digests() {
    let evs = events();
    let k = key();
    let bytes = export(&evs, Filter::default(), Some(&k));
    let ls = lines(&bytes);
    // Same JSON values, different bytes: the per-line checks pass, the signed digest
    // of the event lines does not.
    let mut m = ls.clone();
    let v: serde_json::Value = serde_json::from_slice(&m[3]).unwrap();
    m[3] = serde_json::to_vec_pretty(&v)
        .unwrap()
        .into_iter()
        .filter(|&b| b != b'\n')
        .collect();
    let (at, why) = rejected_line(&join(&m), Some(&k));
    assert_eq!(at, ls.len() as u64, "{why}");
    assert!(why.contains("event lines"), "{why}");
    // CRLF line ends.
    let crlf: Vec<u8> = bytes
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    let (at, why) = rejected_line(&crlf, Some(&k));
    assert_eq!(at, 1, "{why}");
}

#[test]
fn truncations_are_rejected_at_the_line_they_cut() {
    for (name, bytes, key) in variants() {
        // Every line boundary and the bytes around it, and every 11th byte between.
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(13).collect();
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                cuts.extend([i.saturating_sub(1), i, i + 1, i + 2]);
            }
        }
        cuts.retain(|&c| c < bytes.len());
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let t = &bytes[..cut];
            let expect = t.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let (at, why) = rejected_line(t, key.as_ref());
            assert_eq!(at, expect, "{name}: cut at byte {cut}: {why}");
        }
    }
}

#[test]
fn wrong_or_missing_keys_are_rejected_at_the_trailer() {
    let evs = events();
    let k = key();
    let other = other_key();
    let signed = export(&evs, Filter::default(), Some(&k));
    let t = lines(&signed).len() as u64;
    let (at, why) = rejected_line(&signed, Some(&other));
    assert_eq!(at, t);
    assert!(why.contains("checkpoint"), "{why}");
    // A key with another name.
    let renamed = SigningKey::from_seed("someone-else", [5; 32]).unwrap();
    let (at, why) = rejected_line(&signed, Some(&renamed));
    assert_eq!(at, t, "{why}");
    // Signed by the other key throughout: consistent, but not ours.
    let by_other = export(&evs, Filter::default(), Some(&other));
    assert_eq!(rejected_line(&by_other, Some(&k)).0, t);
    verify(&by_other, Some(&other)).unwrap();
    // An unsigned export when a key is expected.
    let unsigned = export(&evs, Filter::default(), None);
    let (at, why) = rejected_line(&unsigned, Some(&k));
    assert_eq!(at, 1, "{why}");
    // Signatures stripped but the header still says signed.
    let mut ls = lines(&signed);
    let mut tr: serde_json::Value = serde_json::from_slice(ls.last().unwrap()).unwrap();
    for f in ["checkpoint", "statement"] {
        let text = tr[f].as_str().unwrap().to_string();
        let body = &text[..text.rfind("\n\n").unwrap() + 1];
        tr[f] = body.into();
    }
    *ls.last_mut().unwrap() = serde_json::to_vec(&tr).unwrap();
    assert_eq!(rejected_line(&join(&ls), None).0, t);
    assert_eq!(rejected_line(&join(&ls), Some(&k)).0, t);
}

#[test]
fn a_signed_trailer_from_another_export_is_rejected() {
    // Splicing: the events of one export with the trailer of another signed export of
    // the same ledger.
    let evs = events();
    let k = key();
    let a = lines(&export(&evs, by_agent("agent-1"), Some(&k)));
    let b = lines(&export(&evs, by_agent("agent-2"), Some(&k)));
    let mut spliced = a.clone();
    *spliced.last_mut().unwrap() = b.last().unwrap().clone();
    let (at, _) = rejected_line(&join(&spliced), Some(&k));
    assert_eq!(at, 1, "the header digest differs first");
    // Same filter, an event line dropped and the count... still signed digests differ.
    let mut dropped = a.clone();
    dropped.remove(2);
    assert!(verify(&join(&dropped), Some(&k)).is_err());
}

#[test]
fn malformed_input_is_rejected_without_panicking() {
    let evs = events();
    let k = key();
    let good = export(&evs, Filter::default(), Some(&k));
    let ls = lines(&good);
    let with_line = |i: usize, text: &[u8]| {
        let mut m = ls.clone();
        m[i] = text.to_vec();
        join(&m)
    };
    let event_line = String::from_utf8(ls[2].clone()).unwrap();
    let header_line = String::from_utf8(ls[0].clone()).unwrap();
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("empty file", vec![], 1, "empty"),
        ("only a newline", b"\n".to_vec(), 1, "header"),
        ("garbage", b"\x00\x01\x02garbage\n".to_vec(), 1, "header"),
        (
            "not UTF-8",
            with_line(2, b"{\"type\":\"event\",\"x\":\"\xff\"}"),
            3,
            "",
        ),
        ("blank line", with_line(2, b""), 3, "JSON"),
        ("an array", with_line(2, b"[1,2,3]"), 3, ""),
        ("deep nesting", with_line(2, &[b'['; 100_000]), 3, ""),
        (
            "deep objects",
            with_line(2, "{\"a\":".repeat(50_000).as_bytes()),
            3,
            "",
        ),
        ("no type", with_line(2, b"{\"seq\":1}"), 3, "type"),
        (
            "unknown type",
            with_line(2, b"{\"type\":\"evnt\"}"),
            3,
            "unknown line type",
        ),
        (
            "second header",
            with_line(2, header_line.as_bytes()),
            3,
            "second header",
        ),
        (
            "NaN",
            with_line(
                2,
                event_line
                    .replace("\"time_us\":", "\"time_us\":NaN,\"x\":")
                    .as_bytes(),
            ),
            3,
            "",
        ),
        (
            "float seq",
            with_line(
                2,
                event_line.replace("\"seq\":1,", "\"seq\":1.0,").as_bytes(),
            ),
            3,
            "",
        ),
        (
            "exponent seq",
            with_line(
                2,
                event_line.replace("\"seq\":1,", "\"seq\":1e0,").as_bytes(),
            ),
            3,
            "",
        ),
        (
            "negative seq",
            with_line(
                2,
                event_line.replace("\"seq\":1,", "\"seq\":-1,").as_bytes(),
            ),
            3,
            "",
        ),
        (
            "huge seq",
            with_line(
                2,
                event_line
                    .replace("\"seq\":1,", "\"seq\":18446744073709551616,")
                    .as_bytes(),
            ),
            3,
            "",
        ),
        (
            "string seq",
            with_line(
                2,
                event_line
                    .replace("\"seq\":1,", "\"seq\":\"1\",")
                    .as_bytes(),
            ),
            3,
            "",
        ),
        (
            "duplicate field",
            with_line(
                2,
                event_line
                    .replace("\"seq\":1,", "\"seq\":1,\"seq\":1,")
                    .as_bytes(),
            ),
            3,
            "duplicate",
        ),
        (
            "duplicate meta key",
            with_line(
                2,
                event_line
                    .replace("\"meta\":{", "\"meta\":{\"tool\":\"edit\",")
                    .as_bytes(),
            ),
            3,
            "twice",
        ),
        (
            "lone surrogate",
            with_line(
                2,
                event_line.replace("\"agent-1\"", "\"\\ud800\"").as_bytes(),
            ),
            3,
            "",
        ),
        (
            "upper-case hash",
            with_line(
                2,
                event_line
                    .replacen("\"prev\":\"", "\"prev\":\"A", 1)
                    .replacen("\"prev\":\"A", "\"prev\":\"", 0)
                    .to_uppercase()
                    .as_bytes(),
            ),
            3,
            "",
        ),
        (
            "trailing garbage",
            with_line(2, format!("{event_line} x").as_bytes()),
            3,
            "",
        ),
        (
            "two objects",
            with_line(2, format!("{event_line}{event_line}").as_bytes()),
            3,
            "",
        ),
        (
            "data after trailer",
            [good.clone(), b"\n".to_vec()].concat(),
            14,
            "after the trailer",
        ),
        (
            "text after trailer",
            [good.clone(), b"{}".to_vec()].concat(),
            14,
            "after the trailer",
        ),
    ];
    for (what, bytes, line, needle) in cases {
        let (at, why) = rejected_line(&bytes, Some(&k));
        assert_eq!(at, line, "{what}: {why}");
        assert!(why.contains(needle), "{what}: {why:?} lacks {needle:?}");
    }
}

#[test]
fn unknown_versions_and_formats_are_named() {
    let evs = events();
    let good = export(&evs, Filter::default(), None);
    let ls = lines(&good);
    let header = String::from_utf8(ls[0].clone()).unwrap();
    for (from, to, needle) in [
        (
            "\"version\":1",
            "\"version\":2",
            "unknown export format version 2",
        ),
        (
            "\"version\":1",
            "\"version\":\"1\"",
            "unknown export format version \"1\"",
        ),
        (
            "\"version\":1",
            "\"version\":1.0",
            "unknown export format version 1.0",
        ),
        ("\"version\":1,", "", "no format version"),
        (
            "agent-ledger-export",
            "other-export",
            "not an export header",
        ),
        (
            "\"origin\":\"agent-ledger/abab",
            "\"origin\":\"elsewhere/abab",
            "origin",
        ),
    ] {
        let mut m = ls.clone();
        m[0] = header.replace(from, to).into_bytes();
        assert_ne!(m[0], ls[0]);
        let (at, why) = rejected_line(&join(&m), None);
        assert_eq!(at, 1, "{why}");
        assert!(why.contains(needle), "{why:?} lacks {needle:?}");
    }
}

#[test]
fn long_lines_are_refused_without_reading_them_whole() {
    let evs = events();
    let good = export(&evs, Filter::default(), None);
    let ls = lines(&good);
    let longest = ls.iter().map(Vec::len).max().unwrap();
    // With the limit at the longest line the file passes; one byte less and it does not.
    verify_export(&mut &good[..], None, longest).unwrap();
    match verify_export(&mut &good[..], None, longest - 1) {
        Err(VerifyError::Rejected { line, reason }) => {
            assert_eq!(ls[line as usize - 1].len(), longest);
            assert!(reason.contains("longer than"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A "line" of 1 MiB without a newline, against a 64 KiB limit.
    let mut big = ls[0].clone();
    big.push(b'\n');
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    match verify_export(&mut &big[..], None, 64 << 10) {
        Err(VerifyError::Rejected { line: 2, reason }) => assert!(reason.contains("longer")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_writer_refuses_inconsistent_input() {
    let evs = events();
    let leaves: Vec<Hash> = evs.iter().map(|(_, h)| merkle::leaf_hash(h)).collect();
    let tree = Tree::from_leaves(leaves);
    let header = |filter: Filter, signed: bool| {
        Header::new(
            origin(&LEDGER_ID),
            T0,
            filter,
            signed,
            tree.size(),
            tree.root(),
        )
    };
    // Filtered without a tree, unfiltered with one, a tree of another size.
    assert!(JsonlWriter::new(Vec::new(), header(by_agent("a"), false), None).is_err());
    assert!(JsonlWriter::new(
        Vec::new(),
        header(Filter::default(), false),
        Some(tree.clone())
    )
    .is_err());
    let small = Tree::from_leaves(vec![Hash([1; 32])]);
    assert!(JsonlWriter::new(Vec::new(), header(by_agent("a"), false), Some(small)).is_err());
    // A gap in an unfiltered export.
    let mut w = JsonlWriter::new(Vec::new(), header(Filter::default(), false), None).unwrap();
    w.event(&evs[0].0, &evs[0].1).unwrap();
    assert!(matches!(
        w.event(&evs[2].0, &evs[2].1),
        Err(ExportError::Inconsistent(_))
    ));
    // Too few events at the end.
    assert!(w.finish(evs[10].1, T0, None).is_err());
    // An event the filter does not match; out of order.
    let mut w = JsonlWriter::new(
        Vec::new(),
        header(by_agent("agent-1"), false),
        Some(tree.clone()),
    )
    .unwrap();
    assert!(w.event(&evs[2].0, &evs[2].1).is_err());
    w.event(&evs[3].0, &evs[3].1).unwrap();
    assert!(w.event(&evs[1].0, &evs[1].1).is_err());
    // A key when the header says unsigned.
    assert!(w.finish(evs[10].1, T0, Some(&key())).is_err());
}

#[test]
fn csv_has_one_quoted_row_per_resource_operation() {
    let evs = events();
    let mut w = CsvWriter::new(Vec::new()).unwrap();
    for (e, _) in &evs {
        w.event(e).unwrap();
    }
    let (out, rows) = w.finish().unwrap();
    assert_eq!(rows, 6);
    let text = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        rows[0],
        "seq,time,time_us,change_id,agent,principal,role,correlation_id,op,namespace,path,old_hash,new_hash,old_mode,new_mode,old_size,new_size"
    );
    assert_eq!(
        rows.len(),
        8,
        "header, six rows, and the empty string after the last \\r\\n"
    );
    let a = Hash::of_content(b"a\n");
    assert_eq!(
        rows[1],
        format!("1,2023-11-14T22:13:21.000000Z,1700000001000000,c1,agent-1,,,,create,file,\"src/a,b.rs\",,{a},,regular,,2")
    );
    assert!(rows[2].contains(",bin/\\xff\\xfe-raw,"), "{}", rows[2]);
    assert!(rows[4].contains(",flag,checkout-v2,"), "{}", rows[4]);
    // A path that a spreadsheet would read as a formula.
    assert!(rows[6].contains(",'-rm,"), "{}", rows[6]);
}

#[test]
fn csv_quotes_and_guards_text() {
    let (mut e, _) = events().remove(1);
    e.actor.agent = "=cmd|' /C calc'!A0".into();
    e.actor.principal = Some("say \"hi\"\r\nbye".into());
    let mut w = CsvWriter::new(Vec::new()).unwrap();
    w.event(&e).unwrap();
    let text = String::from_utf8(w.finish().unwrap().0).unwrap();
    assert!(
        text.contains(",\"'=cmd|' /C calc'!A0\",\"say \"\"hi\"\"\r\nbye\","),
        "{text}"
    );
}

/// The event of docs/FORMAT.md's worked example (pinned hash 9ce183...), as the event
/// line docs/EXPORT.md shows; tools/verify_export.py --self-test re-derives the hash
/// from the same line.
const EXPORT_MD: &str = include_str!("../../docs/EXPORT.md");

/// The one line of docs/EXPORT.md that starts with the worked example's event.
fn doc_example_line() -> &'static str {
    let mut found = EXPORT_MD
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"event\",\"seq\":1,\"prev\":\"1111"));
    let line = found
        .next()
        .expect("docs/EXPORT.md shows the example event line");
    assert!(found.next().is_none(), "docs/EXPORT.md shows it once");
    line
}

fn format_md_event() -> Event {
    let mut meta = BTreeMap::new();
    meta.insert("tool".to_string(), "edit".to_string());
    Event {
        seq: 1,
        prev: Hash([0x11; 32]),
        time_us: 1_700_000_000_000_000,
        actor: Actor {
            agent: "agent-7".into(),
            principal: Some("alice@example.com".into()),
            role: Some("coder".into()),
        },
        change_id: "ch-1".into(),
        correlation_id: Some("req-42".into()),
        body: Body::Change(Change {
            message: Some("fix typo".into()),
            reverts: None,
            resources: vec![ResourceChange {
                key: ResourceKey::file(b"src/main.rs"),
                op: Op::Modify,
                old: Some(content(b"old\n", Mode::Regular)),
                new: Some(content(b"new\n", Mode::Executable)),
            }],
        }),
        meta,
    }
}

#[test]
fn the_documented_event_line_is_what_the_writer_writes_and_hashes_as_pinned() {
    let ev = format_md_event();
    let h = ev.hash();
    assert_eq!(
        h.to_hex(),
        "9ce183a3d495f9934ea2658d5a7e744b2ea927321d12f32f9d5fec2ea373cad9"
    );
    let line = String::from_utf8(event_line(&ev, &h)).unwrap();
    assert_eq!(line, doc_example_line(), "docs/EXPORT.md section 4");
    let (parsed, stated) = parse_event_line(line.as_bytes()).unwrap();
    assert_eq!(parsed, ev);
    assert_eq!(stated, h);
    assert_eq!(parsed.hash(), h);
    assert!(parse_event_line(b"{\"type\":\"header\"}").is_err());
}
