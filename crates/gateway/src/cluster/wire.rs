//! The entry each replica keeps in Redis: its routers' reports as JSON, and back.
//!
//! One Redis hash (`{key_prefix}replicas`) holds one field per running replica: the replica's id
//! and a random incarnation, so a restart never overwrites what the previous process spent.
//! The value is an [`Entry`]:
//!
//! ```json
//! {"v":1,"at_ms":1764547200000,"routes":{"chat":{"spend_period":20424,"spent_usd":0.12,
//!   "providers":[{"name":"primary","opened":[1764547199000,1764547204000],
//!   "recovered_ms":null,"cooldown":["rate_limited",1764547230000],"minute":[42,51000]}]}}}
//! ```
//!
//! Times are milliseconds since the Unix epoch: the gateway's core clock is anchored there, so
//! replicas on hosts with synchronised clocks share one time line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use stilts_core::{Cooldown, Instant, Opening, ProviderReport, ReplicaReport};

/// The format version; an entry of another version is skipped (and counted).
pub(crate) const VERSION: u32 = 1;

/// How long a sibling's per-minute usage counts after its report: the length of the window it
/// describes. A replica that stops reporting (gone, or cut off from Redis) fades out after it.
pub(crate) const USAGE_FRESH_MS: u64 = 60_000;

/// One replica's entry.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    pub v: u32,
    /// When it was written.
    pub at_ms: u64,
    pub routes: BTreeMap<String, RouteEntry>,
}

/// One route of an entry.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteEntry {
    pub spend_period: u64,
    pub spent_usd: f64,
    pub providers: Vec<ProviderEntry>,
}

/// One provider of a route.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderEntry {
    pub name: String,
    /// `[opened at, open until]`.
    #[serde(default)]
    pub opened: Option<[u64; 2]>,
    #[serde(default)]
    pub recovered_ms: Option<u64>,
    #[serde(default)]
    pub cooldown: Option<(CooldownKind, u64)>,
    /// Requests and tokens over the last minute.
    #[serde(default)]
    pub minute: [u64; 2],
}

/// [`Cooldown`] on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CooldownKind {
    RateLimited,
    Auth,
    Quota,
}

impl From<Cooldown> for CooldownKind {
    fn from(c: Cooldown) -> Self {
        match c {
            Cooldown::RateLimited => CooldownKind::RateLimited,
            Cooldown::Auth => CooldownKind::Auth,
            Cooldown::Quota => CooldownKind::Quota,
        }
    }
}

impl From<CooldownKind> for Cooldown {
    fn from(c: CooldownKind) -> Self {
        match c {
            CooldownKind::RateLimited => Cooldown::RateLimited,
            CooldownKind::Auth => Cooldown::Auth,
            CooldownKind::Quota => Cooldown::Quota,
        }
    }
}

fn ms(at: Instant) -> u64 {
    at.as_nanos() / 1_000_000
}

impl Entry {
    /// The entry of a replica whose routers reported `reports` at `at`.
    pub(crate) fn from_reports(at: Instant, reports: &[(String, ReplicaReport)]) -> Entry {
        let routes = reports
            .iter()
            .map(|(route, report)| {
                let providers = report
                    .providers
                    .iter()
                    .map(|p| ProviderEntry {
                        name: p.name.clone(),
                        opened: p.opened.map(|o| [ms(o.at), ms(o.until)]),
                        recovered_ms: p.recovered_at.map(ms),
                        cooldown: p.cooldown.map(|(kind, until)| (kind.into(), ms(until))),
                        minute: p.minute,
                    })
                    .collect();
                let entry = RouteEntry {
                    spend_period: report.spend_period,
                    spent_usd: report.spent_usd,
                    providers,
                };
                (route.clone(), entry)
            })
            .collect();
        Entry {
            v: VERSION,
            at_ms: ms(at),
            routes,
        }
    }

    /// Reads an entry; anything but a well-formed entry of this version is an error that says
    /// what is wrong.
    pub(crate) fn decode(text: &[u8]) -> Result<Entry, String> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version =
            serde_json::from_slice(text).map_err(|e| format!("not a stilts entry ({e})"))?;
        if version.v != VERSION {
            return Err(format!(
                "written by another stilts version (format {}, this one reads {VERSION})",
                version.v
            ));
        }
        let entry: Entry =
            serde_json::from_slice(text).map_err(|e| format!("malformed entry ({e})"))?;
        if entry
            .routes
            .values()
            .any(|r| !r.spent_usd.is_finite() || r.spent_usd < 0.0)
        {
            return Err("malformed entry (a spend that is not a finite amount ≥ 0)".into());
        }
        Ok(entry)
    }

    /// The JSON text.
    pub(crate) fn encode(&self) -> String {
        // A map of plain numbers and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What this entry says of `route` at `now`, as a core report: breaker and cool-down times
    /// as written (they carry their own end), per-minute usage only while it is fresh.
    pub(crate) fn report(&self, route: &str, now: Instant) -> Option<ReplicaReport> {
        let r = self.routes.get(route)?;
        let fresh = ms(now).saturating_sub(self.at_ms) <= USAGE_FRESH_MS;
        let providers = r
            .providers
            .iter()
            .map(|p| ProviderReport {
                name: p.name.clone(),
                opened: p.opened.map(|[at, until]| Opening {
                    at: Instant::from_millis(at),
                    until: Instant::from_millis(until),
                }),
                recovered_at: p.recovered_ms.map(Instant::from_millis),
                cooldown: p
                    .cooldown
                    .map(|(kind, until)| (kind.into(), Instant::from_millis(until))),
                minute: if fresh { p.minute } else { [0, 0] },
            })
            .collect();
        Some(ReplicaReport {
            spend_period: r.spend_period,
            spent_usd: r.spent_usd,
            providers,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn sample() -> Vec<(String, ReplicaReport)> {
        vec![(
            "chat".to_owned(),
            ReplicaReport {
                spend_period: 3,
                spent_usd: 0.25,
                providers: vec![ProviderReport {
                    name: "primary".into(),
                    opened: Some(Opening {
                        at: Instant::from_millis(1_000),
                        until: Instant::from_millis(6_000),
                    }),
                    recovered_at: Some(Instant::from_millis(500)),
                    cooldown: Some((Cooldown::RateLimited, Instant::from_millis(9_000))),
                    minute: [4, 400],
                }],
            },
        )]
    }

    #[test]
    fn an_entry_round_trips() {
        let entry = Entry::from_reports(Instant::from_millis(2_000), &sample());
        let back = Entry::decode(entry.encode().as_bytes()).unwrap();
        assert_eq!(back, entry);
        let report = back.report("chat", Instant::from_millis(2_500)).unwrap();
        assert_eq!(report, sample()[0].1);
        assert_eq!(back.report("other", Instant::from_millis(2_500)), None);
    }

    #[test]
    fn usage_fades_once_the_report_is_a_minute_old() {
        let entry = Entry::from_reports(Instant::from_millis(2_000), &sample());
        let late = Instant::from_millis(2_000 + USAGE_FRESH_MS + 1);
        let report = entry.report("chat", late).unwrap();
        assert_eq!(report.providers[0].minute, [0, 0]);
        // Spend stays: it was spent in its period, whatever became of the replica.
        assert_eq!(report.spent_usd, 0.25);
    }

    #[test]
    fn garbage_is_an_error_that_says_what_it_is() {
        for (text, says) in [
            (&b"\xff\xfe"[..], "not a stilts entry"),
            (b"[]", "not a stilts entry"),
            (b"{\"v\":9,\"at_ms\":1,\"routes\":{}}", "another stilts version"),
            (b"{\"v\":1,\"at_ms\":\"x\",\"routes\":{}}", "malformed"),
            (
                b"{\"v\":1,\"at_ms\":1,\"routes\":{\"c\":{\"spend_period\":0,\"spent_usd\":-1,\"providers\":[]}}}",
                "spend",
            ),
            (b"{\"v\":1,\"at_ms\":1,\"routes\":{},\"extra\":1}", "malformed"),
        ] {
            let e = Entry::decode(text).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
