//! The agent manifest (spec §2): which capabilities an agent asks for, their
//! options, its memory limit and its migration policy. Parsing is strict: a
//! manifest that fails to parse is an error naming the field, never an empty
//! grant; unknown capability names and unknown fields are rejected. Pure
//! data: no disk, no clock.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Largest manifest accepted: manifests travel in migration packages.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most entries in an allow-list (hosts, recipients): each one is checked on
/// every call, and a longer list is a sign of a wildcard in disguise.
pub const MAX_ALLOW_LIST: usize = 64;
/// Longest host or recipient name accepted in an allow-list.
pub const MAX_NAME_LEN: usize = 253;
/// Default http timeout (spec §2).
pub const DEFAULT_HTTP_TIMEOUT_MS: u64 = 10_000;
/// Default and largest http response handed to a guest (spec §2: 1 MiB).
pub const DEFAULT_HTTP_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Longest http timeout a manifest may ask for.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 60_000;

/// A capability name from spec §2. Each gates a set of `igor.*` imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Clock,
    Rand,
    Log,
    Wallet,
    Pricing,
    Http,
    X402,
    Kv,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Clock,
        Capability::Rand,
        Capability::Log,
        Capability::Wallet,
        Capability::Pricing,
        Capability::Http,
        Capability::X402,
        Capability::Kv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Clock => "clock",
            Capability::Rand => "rand",
            Capability::Log => "log",
            Capability::Wallet => "wallet",
            Capability::Pricing => "pricing",
            Capability::Http => "http",
            Capability::X402 => "x402",
            Capability::Kv => "kv",
        }
    }

    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Bit in a [`CapabilitySet`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities as a bit mask (cheap to copy and to use as a cache key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapabilitySet(pub u8);

impl CapabilitySet {
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn insert(&mut self, c: Capability) {
        self.0 |= c.bit();
    }
    pub fn all() -> Self {
        CapabilitySet(0xff)
    }
    pub fn names(self) -> Vec<&'static str> {
        Capability::ALL.into_iter().filter(|c| self.contains(*c)).map(Capability::name).collect()
    }
}

/// Options of the `http` capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Hosts (lower case, optionally `host:port`) a request or any redirect may reach.
    pub allowed_hosts: Vec<String>,
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
}

impl HttpPolicy {
    /// Whether `url` may be fetched: http(s) scheme, no user info, and its
    /// host (or host:port) in `allowed_hosts`. Used for the first request and
    /// re-checked for every redirect target.
    pub fn allows(&self, url: &str) -> bool {
        match url_host(url) {
            Some((host, port)) => self
                .allowed_hosts
                .iter()
                .any(|h| *h == host || port.as_ref().is_some_and(|p| *h == format!("{host}:{p}"))),
            None => false,
        }
    }
}

/// The lower-cased host and the explicit port of an absolute http(s) URL;
/// `None` for anything else (other schemes, user info, empty host).
pub fn url_host(url: &str) -> Option<(String, Option<String>)> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p.to_string())),
        _ => (authority, None),
    };
    if host.is_empty() || port.as_ref().is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Options of the `x402` capability (`wallet_pay`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentPolicy {
    pub allowed_recipients: Vec<String>,
    /// Largest single payment, microcents; 0 = no cap.
    pub max_payment_microcents: i64,
}

/// Options of the `kv` capability: the manifest may only lower the node's limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvOptions {
    pub max_key_bytes: Option<u32>,
    pub max_value_bytes: Option<u32>,
    pub quota_bytes: Option<u64>,
}

/// `migration_policy` (spec §2): the one parser is [`Manifest::parse`]
/// (strict: unknown fields, wrong types and negative prices are errors);
/// `migration::migration_policy` reads it from manifest bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationPolicy {
    /// Absent: migration is allowed.
    pub enabled: bool,
    /// Highest price per second a target may charge; `None` or 0 = any.
    pub max_price_per_second: Option<i64>,
}

impl Default for MigrationPolicy {
    /// No policy in the manifest: migration allowed, at any price.
    fn default() -> Self {
        MigrationPolicy { enabled: true, max_price_per_second: None }
    }
}

/// A parsed, validated manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Declared capabilities and their versions (>= 1).
    pub capabilities: BTreeMap<Capability, u32>,
    pub http: Option<HttpPolicy>,
    pub x402: Option<PaymentPolicy>,
    pub kv: Option<KvOptions>,
    pub max_memory_bytes: Option<u64>,
    pub migration: MigrationPolicy,
}

/// A manifest that cannot be used: the field (JSON path) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes (limit {MAX_MANIFEST_BYTES})")]
    TooLarge { len: usize },
    #[error("manifest is not valid JSON: {0}")]
    Syntax(String),
    #[error("manifest field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn field_err(field: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.to_string(), reason: reason.into() }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ManifestError> {
    v.as_object().ok_or_else(|| field_err(field, format!("expected an object, found {}", kind(v))))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reject keys of `obj` not in `known` (a typo must not silently drop a limit).
fn only_known(obj: &Map<String, Value>, field: &str, known: &[&str]) -> Result<(), ManifestError> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            let path = if field.is_empty() { key.clone() } else { format!("{field}.{key}") };
            return Err(field_err(&path, format!("unknown field (expected one of: {})", known.join(", "))));
        }
    }
    Ok(())
}

fn uint(v: &Value, field: &str) -> Result<u64, ManifestError> {
    v.as_u64().ok_or_else(|| field_err(field, format!("expected an unsigned integer, found {v}")))
}

fn int(v: &Value, field: &str) -> Result<i64, ManifestError> {
    v.as_i64().ok_or_else(|| field_err(field, format!("expected an integer, found {v}")))
}

fn names(v: &Value, field: &str) -> Result<Vec<String>, ManifestError> {
    let arr =
        v.as_array().ok_or_else(|| field_err(field, format!("expected an array of strings, found {}", kind(v))))?;
    if arr.len() > MAX_ALLOW_LIST {
        return Err(field_err(field, format!("{} entries (limit {MAX_ALLOW_LIST})", arr.len())));
    }
    let mut out = Vec::with_capacity(arr.len());
    for (i, item) in arr.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let s = item.as_str().ok_or_else(|| field_err(&path, format!("expected a string, found {}", kind(item))))?;
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(field_err(&path, format!("must be 1..={MAX_NAME_LEN} bytes")));
        }
        out.push(s.to_ascii_lowercase());
    }
    Ok(out)
}

impl Manifest {
    /// A manifest granting nothing (deny by default). Used when an agent
    /// ships no manifest at all; a manifest that fails to parse is an error.
    pub fn none() -> Self {
        Manifest::default()
    }

    /// Parse manifest bytes. Empty input is an error: callers that have no
    /// manifest use [`Manifest::none`] explicitly.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { len: bytes.len() });
        }
        let root: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let root = object(&root, "(root)")?;
        only_known(root, "", &["capabilities", "resource_limits", "migration_policy"])?;
        let mut m = Manifest::default();
        if let Some(caps) = root.get("capabilities") {
            m.parse_capabilities(object(caps, "capabilities")?)?;
        }
        if let Some(limits) = root.get("resource_limits") {
            let obj = object(limits, "resource_limits")?;
            only_known(obj, "resource_limits", &["max_memory_bytes"])?;
            if let Some(v) = obj.get("max_memory_bytes") {
                let field = "resource_limits.max_memory_bytes";
                let bytes = uint(v, field)?;
                if bytes == 0 {
                    return Err(field_err(field, "must be positive"));
                }
                m.max_memory_bytes = Some(bytes);
            }
        }
        if let Some(policy) = root.get("migration_policy") {
            let obj = object(policy, "migration_policy")?;
            only_known(obj, "migration_policy", &["enabled", "max_price_per_second"])?;
            if let Some(v) = obj.get("enabled") {
                m.migration.enabled = v
                    .as_bool()
                    .ok_or_else(|| field_err("migration_policy.enabled", format!("expected a boolean, found {v}")))?;
            }
            if let Some(v) = obj.get("max_price_per_second") {
                let field = "migration_policy.max_price_per_second";
                let p = int(v, field)?;
                if p < 0 {
                    return Err(field_err(field, "must not be negative"));
                }
                m.migration.max_price_per_second = Some(p);
            }
        }
        Ok(m)
    }

    fn parse_capabilities(&mut self, caps: &Map<String, Value>) -> Result<(), ManifestError> {
        for (name, spec) in caps {
            let field = format!("capabilities.{name}");
            let cap = Capability::from_name(name).ok_or_else(|| {
                let known: Vec<_> = Capability::ALL.iter().map(|c| c.name()).collect();
                field_err(&field, format!("unknown capability (known: {})", known.join(", ")))
            })?;
            let obj = object(spec, &field)?;
            only_known(obj, &field, &["version", "options"])?;
            let vfield = format!("{field}.version");
            let version = uint(obj.get("version").ok_or_else(|| field_err(&vfield, "missing"))?, &vfield)?;
            if version == 0 || version > u64::from(u32::MAX) {
                return Err(field_err(&vfield, format!("must be >= 1, found {version}")));
            }
            let empty = Value::Object(Map::new());
            let ofield = format!("{field}.options");
            let options = object(obj.get("options").unwrap_or(&empty), &ofield)?;
            match cap {
                Capability::Http => self.http = Some(parse_http(options, &ofield)?),
                Capability::X402 => self.x402 = Some(parse_x402(options, &ofield)?),
                Capability::Kv => self.kv = Some(parse_kv(options, &ofield)?),
                _ => only_known(options, &ofield, &[])?,
            }
            self.capabilities.insert(cap, version as u32);
        }
        Ok(())
    }

    pub fn capability_set(&self) -> CapabilitySet {
        let mut set = CapabilitySet::default();
        for c in self.capabilities.keys() {
            set.insert(*c);
        }
        set
    }

    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains_key(&c)
    }
}

fn parse_http(options: &Map<String, Value>, field: &str) -> Result<HttpPolicy, ManifestError> {
    only_known(options, field, &["allowed_hosts", "timeout_ms", "max_response_bytes"])?;
    let mut p = HttpPolicy {
        allowed_hosts: Vec::new(),
        timeout_ms: DEFAULT_HTTP_TIMEOUT_MS,
        max_response_bytes: DEFAULT_HTTP_MAX_RESPONSE_BYTES,
    };
    if let Some(v) = options.get("allowed_hosts") {
        p.allowed_hosts = names(v, &format!("{field}.allowed_hosts"))?;
    }
    if let Some(v) = options.get("timeout_ms") {
        let f = format!("{field}.timeout_ms");
        p.timeout_ms = uint(v, &f)?;
        if p.timeout_ms == 0 || p.timeout_ms > MAX_HTTP_TIMEOUT_MS {
            return Err(field_err(&f, format!("must be 1..={MAX_HTTP_TIMEOUT_MS}")));
        }
    }
    if let Some(v) = options.get("max_response_bytes") {
        let f = format!("{field}.max_response_bytes");
        p.max_response_bytes = uint(v, &f)?;
        if p.max_response_bytes > DEFAULT_HTTP_MAX_RESPONSE_BYTES {
            return Err(field_err(&f, format!("must be <= {DEFAULT_HTTP_MAX_RESPONSE_BYTES}")));
        }
    }
    Ok(p)
}

fn parse_x402(options: &Map<String, Value>, field: &str) -> Result<PaymentPolicy, ManifestError> {
    only_known(options, field, &["allowed_recipients", "max_payment_microcents"])?;
    let mut p = PaymentPolicy { allowed_recipients: Vec::new(), max_payment_microcents: 0 };
    if let Some(v) = options.get("allowed_recipients") {
        p.allowed_recipients = names(v, &format!("{field}.allowed_recipients"))?;
    }
    if let Some(v) = options.get("max_payment_microcents") {
        let f = format!("{field}.max_payment_microcents");
        p.max_payment_microcents = int(v, &f)?;
        if p.max_payment_microcents < 0 {
            return Err(field_err(&f, "must not be negative"));
        }
    }
    Ok(p)
}

fn parse_kv(options: &Map<String, Value>, field: &str) -> Result<KvOptions, ManifestError> {
    only_known(options, field, &["max_key_bytes", "max_value_bytes", "quota_bytes"])?;
    let small = |key: &str| -> Result<Option<u32>, ManifestError> {
        let f = format!("{field}.{key}");
        options
            .get(key)
            .map(|v| uint(v, &f).and_then(|n| u32::try_from(n).map_err(|_| field_err(&f, "too large"))))
            .transpose()
    };
    Ok(KvOptions {
        max_key_bytes: small("max_key_bytes")?,
        max_value_bytes: small("max_value_bytes")?,
        quota_bytes: options.get("quota_bytes").map(|v| uint(v, &format!("{field}.quota_bytes"))).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(
            br#"{"capabilities": {"clock": {"version": 1}, "http": {"version": 1, "options":
            {"allowed_hosts": ["API.example.com"], "timeout_ms": 500}},
            "x402": {"version": 2, "options": {"allowed_recipients": ["alice"], "max_payment_microcents": 100}}},
            "resource_limits": {"max_memory_bytes": 1048576},
            "migration_policy": {"enabled": true, "max_price_per_second": 5}}"#,
        )
        .unwrap();
        assert!(m.has(Capability::Clock) && m.has(Capability::Http) && !m.has(Capability::Kv));
        let http = m.http.as_ref().unwrap();
        assert_eq!(http.allowed_hosts, vec!["api.example.com"]);
        assert_eq!((http.timeout_ms, http.max_response_bytes), (500, DEFAULT_HTTP_MAX_RESPONSE_BYTES));
        assert!(http.allows("https://api.example.com/v1?q=1"));
        assert!(!http.allows("https://api.example.com.evil.net/"));
        assert!(!http.allows("https://user@api.example.com/"));
        assert!(!http.allows("ftp://api.example.com/"));
        assert_eq!(m.x402.unwrap().max_payment_microcents, 100);
        assert_eq!(m.max_memory_bytes, Some(1 << 20));
        assert_eq!(m.migration.max_price_per_second, Some(5));
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"capabilities": {"teleport": {"version": 1}}}"#, "capabilities.teleport"),
            (br#"{"capabilities": {"clock": {}}}"#, "capabilities.clock.version"),
            (br#"{"capabilities": {"clock": {"version": 0}}}"#, "capabilities.clock.version"),
            (
                br#"{"capabilities": {"http": {"version": 1, "options": {"timeout_ms": "x"}}}}"#,
                "capabilities.http.options.timeout_ms",
            ),
            (
                br#"{"capabilities": {"http": {"version": 1, "options": {"allowed_host": []}}}}"#,
                "capabilities.http.options.allowed_host",
            ),
            (br#"{"resource_limits": {"max_memory_bytes": -1}}"#, "resource_limits.max_memory_bytes"),
            (br#"{"capabilitys": {}}"#, "capabilitys"),
            (
                br#"{"capabilities": {"x402": {"version": 1, "options": {"allowed_recipients": [3]}}}}"#,
                "allowed_recipients[0]",
            ),
        ];
        for (bytes, field) in cases {
            let err = Manifest::parse(bytes).unwrap_err().to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn parse_failure_is_an_error_never_empty() {
        assert!(matches!(Manifest::parse(b""), Err(ManifestError::Syntax(_))));
        assert!(matches!(Manifest::parse(b"{"), Err(ManifestError::Syntax(_))));
        assert!(matches!(Manifest::parse(b"[]"), Err(ManifestError::Field { .. })));
        assert_eq!(Manifest::parse(b"{}").unwrap(), Manifest::none());
    }
}
