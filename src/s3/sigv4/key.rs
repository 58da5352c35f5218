//! Credential scopes and the signing keys derived for them, cached.

use std::fmt;

use hmac::{KeyInit as _, Mac as _};

use super::{HmacSha256, SIGNING_KEYS_MAX};

/// What a signature is scoped to: `20130524/us-east-1/s3/aws4_request`.
#[derive(Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`, ASCII digits.
    pub(super) date: [u8; 8],
    pub(super) region: String,
    pub(super) service: &'static str,
}

impl Scope {
    pub fn date(&self) -> &str {
        std::str::from_utf8(&self.date).unwrap_or_default()
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn service(&self) -> &str {
        self.service
    }

    pub(super) fn update(&self, mac: &mut HmacSha256) {
        mac.update(&self.date);
        mac.update(b"/");
        mac.update(self.region.as_bytes());
        mac.update(b"/");
        mac.update(self.service.as_bytes());
        mac.update(b"/aws4_request");
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}/{}/aws4_request",
            self.date(),
            self.region,
            self.service
        )
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, formatter)
    }
}

/// The key a secret and a scope derive: `HMAC("AWS4" + secret, date)`, then
/// the region, the service and `aws4_request` in turn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SigningKey(pub(super) [u8; 32]);

impl SigningKey {
    pub fn derive(secret: &str, scope: &Scope) -> SigningKey {
        // HMAC takes its key in one piece, "AWS4" + secret: a deliberate
        // allocation, once per key and day with a `SigningKeyCache`.
        let mut prefixed = Vec::with_capacity(4 + secret.len());
        prefixed.extend_from_slice(b"AWS4");
        prefixed.extend_from_slice(secret.as_bytes());
        let date_key = hmac(&prefixed, &scope.date);
        let region_key = hmac(&date_key, scope.region.as_bytes());
        let service_key = hmac(&region_key, scope.service.as_bytes());
        SigningKey(hmac(&service_key, b"aws4_request"))
    }

    pub(super) fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningKey(..)")
    }
}

pub(super) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Derived signing keys by access key, day and region, so a request costs
/// the four-HMAC derivation once per key per day rather than every time.
/// One per reactor (it is not shared).
#[derive(Default)]
pub struct SigningKeyCache {
    /// Keyed by `access_key \0 date \0 region`.
    entries: hashbrown::HashMap<String, CachedKey>,
    /// The look-up key, built here so a hit allocates nothing.
    probe: String,
}

struct CachedKey {
    /// The secret the key was derived from: a key whose secret changed (a
    /// reloaded credentials file) must not verify with the old one.
    secret: Box<str>,
    key: SigningKey,
}

impl SigningKeyCache {
    pub fn new() -> SigningKeyCache {
        SigningKeyCache::default()
    }

    /// The signing key of `access_key` (whose secret is `secret`) for `scope`.
    pub fn signing_key(&mut self, access_key: &str, secret: &str, scope: &Scope) -> SigningKey {
        self.probe.clear();
        self.probe.push_str(access_key);
        self.probe.push('\0');
        self.probe.push_str(scope.date());
        self.probe.push('\0');
        self.probe.push_str(&scope.region);
        if let Some(cached) = self.entries.get(self.probe.as_str()) {
            if *cached.secret == *secret {
                return cached.key;
            }
        }
        let key = SigningKey::derive(secret, scope);
        if self.entries.len() >= SIGNING_KEYS_MAX {
            // Past the bound the cache starts again rather than tracking
            // recency: a full cache means many keys in use at once, and each
            // costs one derivation to come back.
            self.entries.clear();
        }
        self.entries.insert(
            self.probe.clone(),
            CachedKey {
                secret: secret.into(),
                key,
            },
        );
        key
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SigningKeyCache")
            .field("entries", &self.entries.len())
            .finish()
    }
}
