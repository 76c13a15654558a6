//! The anthropic provider plugin for stilts.
