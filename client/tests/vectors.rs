//! `KEY=VALUE` typing, as the shared vectors (`vectors/kv.json`) say.

use telemetry_client::{parse_kv, Value};

#[test]
fn key_value_arguments_are_typed_as_the_shared_cases_say() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/kv.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 20);
    for c in cases {
        let arg = c["arg"].as_str().unwrap();
        let got = parse_kv(arg);
        if c["error"] == true {
            assert!(got.is_err(), "{arg:?} should be refused, got {got:?}");
            continue;
        }
        let (key, value) = got.unwrap_or_else(|e| panic!("{arg:?}: {e}"));
        assert_eq!(key, c["key"].as_str().unwrap(), "{arg:?}");
        let want = &c["value"];
        let same = match &value {
            Value::Str(s) => want.as_str() == Some(s.as_str()),
            Value::Int(i) => want.as_i64() == Some(*i),
            Value::Bool(b) => want.as_bool() == Some(*b),
        };
        assert!(same, "{arg:?}: got {value:?}, the vectors say {want}");
    }
}

/// Reading the consent files (strict UTF-8, nothing removed, at most
/// 1 MiB), as the shared vectors (`vectors/consent-files.json`) say.
#[test]
fn consent_files_are_read_as_the_shared_cases_say() {
    use telemetry_client::consent::{env_opt_out, resolve, ConsentPaths};
    assert!(
        !env_opt_out(),
        "unset DO_NOT_TRACK and TELEMETRY_OPTOUT to run this test"
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../vectors/consent-files.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    let bytes = |file: &serde_json::Value| -> Option<Vec<u8>> {
        let hex = file["hex"].as_str()?;
        let mut out: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        out.resize(out.len() + file["pad"].as_u64().unwrap_or(0) as usize, b'#');
        Some(out)
    };
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = ConsentPaths {
            user: dir.path().join("consent"),
            system: dir.path().join("system-consent"),
        };
        for (key, path) in [("user", &paths.user), ("system", &paths.system)] {
            if let Some(b) = bytes(&c[key]) {
                std::fs::write(path, b).unwrap();
            }
        }
        let (mode, layer) = resolve("cfdev", &paths);
        let layer = match layer {
            telemetry_client::Layer::System => "system",
            telemetry_client::Layer::Environment => "environment",
            telemetry_client::Layer::UserFile => "user_file",
            telemetry_client::Layer::Default => "default",
        };
        assert_eq!(
            (mode.as_str(), layer),
            (c["mode"].as_str().unwrap(), c["layer"].as_str().unwrap()),
            "{name}"
        );
    }
}
