//! JSON records read straight from the bytes they arrive in, for the HTTP API's bodies and
//! JSON lines. A record keeps its keys and string values borrowed from the input where
//! they hold no escapes, so decoding one costs a vector of fields instead of a tree of
//! `serde_json::Value`s with a string for every key and value that is then copied again
//! field by field (measured: building, flattening and dropping those trees was about a
//! third of the HTTP ingest's CPU). A record's fields are in key order with the last of a
//! repeated key kept, as a `serde_json::Value` object has them, so what a record decodes to
//! and every violation it names are the same as they were with one.

use crate::Schema;
use cxgap_domain::{Timestamp, Violations};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// What a field (or a segment attribute) holds: a scalar, or something that is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
    Null,
    /// An array or object where a scalar belongs; its content is not kept.
    Other,
}

/// A record's field: a scalar, or an object (of which only `segment` is allowed).
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Scalar(Scalar<'a>),
    Object(Vec<(Cow<'a, str>, Scalar<'a>)>),
}

/// One record: its fields, or `None` when the JSON value is not an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a>(pub Option<Vec<(Cow<'a, str>, Field<'a>)>>);

impl<'a> Scalar<'a> {
    /// The text the record decoders take: a number as JSON wrote it (so `"7"` and `7` read
    /// the same), null as empty (absent).
    fn text(&self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s) => Some(s.clone()),
            Scalar::Number(n) => Some(Cow::Owned(n.to_string())),
            Scalar::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Scalar::Null => Some(Cow::Borrowed("")),
            Scalar::Other => None,
        }
    }
}

impl<'a> Record<'a> {
    /// Parses one record from a JSON text.
    pub fn parse(text: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// The `event_id` or `assessment_id` of the record, when it is a non-empty string: for
    /// naming the record in errors.
    pub fn id(&self) -> Option<String> {
        let fields = self.0.as_ref()?;
        ["event_id", "assessment_id"]
            .iter()
            .find_map(|k| match fields.binary_search_by(|(f, _)| f.as_ref().cmp(k)) {
                Ok(i) => match &fields[i].1 {
                    Field::Scalar(Scalar::Str(s)) => Some(s.as_ref()),
                    _ => None,
                },
                Err(_) => None,
            })
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// Decodes the record as schema `S`: a flat object with the schema's column names as
    /// keys (numbers may be JSON numbers or strings), and for a schema with a prefix
    /// optionally `"segment": {"tier": "gold", ...}`.
    pub fn decode<S: Schema>(&self, now: Timestamp) -> Result<S::Output, Violations> {
        let mut v = Violations::default();
        let Some(map) = &self.0 else {
            v.push("record", "must be a JSON object");
            return Err(v);
        };
        let mut flat: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(map.len());
        for (k, val) in map {
            if k == "segment" && S::PREFIX.is_some() {
                match val {
                    Field::Object(attrs) => {
                        for (ak, av) in attrs {
                            let field = format!("segment.{ak}");
                            match av.text() {
                                Some(s) => flat.push((Cow::Owned(field), s)),
                                None => v.push(field, "must be a string, number or boolean"),
                            }
                        }
                    }
                    Field::Scalar(_) => v.push("segment", "must be an object of attribute: value"),
                }
                continue;
            }
            if !crate::known_column::<S>(k) {
                v.push(k.to_string(), "is not a known field");
                continue;
            }
            match val {
                Field::Scalar(s) => match s.text() {
                    Some(s) => flat.push((k.clone(), s)),
                    None => v.push(k.to_string(), "must be a string, number, boolean or null"),
                },
                Field::Object(_) => v.push(k.to_string(), "must be a string, number, boolean or null"),
            }
        }
        let fields: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        S::decode(&fields, now, v)
    }
}

/// Puts entries in key order and keeps the last of a repeated key.
fn last_wins<T>(mut entries: Vec<(Cow<'_, str>, T)>) -> Vec<(Cow<'_, str>, T)> {
    // Stable: of equal keys the last one read stays last. `dedup_by` keeps the first of
    // equal neighbours, so each later one is swapped into its place before it goes.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    entries
}

/// A key, borrowed from the input when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `Deserialize` for a type that accepts any JSON value, so that a value of the wrong kind
/// is a violation of its record, not an error of the whole input: scalars go through
/// `$wrap`, arrays and objects through the two bodies given (`$seq` and `$map` name the
/// accessors in them).
macro_rules! any_value {
    ($ty:ident, $wrap:expr, |$seq:ident| $on_seq:expr, |$map:ident| $on_map:expr) => {
        impl<'de> Deserialize<'de> for $ty<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("any JSON value")
                    }
                    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Str(Cow::Borrowed(s))))
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Str(Cow::Owned(s.to_string()))))
                    }
                    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Str(Cow::Owned(s))))
                    }
                    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Number(n.into())))
                    }
                    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Number(n.into())))
                    }
                    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                        // JSON has no NaN or infinity, so a parsed float always makes a number.
                        Ok($wrap(serde_json::Number::from_f64(n).map_or(Scalar::Other, Scalar::Number)))
                    }
                    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Bool(b)))
                    }
                    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Null))
                    }
                    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                        Ok($wrap(Scalar::Null))
                    }
                    #[allow(unused_mut)]
                    fn visit_seq<A: SeqAccess<'de>>(self, mut $seq: A) -> Result<Self::Value, A::Error> {
                        $on_seq
                    }
                    #[allow(unused_mut)]
                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<Self::Value, A::Error> {
                        $on_map
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

any_value!(Scalar, |s| s, |seq| skip_seq(seq).map(|()| Scalar::Other), |map| skip_map(map).map(|()| Scalar::Other));

any_value!(Field, Field::Scalar, |seq| skip_seq(seq).map(|()| Field::Scalar(Scalar::Other)), |map| {
    let mut entries = Vec::new();
    while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Scalar<'de>>()? {
        entries.push((k, v));
    }
    Ok(Field::Object(last_wins(entries)))
});

any_value!(Record, |_| Record(None), |seq| skip_seq(seq).map(|()| Record(None)), |map| {
    let mut entries = Vec::with_capacity(32);
    while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Field<'de>>()? {
        entries.push((k, v));
    }
    Ok(Record(Some(last_wins(entries))))
});

/// A batch request's body: `[event, ...]` or `{"events": [...], "atomic": bool}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<'a> {
    pub records: Vec<Record<'a>>,
    pub atomic: bool,
}

/// Why a batch body is refused as a whole: the field at fault, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    Json(String),
    Field(String, &'static str),
}

/// The body's top level as read, before its rules are checked.
enum Top<'a> {
    Array(Vec<Record<'a>>),
    Object { events: Option<Option<Vec<Record<'a>>>>, atomic: Option<Scalar<'a>>, unknown: Option<Cow<'a, str>> },
    Other,
}

/// The value of `events`: an array of records, or `None` for anything else.
struct Records<'a>(Option<Vec<Record<'a>>>);

any_value!(
    Records,
    |_| Records(None),
    |seq| {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(r) = seq.next_element::<Record<'de>>()? {
            records.push(r);
        }
        Ok(Records(Some(records)))
    },
    |map| skip_map(map).map(|()| Records(None))
);

any_value!(
    Top,
    |_| Top::Other,
    |seq| Records::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(|r| Top::Array(r.0.unwrap_or_default())),
    |map| {
        let (mut events, mut atomic, mut unknown) = (None, None, None::<Cow<'de, str>>);
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            match k.as_ref() {
                "events" => events = Some(map.next_value::<Records<'de>>()?.0),
                "atomic" => atomic = Some(map.next_value::<Scalar<'de>>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    // The first in key order is the one named.
                    if unknown.as_ref().is_none_or(|u| k < *u) {
                        unknown = Some(k);
                    }
                }
            }
        }
        Ok(Top::Object { events, atomic, unknown })
    }
);

impl<'a> Batch<'a> {
    /// Parses a batch body; refuses it whole only when it is not JSON or not of either
    /// shape. A record that is not valid is left for its own decoding to name.
    pub fn parse(body: &'a [u8]) -> Result<Self, BatchError> {
        let top: Top<'a> = serde_json::from_slice(body).map_err(|e| BatchError::Json(e.to_string()))?;
        match top {
            Top::Array(records) => Ok(Batch { records, atomic: false }),
            Top::Object { events, atomic, unknown } => {
                let atomic = match atomic {
                    None | Some(Scalar::Null) => false,
                    Some(Scalar::Bool(b)) => b,
                    Some(_) => return Err(BatchError::Field("atomic".into(), "must be true or false")),
                };
                let Some(Some(records)) = events else {
                    return Err(BatchError::Field("events".into(), "is required: an array of feedback events"));
                };
                if let Some(k) = unknown {
                    return Err(BatchError::Field(k.into_owned(), "is not a known field (events, atomic)"));
                }
                Ok(Batch { records, atomic })
            }
            Top::Other => Err(BatchError::Field("body".into(), "must be {\"events\": [...]} or an array of events")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Assessments, Feedback};
    use serde_json::Value;

    /// What a record holds, built from serde_json's own tree of the same text: the order,
    /// the repeated keys and the numbers' text a record must agree with.
    fn from_value(value: &Value) -> Record<'_> {
        fn scalar(v: &Value) -> Scalar<'_> {
            match v {
                Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
                Value::Number(n) => Scalar::Number(n.clone()),
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Null => Scalar::Null,
                _ => Scalar::Other,
            }
        }
        let Value::Object(map) = value else { return Record(None) };
        Record(Some(
            map.iter()
                .map(|(k, v)| {
                    let field = match v {
                        Value::Object(o) => {
                            Field::Object(o.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), scalar(v))).collect())
                        }
                        v => Field::Scalar(scalar(v)),
                    };
                    (Cow::Borrowed(k.as_str()), field)
                })
                .collect(),
        ))
    }

    const DOCS: &[&str] = &[
        r#"{"event_id": "e1", "nps": 7, "csat": "4", "comment": null, "resolved": true}"#,
        r#"{"zeta": 1, "alpha": [1, {"x": 2}], "mid": {"a": [], "b": {"c": 1}, "a": "second"}}"#,
        r#"{"nps": 1, "nps": 2, "event_id": "first", "event_id": "second"}"#,
        r#"{"n": -3, "big": 18446744073709551615, "bigger": 18446744073709551616, "f": 1e2, "g": 0.1, "h": -0.0}"#,
        r#"{"esc\"aped": "a\nb\u00e9", "plain": "abc", "": ""}"#,
        r#"{"segment": {"tier": "gold", "region": "eu", "tier": "silver", "n": 3, "no": null, "bad": [1]}}"#,
        r#"[1, 2]"#,
        r#""just a string""#,
        r#"12.5"#,
        r#"null"#,
        r#"{}"#,
    ];

    #[test]
    fn a_record_holds_what_serde_jsons_own_tree_holds() {
        for doc in DOCS {
            let value: Value = serde_json::from_str(doc).unwrap();
            assert_eq!(Record::parse(doc.as_bytes()).unwrap(), from_value(&value), "{doc}");
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_input() {
        let r = Record::parse(br#"{"plain": "abc", "esc": "a\nb"}"#).unwrap();
        let fields = r.0.unwrap();
        assert!(matches!(&fields[0], (Cow::Borrowed("esc"), Field::Scalar(Scalar::Str(Cow::Owned(s)))) if s == "a\nb"));
        assert!(matches!(&fields[1], (Cow::Borrowed("plain"), Field::Scalar(Scalar::Str(Cow::Borrowed("abc"))))));
    }

    #[test]
    fn ids_name_a_record_only_when_they_are_non_empty_strings() {
        let id = |doc: &str| Record::parse(doc.as_bytes()).unwrap().id();
        assert_eq!(id(r#"{"event_id": "e1"}"#).as_deref(), Some("e1"));
        assert_eq!(id(r#"{"assessment_id": "a1"}"#).as_deref(), Some("a1"));
        assert_eq!(id(r#"{"event_id": "", "assessment_id": "a1"}"#), None);
        assert_eq!(id(r#"{"event_id": 7}"#), None);
        assert_eq!(id(r#"{"event_id": "old", "event_id": "new"}"#).as_deref(), Some("new"));
        assert_eq!(id(r#"["event_id"]"#), None);
    }

    #[test]
    fn records_decode_with_every_violation_named_in_key_order() {
        let now = Timestamp(1_800_000_000_000);
        let ok = Record::parse(
            br#"{"event_id": "e1", "customer_id": "c1", "channel": "web", "journey_stage": "usage",
                 "occurred_at": "2026-03-01", "nps": 9, "customer_value": 1e3, "resolved": true,
                 "segment": {"tier": "gold", "region": "eu", "tier": "silver"}}"#,
        )
        .unwrap()
        .decode::<Feedback>(now)
        .unwrap();
        assert_eq!(ok.nps, Some(9));
        assert_eq!(ok.customer_value, Some(1000.0));
        assert_eq!(ok.attributes.0, [("region".to_string(), "eu".to_string()), ("tier".into(), "silver".into())]);

        let bad = Record::parse(
            br#"{"zz": 1, "event_id": "e1", "nps": [9], "segment": {"tier": {}}, "aa": 2,
                 "customer_id": "c1", "channel": "web", "journey_stage": "usage", "occurred_at": "2026-03-01"}"#,
        )
        .unwrap()
        .decode::<Feedback>(now)
        .unwrap_err();
        let fields: Vec<&str> = bad.0.iter().map(|v| v.field.as_str()).collect();
        // The fields' syntax, in key order; then the domain's rules (here: no rating left).
        assert_eq!(fields[..4], ["aa", "nps", "segment.tier", "zz"]);
        let not_object = Record::parse(b"[1]").unwrap().decode::<Feedback>(now).unwrap_err();
        assert_eq!(not_object.to_string(), "record: must be a JSON object");
        let segment = Record::parse(br#"{"segment": {"a": 1}}"#).unwrap().decode::<Assessments>(now).unwrap_err();
        assert!(segment.0.iter().any(|v| v.field == "segment" && v.description == "is not a known field"), "{segment}");
    }

    #[test]
    fn batch_bodies_are_refused_whole_only_for_their_shape() {
        fn parse(body: &str) -> Result<Batch<'_>, BatchError> {
            Batch::parse(body.as_bytes())
        }
        let b = parse(r#"[{"event_id": "e1"}, 7]"#).unwrap();
        assert_eq!((b.records.len(), b.atomic, b.records[1].0.is_none()), (2, false, true));
        let b = parse(r#"{"atomic": true, "events": [{}], "events": [{}, {}]}"#).unwrap();
        assert_eq!((b.records.len(), b.atomic), (2, true));
        assert!(!parse(r#"{"events": [], "atomic": null}"#).unwrap().atomic);
        let field = |body: &str| match parse(body) {
            Err(BatchError::Field(f, d)) => format!("{f} {d}"),
            other => panic!("{body}: {other:?}"),
        };
        assert_eq!(field(r#"{"events": [], "atomic": "yes"}"#), "atomic must be true or false");
        assert_eq!(field(r#"{"events": {"a": 1}}"#), "events is required: an array of feedback events");
        assert_eq!(field(r#"{"atomic": false}"#), "events is required: an array of feedback events");
        assert_eq!(field(r#"{"zz": 1, "events": [], "aa": [2]}"#), "aa is not a known field (events, atomic)");
        assert_eq!(field(r#""events""#), r#"body must be {"events": [...]} or an array of events"#);
        let json = |body: &str| match parse(body) {
            Err(BatchError::Json(e)) => e,
            other => panic!("{body}: {other:?}"),
        };
        // serde_json's own messages, as with its tree.
        for body in [r#"{"events": [}"#, "[1] x", ""] {
            let want = serde_json::from_str::<Value>(body).unwrap_err().to_string();
            assert_eq!(json(body), want, "{body}");
        }
    }
}
