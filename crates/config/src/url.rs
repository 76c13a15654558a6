//! Upstream base URLs: what the gateway can call (http or https, a host, a numeric port, no
//! credentials, no zone id), checked at config load and again on every URL a plugin builds.

/// Parses an upstream URL: absolute, `http` or `https`, with a host, a valid port if any, and no
/// credentials (they belong in the deployment's key or headers, where they are kept out of logs).
pub fn parse_upstream_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("it is not a valid URL ({e})"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(if scheme.is_empty() {
            "it has no scheme and host; write it as \"https://host/path\"".to_owned()
        } else {
            format!("its scheme is {scheme:?}; only http and https are supported")
        });
    }
    let Some(authority) = uri.authority() else {
        return Err("it has no host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err("it carries credentials (user:password@); give the key with api_key_env, or a header, instead".to_owned());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err("it has no host".to_owned());
    }
    if host.contains('%') {
        return Err(format!(
            "its host {host} has a zone id (%), which is not supported; use an address or name without one"
        ));
    }
    // `http::Uri` accepts any text after the host's last ':'; only digits (or nothing: the
    // scheme's port) name a port, and port 0 cannot be connected to.
    let after_host = authority
        .as_str()
        .rsplit_once(']')
        .map_or(authority.as_str(), |(_, rest)| rest);
    if let Some((_, port)) = after_host.rsplit_once(':') {
        let valid = port.is_empty()
            || (port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok_and(|p| p != 0));
        if !valid {
            return Err(format!(
                "its port in \"{}\" is not a number from 1 to 65535",
                authority.as_str()
            ));
        }
    }
    Ok(uri)
}
