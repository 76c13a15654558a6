//! The raw form of a scenario file: what serde reads, before any value is checked.
//!
//! One struct per table; every table denies unknown fields, so a typo fails with its line. Defaults
//! that only fill a missing key live here; every other default and every check is in `validate`.

use super::model::{EventKindName, OutageMode};
use serde::Deserialize;
use std::collections::BTreeMap;
use stilts_core::{ErrorClass, RouterConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default = "default_seed")]
    pub(super) seed: u64,
    pub(super) duration_s: f64,
    pub(super) traffic: RawTraffic,
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) events: Vec<RawEvent>,
    #[serde(default)]
    pub(super) configs: Vec<RawConfig>,
    #[serde(default)]
    pub(super) baselines: RawBaselines,
    #[serde(default)]
    pub(super) expect: Vec<RawExpect>,
    #[serde(default)]
    pub(super) report: RawReport,
}

fn default_seed() -> u64 {
    1
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDist {
    pub(super) p50: f64,
    pub(super) p99: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraffic {
    pub(super) rate_rps: Option<f64>,
    pub(super) steps: Option<Vec<[f64; 2]>>,
    pub(super) diurnal: Option<RawDiurnal>,
    #[serde(default)]
    pub(super) spikes: Vec<RawSpike>,
    pub(super) input_tokens: Option<RawDist>,
    pub(super) output_tokens: Option<RawDist>,
    #[serde(default)]
    pub(super) stream_share: f64,
    pub(super) deadline_ms: Option<u64>,
    pub(super) max_tokens: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiurnal {
    pub(super) trough_rps: f64,
    pub(super) peak_rps: f64,
    #[serde(default = "default_peak_at")]
    pub(super) peak_at_s: f64,
    #[serde(default = "default_period")]
    pub(super) period_s: f64,
}

fn default_peak_at() -> f64 {
    14.0 * 3600.0
}
fn default_period() -> f64 {
    86_400.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpike {
    pub(super) start_s: f64,
    pub(super) duration_s: f64,
    pub(super) factor: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) name: String,
    pub(super) model: Option<String>,
    pub(super) weight: Option<u32>,
    pub(super) ttft_ms: Option<RawDist>,
    pub(super) tokens_per_s: Option<f64>,
    pub(super) error_latency_ms: Option<RawDist>,
    pub(super) connect_ms: Option<f64>,
    #[serde(default)]
    pub(super) errors: BTreeMap<ErrorClass, f64>,
    pub(super) rate_limit_retry_after_ms: Option<u64>,
    pub(super) capacity: Option<RawCapacity>,
    pub(super) requests_per_minute: Option<u32>,
    pub(super) context_window: Option<u32>,
    pub(super) input_usd_per_mtok: Option<f64>,
    pub(super) output_usd_per_mtok: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapacity {
    pub(super) concurrency: u32,
    #[serde(default)]
    pub(super) queue: u32,
    pub(super) overload: Option<ErrorClass>,
    pub(super) retry_after_ms: Option<u64>,
    pub(super) serve_abandoned: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvent {
    pub(super) kind: EventKindName,
    pub(super) provider: Option<String>,
    pub(super) providers: Option<Vec<String>>,
    pub(super) model: Option<String>,
    pub(super) start_s: f64,
    pub(super) duration_s: Option<f64>,
    pub(super) fraction: Option<f64>,
    pub(super) mode: Option<OutageMode>,
    pub(super) class: Option<ErrorClass>,
    pub(super) factor: Option<f64>,
    pub(super) retry_after_ms: Option<u64>,
    pub(super) period_s: Option<f64>,
    pub(super) down_s: Option<f64>,
    pub(super) ttft_ms: Option<f64>,
    #[serde(default)]
    pub(super) note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) name: String,
    pub(super) router: Option<RouterConfig>,
    pub(super) file: Option<String>,
    pub(super) table: Option<String>,
    pub(super) replicas: Option<u32>,
    pub(super) sync_ms: Option<u64>,
    pub(super) shared: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBaselines {
    pub(super) primary: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) sdk_retries: Option<u32>,
    pub(super) sdk_backoff_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub(super) config: String,
    pub(super) availability_min: Option<f64>,
    pub(super) availability_max: Option<f64>,
    pub(super) cost_per_1k_max: Option<f64>,
    pub(super) amplification_max: Option<f64>,
    pub(super) p99_ms_max: Option<f64>,
    pub(super) recover_ms_max: Option<f64>,
    #[serde(default)]
    pub(super) beats: Vec<String>,
    #[serde(default)]
    pub(super) cheaper_than: Vec<String>,
    #[serde(default)]
    pub(super) trade_off: std::collections::BTreeMap<String, String>,
    pub(super) from_s: Option<f64>,
    pub(super) until_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    pub(super) chart_points: Option<u32>,
    pub(super) resolution_ms: Option<u64>,
    pub(super) recovered_availability: Option<f64>,
    pub(super) recovered_hold_s: Option<f64>,
}
