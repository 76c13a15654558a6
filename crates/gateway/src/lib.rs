//! stilts-gateway: the tokio + axum + reqwest driver of stilts-core; the OpenAI-compatible HTTP gateway.
