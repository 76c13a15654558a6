//! The hand-written `Deserialize` impls of [`ChatRequest`], [`Message`] and [`Content`], which
//! type each field as it is read, and the tests that hold them to the derived forms.

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::fmt;

use super::{
    ChatRequest, Content, ContentPart, Message, Role, Stop, StreamOptions, Tool, ToolCall,
};

// Deserialization of the request types in one pass. `#[serde(flatten)]` (for `extra`) and
// `#[serde(untagged)]` (for `Content`) make derived impls buffer every field of an object into an
// intermediate tree before typing it; these impls type each field as it is read and keep unknown
// fields in `extra`. They accept and refuse exactly what the derived forms did (a test compares
// them on a corpus and on generated objects); their error messages are more specific.

/// An object key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(k) => k,
            Key::Owned(k) => k,
        }
    }

    fn into_owned(self) -> String {
        match self {
            Key::Borrowed(k) => k.to_owned(),
            Key::Owned(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Reads the value of a known field, refusing a second occurrence (as derived impls do).
fn field<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RequestVisitor;
        impl<'de> Visitor<'de> for RequestVisitor {
            type Value = ChatRequest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat completion request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
                let mut model: Option<String> = None;
                let mut messages: Option<Vec<Message>> = None;
                let mut max_tokens: Option<Option<u32>> = None;
                let mut max_completion_tokens: Option<Option<u32>> = None;
                let mut temperature: Option<Option<f64>> = None;
                let mut top_p: Option<Option<f64>> = None;
                let mut stop: Option<Option<Stop>> = None;
                let mut stream: Option<Option<bool>> = None;
                let mut stream_options: Option<Option<StreamOptions>> = None;
                let mut tools: Option<Option<Vec<Tool>>> = None;
                let mut tool_choice: Option<Option<Value>> = None;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "model" => field(&mut map, &mut model, "model")?,
                        "messages" => field(&mut map, &mut messages, "messages")?,
                        "max_tokens" => field(&mut map, &mut max_tokens, "max_tokens")?,
                        "max_completion_tokens" => field(
                            &mut map,
                            &mut max_completion_tokens,
                            "max_completion_tokens",
                        )?,
                        "temperature" => field(&mut map, &mut temperature, "temperature")?,
                        "top_p" => field(&mut map, &mut top_p, "top_p")?,
                        "stop" => field(&mut map, &mut stop, "stop")?,
                        "stream" => field(&mut map, &mut stream, "stream")?,
                        "stream_options" => field(&mut map, &mut stream_options, "stream_options")?,
                        "tools" => field(&mut map, &mut tools, "tools")?,
                        "tool_choice" => field(&mut map, &mut tool_choice, "tool_choice")?,
                        _ => {
                            let value: Value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(ChatRequest {
                    model: model.unwrap_or_default(),
                    messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
                    max_tokens: max_tokens.flatten(),
                    max_completion_tokens: max_completion_tokens.flatten(),
                    temperature: temperature.flatten(),
                    top_p: top_p.flatten(),
                    stop: stop.flatten(),
                    stream: stream.flatten(),
                    stream_options: stream_options.flatten(),
                    tools: tools.flatten(),
                    tool_choice: tool_choice.flatten(),
                    extra,
                })
            }
        }
        d.deserialize_map(RequestVisitor)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut role: Option<Role> = None;
                let mut content: Option<Option<Content>> = None;
                let mut name: Option<Option<String>> = None;
                let mut tool_calls: Option<Option<Vec<ToolCall>>> = None;
                let mut tool_call_id: Option<Option<String>> = None;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match key.as_str() {
                        "role" => field(&mut map, &mut role, "role")?,
                        "content" => field(&mut map, &mut content, "content")?,
                        "name" => field(&mut map, &mut name, "name")?,
                        "tool_calls" => field(&mut map, &mut tool_calls, "tool_calls")?,
                        "tool_call_id" => field(&mut map, &mut tool_call_id, "tool_call_id")?,
                        _ => {
                            let value: Value = map.next_value()?;
                            extra.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(Message {
                    role: role.ok_or_else(|| de::Error::missing_field("role"))?,
                    content: content.flatten(),
                    name: name.flatten(),
                    tool_calls: tool_calls.flatten(),
                    tool_call_id: tool_call_id.flatten(),
                    extra,
                })
            }
        }
        d.deserialize_map(MessageVisitor)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(ContentVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The derived forms the hand-written deserializers replace, to compare with.
    mod derived {
        use super::super::*;

        #[derive(Deserialize)]
        pub struct Request {
            #[serde(default)]
            model: String,
            messages: Vec<Msg>,
            max_tokens: Option<u32>,
            max_completion_tokens: Option<u32>,
            temperature: Option<f64>,
            top_p: Option<f64>,
            stop: Option<Stop>,
            stream: Option<bool>,
            stream_options: Option<StreamOptions>,
            tools: Option<Vec<Tool>>,
            tool_choice: Option<Value>,
            #[serde(flatten)]
            extra: Map<String, Value>,
        }

        #[derive(Deserialize)]
        struct Msg {
            role: Role,
            #[serde(default)]
            content: Option<Parts>,
            name: Option<String>,
            tool_calls: Option<Vec<ToolCall>>,
            tool_call_id: Option<String>,
            #[serde(flatten)]
            extra: Map<String, Value>,
        }

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Parts {
            Text(String),
            Parts(Vec<ContentPart>),
        }

        impl From<Request> for ChatRequest {
            fn from(r: Request) -> ChatRequest {
                ChatRequest {
                    model: r.model,
                    messages: r
                        .messages
                        .into_iter()
                        .map(|m| Message {
                            role: m.role,
                            content: m.content.map(|c| match c {
                                Parts::Text(t) => Content::Text(t),
                                Parts::Parts(p) => Content::Parts(p),
                            }),
                            name: m.name,
                            tool_calls: m.tool_calls,
                            tool_call_id: m.tool_call_id,
                            extra: m.extra,
                        })
                        .collect(),
                    max_tokens: r.max_tokens,
                    max_completion_tokens: r.max_completion_tokens,
                    temperature: r.temperature,
                    top_p: r.top_p,
                    stop: r.stop,
                    stream: r.stream,
                    stream_options: r.stream_options,
                    tools: r.tools,
                    tool_choice: r.tool_choice,
                    extra: r.extra,
                }
            }
        }
    }

    /// Both deserializers accept `json` with the same value, or both refuse it: from text, from
    /// a reader and from a `Value` (a different deserializer, which never lends strings).
    fn same_as_derived(json: &str) {
        fn agree<E: std::fmt::Debug>(
            json: &str,
            via: &str,
            new: Result<ChatRequest, E>,
            old: Result<ChatRequest, E>,
        ) {
            match (new, old) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{via}: {json}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{via}: {json}\n hand-written: {a:?}\n derived: {b:?}"),
            }
        }
        agree(
            json,
            "from_str",
            serde_json::from_str::<ChatRequest>(json),
            serde_json::from_str::<derived::Request>(json).map(ChatRequest::from),
        );
        agree(
            json,
            "from_reader",
            serde_json::from_reader::<_, ChatRequest>(json.as_bytes()),
            serde_json::from_reader::<_, derived::Request>(json.as_bytes()).map(ChatRequest::from),
        );
        if let Ok(value) = serde_json::from_str::<Value>(json) {
            agree(
                json,
                "from_value",
                serde_json::from_value::<ChatRequest>(value.clone()),
                serde_json::from_value::<derived::Request>(value).map(ChatRequest::from),
            );
        }
    }

    #[test]
    fn hand_written_request_deserializer_matches_the_derived_one() {
        for json in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":null,"messages":[]}"#,
            r#"{"model":5,"messages":[]}"#,
            r#"{"model":"a","model":"b","messages":[]}"#,
            r#"{"messages":[],"messages":[]}"#,
            r#"{"messages":[],"seed":1,"seed":2}"#,
            r#"{"mod\u0065l":"escaped key","messages":[]}"#,
            r#"{"messages":[],"max_tokens":null,"stream":true,"stream_options":{"include_usage":true,"x":1}}"#,
            r#"{"messages":[],"max_tokens":-1}"#,
            r#"{"messages":[],"max_tokens":"7"}"#,
            r#"{"messages":[],"stop":"END"}"#,
            r#"{"messages":[],"stop":["a","b"]}"#,
            r#"{"messages":[],"stop":3}"#,
            r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","strict":true}}],"tool_choice":"auto"}"#,
            r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}"#,
            r#"{"messages":[{"role":"tool","tool_call_id":"c","content":"42"}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"input_audio","input_audio":{}}]}]}"#,
            r#"{"messages":[{"role":"user","content":[{"type":"text"}]}]}"#,
            r#"{"messages":[{"role":"user","content":7}]}"#,
            r#"{"messages":[{"role":"user","content":{"text":"x"}}]}"#,
            r#"{"messages":[{"role":"wizard","content":"x"}]}"#,
            r#"{"messages":[{"content":"x"}]}"#,
            r#"{"messages":[{"role":"user","role":"user"}]}"#,
            r#"{"messages":[{"role":"user","refusal":null,"x":[1,2]}]}"#,
            r#"{"messages":[{"role":"user","name":"n","name":"m"}]}"#,
            r#"{"messages":[{"role":"user","content":"a","content":"b"}]}"#,
            r#"{"messages":[{"role":"tool","tool_call_id":"a","tool_call_id":"b"}]}"#,
            r#"{"messages":[{"role":"assistant","tool_calls":[],"tool_calls":[]}]}"#,
            r#"{"messages":[{"r\u006fle":"user","c\u006fntent":"escaped keys"}]}"#,
            r#"{"messages":{}}"#,
            r#"[]"#,
            r#""text""#,
            r#"null"#,
        ] {
            same_as_derived(json);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..300).prop_map(Value::from),
            (-1.0f64..3.0).prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            prop::collection::vec("[a-z]{0,3}".prop_map(Value::from), 0..3).prop_map(Value::from),
            Just(serde_json::json!({"include_usage": true})),
            Just(serde_json::json!([{"type": "text", "text": "t"}])),
            Just(serde_json::json!({"type": "text"})),
        ]
    }

    fn message() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "role",
            "content",
            "name",
            "tool_calls",
            "tool_call_id",
            "refusal",
            "x",
        ]);
        let role = prop::sample::select(vec![
            "user",
            "system",
            "assistant",
            "tool",
            "developer",
            "bad",
        ]);
        (
            role,
            prop::collection::vec((keys, json_value()), 0..4),
            any::<bool>(),
        )
            .prop_map(|(role, fields, with_role)| {
                let mut m = Map::new();
                if with_role {
                    m.insert("role".into(), Value::from(role));
                }
                for (k, v) in fields {
                    if k != "role" || !with_role {
                        m.insert(k.to_owned(), v);
                    }
                }
                Value::Object(m)
            })
    }

    proptest::proptest! {
        #[test]
        fn generated_requests_deserialize_as_with_the_derived_form(
            fields in prop::collection::vec((prop::sample::select(vec![
                "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
                "stream", "stream_options", "tools", "tool_choice", "seed", "user",
            ]), json_value()), 0..6),
            messages in prop::option::weighted(0.9, prop::collection::vec(message(), 0..4)),
        ) {
            let mut request = Map::new();
            for (k, v) in fields {
                request.insert(k.to_owned(), v);
            }
            if let Some(messages) = messages {
                request.insert("messages".into(), Value::from(messages));
            }
            same_as_derived(&Value::Object(request).to_string());
        }
    }

    /// Found by fuzzing (AFL++ on `canonical-request`, see docs/testing.md): serde_json skips the
    /// value of an ignored field (an unknown field of a tool, of a tool call, of an image) without
    /// checking its UTF-8, so a body with a byte like 0x80 there was read as a request, and the
    /// field dropped. `from_json`, which the plugin SDK reads requests with, refuses it.
    #[test]
    fn regression_a_body_with_invalid_utf8_in_an_ignored_field_is_refused() {
        let body = b"{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":\"function\",\"kype\":\"f\x86\",\"function\":{\"name\":\"f\"}}]}";
        assert!(serde_json::from_slice::<Value>(body).is_err());
        assert!(
            serde_json::from_slice::<ChatRequest>(body).is_ok(),
            "serde_json's laxness, which from_json guards against"
        );
        let e = ChatRequest::from_json(body).unwrap_err();
        assert!(e.to_string().contains("utf-8"), "{e}");
        let good = br#"{"model":"m","messages":[],"tools":[{"type":"function","kype":"f","function":{"name":"f"}}]}"#;
        assert_eq!(
            ChatRequest::from_json(good).unwrap(),
            serde_json::from_slice::<ChatRequest>(good).unwrap()
        );
    }

    #[test]
    fn request_keeps_unknown_fields_and_parts() {
        let raw = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},
            {"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]}],
            "seed":7,"logit_bias":{"1":2}}"#;
        let req: ChatRequest = serde_json::from_str(raw).unwrap();
        assert_eq!(req.extra["seed"], 7);
        let Some(Content::Parts(parts)) = &req.messages[0].content else {
            panic!()
        };
        assert!(matches!(parts[1], ContentPart::Other(_)));
        let ContentPart::ImageUrl { image_url } = &parts[2] else {
            panic!()
        };
        assert_eq!(image_url.as_base64_data(), Some(("image/png", "iVBO")));
        let back: Value = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(back, orig);
    }
}
