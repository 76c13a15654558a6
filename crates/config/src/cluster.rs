//! The `[cluster]` table: several gateway replicas sharing routing state through Redis.
//!
//! Without it a gateway keeps all state in memory and needs no Redis. With it, each replica
//! exchanges its routers' state (breaker openings and recoveries, cool-downs, per-minute usage,
//! spend) with the others every `sync_ms`, off the request path (see `docs/replicas.md`).

use serde::{Deserialize, Serialize};
use std::time::Duration;
use stilts_core::ConfigError;

/// The `[cluster]` table as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); a user name may be given, a password may not.
    pub redis_url: String,
    /// Environment variable holding the Redis password (never logged). Default: none.
    pub password_env: Option<String>,
    /// How stale shared state may be: replicas exchange it at most this often. Default 100.
    pub sync_ms: Option<u64>,
    /// Prefix of every Redis key stilts writes. Default `stilts:`.
    pub key_prefix: Option<String>,
    /// This replica's name in Redis. Default: host name, process id and a random suffix.
    pub replica_id: Option<String>,
}

/// A validated `[cluster]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// The Redis URL, with no password in it.
    pub redis_url: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// The exchange period.
    pub sync: Duration,
    /// Key prefix.
    pub key_prefix: String,
    /// This replica's name, when configured.
    pub replica_id: Option<String>,
}

/// Shortest `sync_ms`: below it the exchange would cost more than the requests it steers.
pub const MIN_SYNC_MS: u64 = 10;
/// Longest `sync_ms`.
pub const MAX_SYNC_MS: u64 = 60_000;
/// Default `sync_ms`.
pub const DEFAULT_SYNC_MS: u64 = 100;

impl ClusterConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<ClusterSettings, ConfigError> {
        check_redis_url(&self.redis_url)
            .map_err(|(problem, fix)| ConfigError::new("cluster.redis_url", problem, fix))?;
        if let Some(var) = &self.password_env {
            if var.trim().is_empty() {
                return Err(ConfigError::new(
                    "cluster.password_env",
                    "is empty",
                    "name an environment variable such as STILTS_REDIS_PASSWORD, or remove it",
                ));
            }
        }
        let sync_ms = self.sync_ms.unwrap_or(DEFAULT_SYNC_MS);
        if !(MIN_SYNC_MS..=MAX_SYNC_MS).contains(&sync_ms) {
            return Err(ConfigError::new(
                "cluster.sync_ms",
                format!("{sync_ms} is outside {MIN_SYNC_MS} to {MAX_SYNC_MS}"),
                format!(
                    "use e.g. {DEFAULT_SYNC_MS} (a sibling's news reaches a replica within two \
                     periods and a Redis round trip)"
                ),
            ));
        }
        let key_prefix = self.key_prefix.clone().unwrap_or_else(|| "stilts:".into());
        if key_prefix.is_empty()
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(
                "cluster.key_prefix",
                format!("{key_prefix:?} is empty or has spaces or control characters"),
                "use letters, digits and punctuation, e.g. \"stilts:prod:\"",
            ));
        }
        if let Some(id) = &self.replica_id {
            if id.is_empty()
                || id.len() > 128
                || id.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    "cluster.replica_id",
                    format!("{id:?} is empty, longer than 128 bytes, or has spaces"),
                    "use a short name such as the pod name, or remove it for a generated one",
                ));
            }
        }
        Ok(ClusterSettings {
            redis_url: self.redis_url.clone(),
            password_env: self.password_env.clone(),
            sync: Duration::from_millis(sync_ms),
            key_prefix,
            replica_id: self.replica_id.clone(),
        })
    }
}

/// A Redis URL stilts can use: `redis://` or `rediss://`, a host, a port if any, a database
/// number if any, and no password. On error, the problem and its fix.
fn check_redis_url(text: &str) -> Result<(), (String, String)> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err((
            format!("{text:?} is not a Redis URL"),
            "write it as \"redis://127.0.0.1:6379\" (or \"rediss://\" for TLS)".into(),
        ));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err((
            format!("its scheme is {scheme:?}"),
            "use redis:// (plain) or rediss:// (TLS)".into(),
        ));
    }
    if rest.contains(['?', '#']) {
        return Err((
            "it has a query or fragment (? or #), which stilts does not read".into(),
            "remove it: the URL is redis[s]://[user@]host[:port][/db]".into(),
        ));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = match authority.rsplit_once('@') {
        Some((user, host)) => {
            if user.contains(':') {
                return Err((
                    "it carries a password (user:password@), which would end up in logs".into(),
                    "remove it from the URL and name an environment variable holding it in cluster.password_env".into(),
                ));
            }
            host
        }
        None => authority,
    };
    // An IPv6 address is bracketed: its colons are not a port separator.
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, rest)) => match rest.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => ("", None),
            },
            None => ("", None),
        },
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err((
            "it has no host".into(),
            "write it as \"redis://HOST:6379\"".into(),
        ));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err((
                format!("its port {port:?} is not a number from 1 to 65535"),
                "use Redis's port, usually 6379".into(),
            ));
        }
    }
    if !path.is_empty() && path.parse::<u32>().is_err() {
        return Err((
            format!("its path {path:?} is not a database number"),
            "end the URL with a database number such as /0, or nothing".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> ClusterConfig {
        ClusterConfig {
            redis_url: url.into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn defaults() {
        let s = with_url("redis://127.0.0.1:6379").validate().unwrap();
        assert_eq!(s.sync, Duration::from_millis(100));
        assert_eq!(s.key_prefix, "stilts:");
        assert_eq!(s.password_env, None);
    }

    #[test]
    fn good_urls_pass() {
        for url in [
            "redis://localhost",
            "redis://127.0.0.1:6379/2",
            "rediss://cache.example:6380",
            "redis://default@10.0.0.1:6379",
            "redis://[::1]:6379",
            "redis://[::1]",
        ] {
            assert!(with_url(url).validate().is_ok(), "{url}");
        }
    }

    #[test]
    fn bad_urls_are_named_with_a_fix() {
        for (url, says) in [
            ("", "not a Redis URL"),
            ("127.0.0.1:6379", "not a Redis URL"),
            ("http://127.0.0.1:6379", "scheme"),
            ("redis://user:hunter2@host:6379", "password"),
            ("redis://:6379", "no host"),
            ("redis://host:0", "port"),
            ("redis://host:port", "port"),
            ("redis://host:6379/x", "database number"),
            ("rediss://host#insecure", "fragment"),
            ("redis://host?db=1", "query"),
            ("redis://[::1", "no host"),
        ] {
            let e = with_url(url).validate().unwrap_err();
            assert_eq!(e.path, "cluster.redis_url", "{url}");
            assert!(e.to_string().contains(says), "{url}: {e}");
            assert!(
                !e.to_string().contains("hunter2"),
                "the password leaked: {e}"
            );
        }
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = with_url("redis://h");
        c.sync_ms = Some(5);
        assert_eq!(c.validate().unwrap_err().path, "cluster.sync_ms");
        let mut c = with_url("redis://h");
        c.key_prefix = Some("a b".into());
        assert_eq!(c.validate().unwrap_err().path, "cluster.key_prefix");
        let mut c = with_url("redis://h");
        c.password_env = Some(" ".into());
        assert_eq!(c.validate().unwrap_err().path, "cluster.password_env");
        let mut c = with_url("redis://h");
        c.replica_id = Some(String::new());
        assert_eq!(c.validate().unwrap_err().path, "cluster.replica_id");
    }
}
