//! Pipelining against the real daemon (issue #18): many requests in
//! flight on one connection, answered in order, each acknowledgement after
//! its commit; the streaming client; a bad frame or line in the middle of
//! a pipeline; a client that writes everything before it reads.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use telemetry_client::stream::{Stream, StreamOptions};
use telemetry_client::{event, ErrorCode};
use telemetry_proto::{decode_body, encode_frame, encode_line, Request, Response, WireEvent};
use telemetry_tests::{Daemon, DaemonEnv, Destination};

const T: Duration = Duration::from_secs(20);

fn cfdev(name: &str) -> WireEvent {
    event("cfdev", name, "1.0", BTreeMap::new())
}

fn stops(n: usize) -> Vec<WireEvent> {
    (0..n).map(|_| cfdev("stop")).collect()
}

fn emit(events: Vec<WireEvent>, ack: bool) -> Vec<u8> {
    encode_frame(&Request::Emit { events, ack }).unwrap()
}

fn pending(d: &Daemon) -> u64 {
    d.client().status(T).unwrap().pending_events
}

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// The next reply frame; `None` at EOF.
fn read_reply(s: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("a whole frame");
    Some(decode_body(&body).expect("a reply"))
}

fn ack(accepted: u32) -> Response {
    Response::Ack {
        accepted,
        duplicates: 0,
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_and_later_ones_see_earlier_ones_stored() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let mut s = connect(&d);
    // Everything in one write, before reading anything; the sizes differ
    // so each answer shows which request it belongs to.
    let mut pipeline = Vec::new();
    pipeline.extend(emit(stops(1), true));
    pipeline.extend(emit(stops(2), true));
    pipeline.extend(emit(vec![cfdev("stop"), cfdev("no_such_event")], true));
    pipeline.extend(encode_frame(&Request::Status).unwrap());
    pipeline.extend(emit(stops(3), false));
    pipeline.extend(emit(stops(4), true));
    s.write_all(&pipeline).unwrap();

    assert_eq!(read_reply(&mut s), Some(ack(1)));
    assert_eq!(read_reply(&mut s), Some(ack(2)));
    match read_reply(&mut s) {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::NotInCatalogue);
            assert!(message.contains("no_such_event"), "{message}");
        }
        other => panic!("the refusal, third: {other:?}"),
    }
    match read_reply(&mut s) {
        Some(Response::Status(status)) => assert_eq!(
            status.pending_events, 3,
            "a status after two acknowledged emits sees them stored"
        ),
        other => panic!("status, fourth: {other:?}"),
    }
    assert_eq!(read_reply(&mut s), Some(Response::Queued { accepted: 3 }));
    assert_eq!(read_reply(&mut s), Some(ack(4)));
    assert_eq!(pending(&d), 10, "the refused request stored nothing");
}

#[test]
fn a_bad_frame_after_a_pipeline_is_answered_after_it_and_what_came_before_is_kept() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let mut s = connect(&d);
    let mut pipeline = Vec::new();
    for n in 1..=3 {
        pipeline.extend(emit(stops(n), true));
    }
    // A frame of protocol version 9.
    pipeline.extend([0, 0, 0, 2, 9, 1]);
    pipeline.extend(emit(stops(5), true));
    s.write_all(&pipeline).unwrap();
    for n in 1..=3 {
        assert_eq!(read_reply(&mut s), Some(ack(n)), "request {n}");
    }
    match read_reply(&mut s) {
        Some(Response::Error { code, .. }) => assert_eq!(code, ErrorCode::UnsupportedVersion),
        other => panic!("the bad frame's error: {other:?}"),
    }
    assert_eq!(read_reply(&mut s), None, "then the connection is closed");
    assert_eq!(pending(&d), 6, "nothing after the bad frame was stored");
}

#[test]
fn a_client_that_writes_everything_then_closes_its_side_gets_every_answer() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let requests = 3000;
    let mut s = connect(&d);
    let mut reader = s.try_clone().unwrap();
    // Far more than the daemon reads ahead (MAX_IN_FLIGHT): it stops
    // reading until it has answered, and the answers wait in the socket.
    let writer = std::thread::spawn(move || {
        for _ in 0..requests {
            s.write_all(&emit(stops(1), true)).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // Meanwhile another client is served.
    let other = d.client().emit(stops(1), T).expect("another client's emit");
    assert_eq!(other.accepted, 1);
    let mut acked = 0;
    while let Some(reply) = read_reply(&mut reader) {
        assert_eq!(reply, ack(1), "answer {acked}");
        acked += 1;
    }
    writer.join().unwrap();
    assert_eq!(acked, requests, "one answer per request, then EOF");
    assert_eq!(pending(&d), requests as u64 + 1);
}

#[test]
fn json_lines_pipeline_too_and_a_bad_line_is_answered_in_its_turn() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let line = |req: &Request| String::from_utf8(encode_line(req).unwrap()).unwrap();
    let emit_line = |n: usize| {
        line(&Request::Emit {
            events: stops(n),
            ack: true,
        })
    };
    let mut pipeline = String::new();
    pipeline += &emit_line(1);
    pipeline += "not json\n";
    pipeline += &emit_line(2);
    pipeline += &line(&Request::Status);
    pipeline += &emit_line(3);
    let s = connect(&d);
    (&s).write_all(pipeline.as_bytes()).unwrap();
    let mut lines = BufReader::new(&s);
    let mut next = || {
        let mut l = String::new();
        lines.read_line(&mut l).unwrap();
        serde_json::from_str::<serde_json::Value>(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"))
    };
    assert_eq!(next()["ack"]["accepted"], 1);
    assert_eq!(next()["error"]["code"], "malformed");
    assert_eq!(next()["ack"]["accepted"], 2);
    assert_eq!(next()["status"]["pending_events"], 3);
    assert_eq!(next()["ack"]["accepted"], 3);
}

#[test]
fn the_streaming_client_gets_every_event_acknowledged_and_reports_refusals_by_position() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();

    // One event per request, 32 in flight.
    let mut stream = Stream::new(
        d.client(),
        StreamOptions {
            window: 32,
            events_per_request: 1,
            ..Default::default()
        },
    );
    for i in 0..2000 {
        // Three refused, at known positions.
        let name = if [7, 500, 1999].contains(&i) {
            "no_such_event"
        } else {
            "stop"
        };
        stream.push(cfdev(name)).unwrap();
        assert!(stream.in_flight() <= 32);
    }
    let report = stream.finish().unwrap();
    assert_eq!(report.requests, 2000);
    assert_eq!(report.accepted, 1997);
    assert_eq!(
        report.refused.iter().map(|r| r.first).collect::<Vec<_>>(),
        [7, 500, 1999]
    );
    assert!(report
        .refused
        .iter()
        .all(|r| r.code == ErrorCode::NotInCatalogue && r.events == 1));
    assert_eq!(pending(&d), 1997);

    // Packed requests: 1,000 events with the longest build string fit no
    // frame, so requests are cut at the frame limit, not refused.
    let build = format!("1.0+{}", "b".repeat(60));
    let big = || event("cfdev", "stop", &build, BTreeMap::new());
    let size = telemetry_proto::encoded_len(&big()).unwrap() as u64;
    let mut stream = Stream::new(d.client(), StreamOptions::default());
    for _ in 0..3000 {
        stream.push(big()).unwrap();
    }
    let report = stream.finish().unwrap();
    assert_eq!(report.accepted, 3000, "{:?}", report.refused);
    let max = telemetry_proto::MAX_FRAME_LEN as u64;
    assert!(
        size * 1000 > max,
        "the test needs events of {size} bytes to overflow"
    );
    assert!(
        report.requests >= (3000 * size).div_ceil(max),
        "{} requests",
        report.requests
    );
    assert_eq!(pending(&d), 4997);

    // Sending the same events again stores nothing twice.
    let again: Vec<WireEvent> = stops(10);
    let mut stream = Stream::new(d.client(), StreamOptions::default());
    for e in again.iter().chain(&again) {
        stream.push(e.clone()).unwrap();
    }
    let report = stream.finish().unwrap();
    assert_eq!((report.accepted, report.duplicates), (10, 10));
}

#[test]
fn requests_in_flight_on_one_connection_share_commits() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start_with(&[("TELEMETRY_LOG", "info,telemetryd::store=debug")]);
    let requests = 2000;
    let mut stream = Stream::new(
        d.client(),
        StreamOptions {
            window: 64,
            events_per_request: 1,
            ..Default::default()
        },
    );
    for _ in 0..requests {
        stream.push(cfdev("stop")).unwrap();
    }
    let report = stream.finish().unwrap();
    assert_eq!(report.accepted, requests);
    let log = d.log();
    let commits = log
        .lines()
        .filter(|l| l.contains("committed") && l.contains("requests="))
        .count() as u64;
    // One connection waiting for each answer would need one commit per
    // request; with 64 in flight, the store takes what has arrived. How
    // much has arrived depends on how long the last commit took: since
    // the store thread stopped paying for checkpoints (issue #18) a busy
    // 2-core machine showed 2.7-3.9 requests a commit, so the bound asks
    // for 1.5 (the client, starved by the tests beside it, can be the
    // slow side), still far from one per request.
    assert!(commits > 0, "the commit log lines are there:\n{log}");
    assert!(
        commits * 3 <= requests * 2,
        "{commits} commits for {requests} requests"
    );
    eprintln!("{requests} requests in {commits} commits");
}

/// One request at a time on one connection, the shape the store thread
/// answers itself without waking the connection's task: each answer is
/// the right one and in its turn among the other kinds, and a `status`
/// asked on another connection right after an acknowledgement already
/// counts its events.
#[test]
fn a_client_waiting_for_each_answer_gets_its_own_and_status_counts_it_at_once() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start();
    let mut s = connect(&d);
    let counters = || d.client().status(T).unwrap().counters;
    let (mut stored, mut refused) = (0u64, 0u64);
    for round in 0..24u32 {
        let n = round % 3 + 1;
        s.write_all(&emit(stops(n as usize), true)).unwrap();
        assert_eq!(read_reply(&mut s), Some(ack(n)), "round {round}");
        stored += u64::from(n);
        assert_eq!(
            counters().stored,
            stored,
            "counted before the acknowledgement was sent (round {round})"
        );
        match round % 4 {
            0 => {
                s.write_all(&emit(vec![cfdev("no_such_event")], true))
                    .unwrap();
                match read_reply(&mut s) {
                    Some(Response::Error { code, .. }) => {
                        assert_eq!(code, ErrorCode::NotInCatalogue, "round {round}")
                    }
                    other => panic!("the refusal (round {round}): {other:?}"),
                }
                refused += 1;
            }
            1 => {
                s.write_all(&encode_frame(&Request::Status).unwrap())
                    .unwrap();
                match read_reply(&mut s) {
                    Some(Response::Status(status)) => {
                        assert_eq!(status.pending_events, stored, "round {round}")
                    }
                    other => panic!("status (round {round}): {other:?}"),
                }
            }
            2 => {
                s.write_all(&emit(stops(1), false)).unwrap();
                assert_eq!(read_reply(&mut s), Some(Response::Queued { accepted: 1 }));
                stored += 1;
            }
            _ => {}
        }
    }
    // After answers the store thread wrote, a pipeline keeps its order.
    let mut pipeline = Vec::new();
    pipeline.extend(emit(stops(1), true));
    pipeline.extend(emit(vec![cfdev("no_such_event")], true));
    pipeline.extend(emit(stops(2), true));
    s.write_all(&pipeline).unwrap();
    assert_eq!(read_reply(&mut s), Some(ack(1)));
    assert!(
        matches!(
            read_reply(&mut s),
            Some(Response::Error {
                code: ErrorCode::NotInCatalogue,
                ..
            })
        ),
        "the refusal, second"
    );
    assert_eq!(read_reply(&mut s), Some(ack(2)));
    stored += 3;
    refused += 1;
    let c = counters();
    assert_eq!((c.stored, c.refused), (stored, refused));
    assert_eq!(pending(&d), stored);
}

/// The connection timeout still holds for a client that goes quiet after
/// an answer the store thread wrote (the connection's task was not woken
/// for it).
#[test]
fn a_client_quiet_after_its_answers_is_timed_out() {
    let env = DaemonEnv::new(Destination::Outbox);
    let d = env.start_with(&[("TELEMETRY_CONNECTION_TIMEOUT", "1s")]);
    let mut s = connect(&d);
    let mut quiet = std::time::Instant::now();
    for _ in 0..3 {
        // The timeout may start as soon as the daemon has read a request,
        // before its answer comes: the quiet is timed from the last send.
        quiet = std::time::Instant::now();
        s.write_all(&emit(stops(1), true)).unwrap();
        assert_eq!(read_reply(&mut s), Some(ack(1)));
    }
    // EOF, not our 20 s read timeout.
    assert_eq!(read_reply(&mut s), None);
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?} of quiet; the timeout is 1 s"
    );
    assert_eq!(pending(&d), 3);
}
