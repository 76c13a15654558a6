//! A small Server-Sent Events framer for the host (the host frames, the plugin parses payloads).
//!
//! Follows the WHATWG event-stream rules that matter for LLM streams: lines end in `\n`, `\r\n` or `\r`;
//! a blank line dispatches the event; `:` starts a comment; `event:` sets the name; `data:` lines are
//! joined with `\n`; one space after the colon is dropped; other fields (`id:`, `retry:`) are ignored.
//! Bytes are taken in any split (a TCP read may end mid-line). A line longer than the limit is an error,
//! so a misbehaving upstream cannot grow the buffer without bound.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// A line, or the data of one event (all its `data:` lines together), exceeded
/// [`SseFramer::max_line_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("SSE line or event longer than {limit} bytes")]
pub struct LineTooLong {
    /// The limit in force.
    pub limit: usize,
}

/// Incremental SSE framer.
#[derive(Debug)]
pub struct SseFramer {
    line: Vec<u8>,
    skip_lf: bool,
    event: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    max_line_bytes: usize,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE_BYTES)
    }
}

impl SseFramer {
    /// 8 MiB: far above any real event line.
    pub const DEFAULT_MAX_LINE_BYTES: usize = 8 << 20;

    /// A framer refusing lines longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        SseFramer {
            line: Vec::new(),
            skip_lf: false,
            event: None,
            data: Vec::new(),
            has_data: false,
            max_line_bytes,
        }
    }

    /// The line limit.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Feeds bytes; returns the events completed by them.
    ///
    /// A line that arrives whole within `bytes` is read where it is; only a line split across
    /// reads is gathered in the framer's buffer (which keeps its allocation).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.extend_line(rest)?;
                break;
            };
            let (tail, after) = (&rest[..end], &rest[end + 1..]);
            let ended = if self.line.is_empty() {
                self.check_room(tail.len())?;
                self.line_done(tail)
            } else {
                self.extend_line(tail)?;
                let mut line = std::mem::take(&mut self.line);
                let ended = self.line_done(&line);
                line.clear();
                self.line = line;
                ended
            };
            self.skip_lf = rest[end] == b'\r';
            rest = after;
            if let Some(event) = ended {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// The connection closed. Returns `true` if an incomplete event was pending (its data is discarded, as
    /// the standard says; the host should count the stream as cut if the plugin had not seen its end).
    pub fn finish(&mut self) -> bool {
        let pending = !self.line.is_empty() || self.has_data || self.event.is_some();
        self.line.clear();
        self.data.clear();
        self.has_data = false;
        self.event = None;
        pending
    }

    /// Refuses `more` bytes of line when the pending line and event data would then pass the
    /// limit. The pending event's data counts too: an event that never ends must not grow
    /// without bound, one `data:` line at a time.
    fn check_room(&mut self, more: usize) -> Result<(), LineTooLong> {
        if self.data.len() + self.line.len() + more > self.max_line_bytes {
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            return Err(LineTooLong {
                limit: self.max_line_bytes,
            });
        }
        Ok(())
    }

    fn extend_line(&mut self, part: &[u8]) -> Result<(), LineTooLong> {
        self.check_room(part.len())?;
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event = None;
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        None
    }
}

/// Frames a whole transcript at once (tests and fixtures). Returns the events and whether the transcript
/// ended with an incomplete event.
pub fn frame_all(bytes: &[u8]) -> Result<(Vec<SseEvent>, bool), LineTooLong> {
    let mut f = SseFramer::default();
    let events = f.push(bytes)?;
    Ok((events, f.finish()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn frames_named_and_unnamed_events_in_any_split() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: ping comment\r\ndata: x\r\ndata: y\r\n\r\nid: 3\ndata:[DONE]\n\n";
        let whole = frame_all(text).unwrap();
        assert_eq!(whole.0.len(), 3);
        assert_eq!(whole.0[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole.0[1].data, b"x\ny");
        assert_eq!(whole.0[2].data, b"[DONE]");
        assert!(!whole.1);
        for split in 1..text.len() {
            let mut f = SseFramer::default();
            let mut evs = f.push(&text[..split]).unwrap();
            evs.extend(f.push(&text[split..]).unwrap());
            assert_eq!(evs, whole.0, "split at {split}");
        }
        let (evs, pending) = frame_all(b"data: {\"partial\"").unwrap();
        assert!(evs.is_empty() && pending);
    }

    #[test]
    fn long_lines_are_refused() {
        let mut f = SseFramer::new(8);
        assert_eq!(f.push(b"data: 12345678"), Err(LineTooLong { limit: 8 }));
    }

    #[test]
    fn an_event_that_never_ends_is_bounded_too() {
        let mut f = SseFramer::new(32);
        assert_eq!(
            f.push(
                b"data: 0123456789
"
            )
            .map(|e| e.len()),
            Ok(0)
        );
        assert_eq!(
            f.push(
                b"data: 0123456789
"
            )
            .map(|e| e.len()),
            Ok(0)
        );
        assert_eq!(
            f.push(
                b"data: 0123456789
"
            ),
            Err(LineTooLong { limit: 32 })
        );
    }
}
