//! Records: the structs carried in replies, which grow by appending fields.
//!
//! A postcard struct is its fields back to back, with nothing that says
//! where it ends, so a peer that knows one field more or less than the
//! sender misreads everything after it. A *record* is instead written as a
//! byte string (varint length, then the postcard fields), and read by two
//! rules:
//!
//! - **bytes after the last field the reader knows are skipped** (a newer
//!   sender added fields: an older reader ignores them);
//! - **fields missing at the end read as zero** (an older sender wrote
//!   fewer fields: the reader fills in what a zero byte encodes — `0`, `""`,
//!   an empty list or map, `None`, `false`, an enum's first variant, an
//!   empty record).
//!
//! So a field may only be appended, and its type must mean "not known" when
//! zero (an `Option`, a count, a list): a bare UUID or other fixed-size
//! value cannot be added. (Zero fill cannot tell a field missing from one
//! cut short inside the record; only a peer that writes bytes by hand can
//! cut one, and such a peer can as well write any value it likes, so this
//! is no weaker than the checks every value gets anyway.) In JSON (`is_human_readable`) a record is a plain
//! object; added fields carry `#[serde(default)]` and unknown keys are
//! ignored, which gives the same two rules.

use serde::de::{self, Deserializer};
use std::borrow::Cow;

/// Most fields a record may gain over a reader's idea of it before an
/// older record stops decoding: each missing field reads one zero byte.
pub const MAX_ADDED_FIELDS: usize = 256;

/// Read a record's bytes with the rules above: `fields` decodes the known
/// fields in order from a postcard deserializer.
pub fn decode<T>(
    bytes: &[u8],
    fields: impl for<'a> Fn(
        &mut postcard::Deserializer<'a, postcard::de_flavors::Slice<'a>>,
    ) -> postcard::Result<T>,
) -> postcard::Result<T> {
    match fields(&mut postcard::Deserializer::from_bytes(bytes)) {
        // Written by an older peer: the fields it did not know read as zero.
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let mut filled = Vec::with_capacity(bytes.len() + MAX_ADDED_FIELDS);
            filled.extend_from_slice(bytes);
            filled.resize(bytes.len() + MAX_ADDED_FIELDS, 0);
            fields(&mut postcard::Deserializer::from_bytes(&filled))
        }
        // Any bytes left over were written by a newer peer: skipped.
        other => other,
    }
}

/// A record's bytes as the outer deserializer hands them over (borrowed
/// from the frame, or owned).
pub struct RecordBytes<'de>(pub Cow<'de, [u8]>);

impl<'de> serde::Deserialize<'de> for RecordBytes<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RecordBytes<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a record (length-prefixed bytes)")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(RecordBytes(Cow::Borrowed(v)))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(RecordBytes(Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(RecordBytes(Cow::Owned(v)))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// The postcard bytes of a record's fields (without the length prefix,
/// which the outer serializer writes).
pub fn encode<T: serde::Serialize>(fields: &T) -> postcard::Result<Vec<u8>> {
    postcard::to_stdvec(fields)
}

#[doc(hidden)]
pub use serde as __serde;

/// Make `$t` a record: length-prefixed in postcard, a plain object in
/// JSON. `$t` derives `Serialize` and `Deserialize` with
/// `#[serde(remote = "Self")]`, which makes the derived code inherent
/// functions that this macro's trait impls call.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// #[serde(remote = "Self")]
/// pub struct Report {
///     pub events: u64,
///     #[serde(default)] // added later: older peers send no value
///     pub bytes: Option<u64>,
/// }
/// telemetry_proto::record!(Report);
/// ```
#[macro_export]
macro_rules! record {
    ($t:ident) => {
        impl $crate::record::__serde::Serialize for $t {
            fn serialize<S: $crate::record::__serde::Serializer>(
                &self,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    return $t::serialize(self, s);
                }
                struct Fields<'a>(&'a $t);
                impl $crate::record::__serde::Serialize for Fields<'_> {
                    fn serialize<S: $crate::record::__serde::Serializer>(
                        &self,
                        s: S,
                    ) -> Result<S::Ok, S::Error> {
                        $t::serialize(self.0, s)
                    }
                }
                let bytes = $crate::record::encode(&Fields(self))
                    .map_err(<S::Error as $crate::record::__serde::ser::Error>::custom)?;
                s.serialize_bytes(&bytes)
            }
        }
        impl<'de> $crate::record::__serde::Deserialize<'de> for $t {
            fn deserialize<D: $crate::record::__serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    return $t::deserialize(d);
                }
                let bytes = <$crate::record::RecordBytes<'de> as $crate::record::__serde::Deserialize>::deserialize(d)?;
                $crate::record::decode(&bytes.0, |de| $t::deserialize(de))
                    .map_err(<D::Error as $crate::record::__serde::de::Error>::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    /// A record as an older peer knows it.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    struct Old {
        a: u64,
        b: String,
    }
    record!(Old);

    /// The same record after two fields were appended, one of them a
    /// nested record.
    #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
    #[serde(remote = "Self")]
    struct New {
        a: u64,
        b: String,
        #[serde(default)]
        c: Vec<Old>,
        #[serde(default)]
        d: Option<i64>,
    }
    record!(New);

    fn new() -> New {
        New {
            a: 7,
            b: "x".into(),
            c: vec![Old {
                a: 1,
                b: "y".into(),
            }],
            d: Some(-3),
        }
    }

    #[test]
    fn an_older_reader_skips_fields_it_does_not_know() {
        let bytes = postcard::to_stdvec(&(new(), 42u8)).unwrap();
        let (old, after): (Old, u8) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            old,
            Old {
                a: 7,
                b: "x".into()
            }
        );
        assert_eq!(after, 42, "what follows the record is read in step");
        let json = serde_json::to_string(&new()).unwrap();
        let old: Old = serde_json::from_str(&json).unwrap();
        assert_eq!(old.a, 7);
    }

    #[test]
    fn a_newer_reader_reads_missing_fields_as_zero() {
        let old = Old {
            a: 7,
            b: "x".into(),
        };
        let bytes = postcard::to_stdvec(&(old.clone(), 42u8)).unwrap();
        let (new, after): (New, u8) = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            new,
            New {
                a: 7,
                b: "x".into(),
                c: vec![],
                d: None
            }
        );
        assert_eq!(after, 42);
        let json = serde_json::to_string(&old).unwrap();
        let new: New = serde_json::from_str(&json).unwrap();
        assert_eq!((new.c, new.d), (vec![], None));
    }

    #[test]
    fn same_version_round_trips_and_json_is_a_plain_object() {
        let bytes = postcard::to_stdvec(&new()).unwrap();
        assert_eq!(
            bytes[0] as usize,
            bytes.len() - 1,
            "a length-prefixed record"
        );
        assert_eq!(postcard::from_bytes::<New>(&bytes).unwrap(), new());
        assert_eq!(
            serde_json::to_string(&new()).unwrap(),
            r#"{"a":7,"b":"x","c":[{"a":1,"b":"y"}],"d":-3}"#
        );
    }
}
