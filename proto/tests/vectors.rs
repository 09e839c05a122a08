//! `vectors/protocol.json` is what this crate writes, and each message
//! reads back the same from both encodings.

mod messages;

use telemetry_proto::*;

fn vectors() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/protocol.json");
    let text = std::fs::read_to_string(path).expect("vectors/protocol.json");
    assert_eq!(
        text,
        messages::render(),
        "vectors/protocol.json is stale: run `cargo run -p telemetry-proto --example vectors > vectors/protocol.json`"
    );
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check<T>(json: &str, binary: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let from_json: T = decode_line(json.as_bytes()).unwrap();
    let from_binary: T = decode_body(&binary[4..]).unwrap();
    assert_eq!(from_json, from_binary, "{json}");
    assert_eq!(
        encode_line(&from_binary).unwrap(),
        format!("{json}\n").into_bytes()
    );
    assert_eq!(encode_frame(&from_json).unwrap(), binary);
}

#[test]
fn every_message_reads_the_same_in_both_encodings() {
    let doc = vectors();
    assert_eq!(doc["protocol_version"], PROTOCOL_VERSION);
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        messages::requests().len() + messages::responses().len()
    );
    for m in messages {
        let json = m["json"].as_str().unwrap();
        let binary = unhex(m["binary"].as_str().unwrap());
        assert_eq!(
            u32::from_be_bytes(binary[..4].try_into().unwrap()) as usize,
            binary.len() - 4
        );
        match m["kind"].as_str().unwrap() {
            "request" => check::<Request>(json, &binary),
            "response" => check::<Response>(json, &binary),
            other => panic!("kind {other}"),
        }
    }
}

fn shared(name: &str) -> serde_json::Value {
    let path = format!("{}/../vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

#[test]
fn consent_resolves_as_the_shared_cases_say() {
    use telemetry_proto::consent::{env_opts_out, resolve, ConsentFile, OPT_OUT_VARS};
    let doc = shared("consent.json");
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let system = match &c["system"] {
            serde_json::Value::Null => None,
            serde_json::Value::String(t) => Some(ConsentFile::parse(t)),
            _ => Some(ConsentFile::unreadable()),
        };
        let user = c["user"].as_str().map(ConsentFile::parse);
        let env_off = OPT_OUT_VARS
            .iter()
            .any(|v| env_opts_out(c["env"][v].as_str()));
        let (mode, layer) = resolve(
            c["product"].as_str().unwrap(),
            system.as_ref(),
            env_off,
            user.as_ref(),
        );
        assert_eq!(serde_json::to_value(mode).unwrap(), c["mode"], "{name}");
        assert_eq!(serde_json::to_value(layer).unwrap(), c["layer"], "{name}");
    }
}

#[test]
fn paths_are_where_the_shared_cases_say() {
    use std::ffi::OsString;
    use std::path::Path;
    use telemetry_proto::paths;
    let doc = shared("paths.json");
    for c in doc["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let env = |k: &str| c["env"][k].as_str().map(OsString::from);
        let uid = c["uid"].as_u64().unwrap() as u32;
        let socket = paths::default_socket_path_for(c["os"] == "macos", env, uid);
        assert_eq!(socket, Path::new(c["socket"].as_str().unwrap()), "{name}");
        let state = paths::default_state_dir(env, uid);
        assert_eq!(state, Path::new(c["state_dir"].as_str().unwrap()), "{name}");
        assert_eq!(
            paths::default_consent_file(&state),
            Path::new(c["consent_file"].as_str().unwrap()),
            "{name}"
        );
        assert_eq!(
            paths::spool_dir_for(&state, &socket),
            Path::new(c["spool_dir"].as_str().unwrap()),
            "{name}"
        );
    }
    let spool = &doc["spool"];
    assert_eq!(spool["max_files"], paths::MAX_SPOOL_FILES);
    let req: Request = decode_line(spool["example_line"].as_str().unwrap().as_bytes()).unwrap();
    let Request::Emit { events, ack: false } = req else {
        panic!("the spool holds no-ack emits")
    };
    assert_eq!(
        format!("{}.json", events[0].id),
        spool["example_file"].as_str().unwrap()
    );
}
