//! The openai provider plugin for stilts.
