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
