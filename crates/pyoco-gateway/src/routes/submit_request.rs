//! The `POST /runs` body (`RunSubmitRequest` in 0.5.1), validated the way FastAPI + pydantic v2
//! validate it, with the same 422 list when it is malformed.
//!
//! | field | rule | default |
//! |---|---|---|
//! | `flow_name` | string, at least 1 character (whitespace allowed) | required |
//! | `params` | object | `{}` |
//! | `tag` | string or null | `PYOCO_DEFAULT_TAG` |
//! | `tags` | list of strings | `[]` (stored as `[tag]`) |
//!
//! Unknown fields are ignored. Type errors, missing fields and unreadable JSON give pydantic's
//! list-shaped `detail`; the routing-tag rule gives `{"detail":"invalid tag","reason":…}` (0.5.1
//! gave pydantic's pattern error) and — new — each `tags` entry must pass the same rule
//! (`{"detail":"invalid tags","reason":…}`), since a tag that is not a subject token is of no
//! use to anyone (§14 item 22).

use std::borrow::Cow;

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{json, Map, Value};
use utoipa::{
    openapi::{schema::ObjectBuilder, RefOr, Schema, Type},
    PartialSchema, ToSchema,
};

use crate::error::{ApiError, FieldError, Loc};

// The `POST /runs` body as `/openapi.json` describes it; `RunSubmitRequest::from_body` is what
// checks it: keep the two in step.
/// A run to submit. Unknown fields are ignored.
#[derive(ToSchema)]
#[schema(as = RunSubmitRequest)]
#[allow(dead_code)] // documentation only
pub(crate) struct RunSubmitBody {
    /// The flow to run: at least 1 character (whitespace counts), at most 1024 bytes of UTF-8
    /// (422 `invalid flow_name`; 0.5.1 had no limit).
    #[schema(min_length = 1, example = "main")]
    flow_name: String,
    /// The flow's parameters.
    #[schema(required = false, value_type = Object, default = json!({}))]
    params: (),
    /// The routing tag; absent or `null`: PYOCO_DEFAULT_TAG.
    tag: Option<RoutingTag>,
    /// Tags stored on the run; each must pass the routing-tag rule. Empty: `[tag]`.
    #[schema(required = false, default = json!([]))]
    tags: Vec<RoutingTag>,
}

/// A routing tag: 1 to 64 of `A-Z a-z 0-9 _ -` (a NATS subject token).
pub(crate) struct RoutingTag;

impl PartialSchema for RoutingTag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                "^[A-Za-z0-9_-]{{1,{}}}$",
                pyoco_wire::MAX_TAG_LEN
            )))
            .min_length(Some(1))
            .max_length(Some(pyoco_wire::MAX_TAG_LEN))
            .examples(["default"])
            .into()
    }
}

impl ToSchema for RoutingTag {}

/// A validated `POST /runs` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunSubmitRequest {
    pub flow_name: String,
    pub params: Map<String, Value>,
    /// The routing tag, already checked; `None` means "use the default tag".
    pub tag: Option<String>,
    /// Checked request tags (possibly empty).
    pub tags: Vec<String>,
}

impl RunSubmitRequest {
    /// Validate a request body given its headers.
    pub(crate) fn from_body(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let value = read_json_body(headers, body)?;
        let Value::Object(mut obj) = value else {
            return Err(ApiError::Validation(vec![FieldError {
                kind: "model_attributes_type",
                loc: vec!["body".into()],
                msg: "Input should be a valid dictionary or object to extract fields from".into(),
                input: value,
                ctx: None,
            }]));
        };

        let mut errors = Vec::new();
        let flow_name = match obj.get("flow_name") {
            None => {
                errors.push(missing(&["body", "flow_name"], Value::Object(obj.clone())));
                None
            }
            Some(Value::String(s)) if s.is_empty() => {
                errors.push(FieldError {
                    kind: "string_too_short",
                    loc: loc(&["body", "flow_name"]),
                    msg: "String should have at least 1 character".into(),
                    input: Value::String(String::new()),
                    ctx: Some(json!({"min_length": 1})),
                });
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                errors.push(string_type(loc(&["body", "flow_name"]), other.clone()));
                None
            }
        };
        let params = match obj.remove("params") {
            None => Some(Map::new()),
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                errors.push(FieldError {
                    kind: "dict_type",
                    loc: loc(&["body", "params"]),
                    msg: "Input should be a valid dictionary".into(),
                    input: other,
                    ctx: None,
                });
                None
            }
        };
        let tag = match obj.remove("tag") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                errors.push(string_type(loc(&["body", "tag"]), other));
                None
            }
        };
        let tags = match obj.remove("tags") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut tags = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::String(s) => tags.push(s),
                        other => errors.push(string_type(
                            vec!["body".into(), "tags".into(), i.into()],
                            other,
                        )),
                    }
                }
                tags
            }
            Some(other) => {
                errors.push(FieldError {
                    kind: "list_type",
                    loc: loc(&["body", "tags"]),
                    msg: "Input should be a valid list".into(),
                    input: other,
                    ctx: None,
                });
                Vec::new()
            }
        };
        let (Some(flow_name), Some(params), true) = (flow_name, params, errors.is_empty()) else {
            return Err(ApiError::Validation(errors));
        };

        if let Some(tag) = &tag {
            pyoco_wire::validate_tag(tag).map_err(|err| {
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid tag",
                    err.to_string(),
                )
            })?;
        }
        for (i, t) in tags.iter().enumerate() {
            pyoco_wire::validate_tag(t).map_err(|err| {
                ApiError::with_reason(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid tags",
                    format!("tags[{i}]: {err}"),
                )
            })?;
        }
        Ok(RunSubmitRequest {
            flow_name,
            params,
            tag,
            tags,
        })
    }
}

/// The body as JSON, following FastAPI: parsed as JSON when there is no `Content-Type` or it is
/// `application/json` / `application/*+json`; any other type is "not an object" (so a
/// cross-site `text/plain` form post cannot submit runs); an empty body is "missing".
pub(crate) fn read_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let is_json = match headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(is_json_content_type),
    };
    if !is_json {
        return Err(ApiError::Validation(vec![FieldError {
            kind: "model_attributes_type",
            loc: vec!["body".into()],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            input: Value::String(String::from_utf8_lossy(body).into_owned()),
            ctx: None,
        }]));
    }
    if body.is_empty() {
        return Err(ApiError::Validation(vec![missing(&["body"], Value::Null)]));
    }
    serde_json::from_slice(body).map_err(|err| {
        ApiError::Validation(vec![FieldError {
            kind: "json_invalid",
            loc: vec!["body".into(), error_position(body, &err).into()],
            msg: "JSON decode error".into(),
            input: json!({}),
            ctx: Some(json!({ "error": json_error_text(&err) })),
        }])
    })
}

/// `application/json`, `application/<x>+json`, with or without parameters (case-insensitive).
fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((main, sub)) = essence.split_once('/') else {
        return false;
    };
    main.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// Character offset of a JSON error (Python's `JSONDecodeError.pos`), from serde's line/column.
/// Inside a bad literal (`nope`) serde points a few characters after where Python does.
fn error_position(body: &[u8], err: &serde_json::Error) -> usize {
    let text = String::from_utf8_lossy(body);
    if err.is_eof() {
        return text.chars().count();
    }
    let (line, column) = (err.line(), err.column());
    if line == 0 {
        return 0;
    }
    let mut pos = 0;
    for (n, l) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            return pos + column.saturating_sub(1).min(l.chars().count());
        }
        pos += l.chars().count();
    }
    pos
}

/// The error text for `ctx.error`: Python's `json` wording where serde's error says the same
/// thing, serde's own message (without its position suffix) otherwise.
fn json_error_text(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let python = match text {
        "EOF while parsing a value" | "expected value" | "expected ident" | "invalid number" => {
            "Expecting value"
        }
        "key must be a string" => "Expecting property name enclosed in double quotes",
        "expected `:`" => "Expecting ':' delimiter",
        "expected `,` or `]`" | "expected `,` or `}`" => "Expecting ',' delimiter",
        "EOF while parsing a string" => "Unterminated string starting at",
        "trailing characters" => "Extra data",
        "invalid escape" => "Invalid \\escape",
        t if t.starts_with("control character") => "Invalid control character at",
        other => other,
    };
    python.to_string()
}

fn loc(keys: &[&'static str]) -> Vec<Loc> {
    keys.iter().map(|k| Loc::Key(Cow::Borrowed(*k))).collect()
}

fn missing(keys: &[&'static str], input: Value) -> FieldError {
    FieldError {
        kind: "missing",
        loc: loc(keys),
        msg: "Field required".into(),
        input,
        ctx: None,
    }
}

fn string_type(loc: Vec<Loc>, input: Value) -> FieldError {
    FieldError {
        kind: "string_type",
        loc,
        msg: "Input should be a valid string".into(),
        input,
        ctx: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h
    }

    fn errors(body: &str) -> Vec<FieldError> {
        match RunSubmitRequest::from_body(&json_headers(), body.as_bytes()) {
            Err(ApiError::Validation(e)) => e,
            other => panic!("expected a validation error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_and_unknown_fields_are_ignored() {
        let req =
            RunSubmitRequest::from_body(&json_headers(), br#"{"flow_name":"f","x":1}"#).unwrap();
        assert_eq!(req.flow_name, "f");
        assert!(req.params.is_empty());
        assert_eq!(req.tag, None);
        assert!(req.tags.is_empty());
    }

    #[test]
    fn null_tag_means_default() {
        let req = RunSubmitRequest::from_body(&json_headers(), br#"{"flow_name":"f","tag":null}"#)
            .unwrap();
        assert_eq!(req.tag, None);
    }

    #[test]
    fn every_field_error_is_reported_together() {
        let e = errors(r#"{"params":[1],"tag":5,"tags":["a",2]}"#);
        let kinds: Vec<_> = e.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            ["missing", "dict_type", "string_type", "string_type"]
        );
        assert_eq!(
            serde_json::to_value(&e[3].loc).unwrap(),
            json!(["body", "tags", 1])
        );
    }

    #[test]
    fn empty_flow_name_is_too_short() {
        let e = errors(r#"{"flow_name":""}"#);
        assert_eq!(e[0].kind, "string_too_short");
        assert_eq!(e[0].ctx, Some(json!({"min_length": 1})));
    }

    #[test]
    fn invalid_json_reports_the_position() {
        let e = errors("{\"flow_name\":\n  }");
        assert_eq!(e[0].kind, "json_invalid");
        assert_eq!(
            serde_json::to_value(&e[0].loc).unwrap(),
            json!(["body", 16])
        );
    }

    #[test]
    fn non_json_content_type_is_not_an_object() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let err = RunSubmitRequest::from_body(&h, br#"{"flow_name":"f"}"#).unwrap_err();
        assert!(matches!(err, ApiError::Validation(e) if e[0].kind == "model_attributes_type"));
        // No content type at all is read as JSON, like FastAPI.
        assert!(RunSubmitRequest::from_body(&HeaderMap::new(), br#"{"flow_name":"f"}"#).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/vnd.api+json"));
        assert!(!is_json_content_type("application/x-www-form-urlencoded"));
        assert!(!is_json_content_type("text/json"));
        assert!(!is_json_content_type("application/+json"));
    }

    #[test]
    fn tag_rule_gives_invalid_tag_with_reason() {
        let err = RunSubmitRequest::from_body(&json_headers(), br#"{"flow_name":"f","tag":"a.b"}"#)
            .unwrap_err();
        let ApiError::Detail {
            status,
            detail,
            reason,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(detail, "invalid tag");
        assert!(reason.unwrap().contains("'.'"));
    }
}
