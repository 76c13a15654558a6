//! The gemini provider plugin for stilts.
