//! Caveat contexts: `google.protobuf.Struct` to and from JSON (the domain keeps a context as
//! the JSON object text it was written with).

use prost_types::value::Kind;

/// Parses JSON object text into a `google.protobuf.Struct`.
pub fn json_text_to_struct(text: &str) -> Result<prost_types::Struct, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(json_object_to_struct(map)),
        Ok(_) => Err("caveat context must be a JSON object".to_string()),
        Err(e) => Err(format!("invalid caveat context JSON: {e}")),
    }
}

fn json_object_to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        J::Object(m) => Kind::StructValue(json_object_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as JSON.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// A `google.protobuf.Struct` as compact JSON object text.
pub fn struct_to_json_text(s: &prost_types::Struct) -> String {
    struct_to_json(s).to_string()
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip() {
        let text = r#"{"a":[1,true,null,"x"],"b":{"c":1.5}}"#;
        assert_eq!(
            struct_to_json_text(&json_text_to_struct(text).unwrap()),
            text
        );
        assert!(json_text_to_struct("[1]")
            .unwrap_err()
            .contains("JSON object"));
        assert!(json_text_to_struct("{").unwrap_err().contains("invalid"));
    }
}
