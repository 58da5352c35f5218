//! The signature chain of a streamed (`aws-chunked`) body.

use std::fmt;

use hmac::Mac as _;
use sha2::{Digest as _, Sha256};

use super::{
    decode_hex_32, hex, hex_32, push_trimmed, AuthError, HmacSha256, Scope, SigningKey, Timestamp, EMPTY_SHA256_HEX,
};

/// Verifies the signature chain of an `aws-chunked` body: each chunk's
/// signature covers its data and the signature before it, starting from the
/// request's (seed) signature, through the final empty chunk and, with
/// trailers, the trailer block.
///
/// Chunk string to sign: `AWS4-HMAC-SHA256-PAYLOAD`, the request time, the
/// scope, the previous signature, the SHA-256 of nothing and the chunk
/// data's SHA-256, one per line. Trailer string to sign:
/// `AWS4-HMAC-SHA256-TRAILER`, the time, the scope, the previous signature
/// and the SHA-256 of the canonical trailers ([`trailer_sha256`]).
#[derive(Clone)]
pub struct ChunkSigner {
    pub(super) key: SigningKey,
    pub(super) timestamp: Timestamp,
    pub(super) scope: Scope,
    pub(super) previous: [u8; 32],
    /// A signature failed: the chain is broken, every later call fails.
    pub(super) broken: bool,
}

impl ChunkSigner {
    /// Check the signature of the next chunk (the final empty one too),
    /// whose data hashes to `chunk_sha256`; `signature_hex` is its
    /// `chunk-signature` extension.
    pub fn chunk(&mut self, chunk_sha256: &[u8; 32], signature_hex: &[u8]) -> Result<(), AuthError> {
        let mut mac = self.begin(b"AWS4-HMAC-SHA256-PAYLOAD");
        mac.update(EMPTY_SHA256_HEX.as_bytes());
        mac.update(b"\n");
        mac.update(&hex_32(chunk_sha256));
        self.finish(mac, signature_hex)
    }

    /// Check the trailer's signature (`x-amz-trailer-signature`), the
    /// trailers hashing to `trailer_sha256`, after the final chunk.
    pub fn trailer(&mut self, trailer_sha256: &[u8; 32], signature_hex: &[u8]) -> Result<(), AuthError> {
        let mut mac = self.begin(b"AWS4-HMAC-SHA256-TRAILER");
        mac.update(&hex_32(trailer_sha256));
        self.finish(mac, signature_hex)
    }

    fn begin(&self, algorithm: &[u8]) -> HmacSha256 {
        let mut mac = self.key.mac();
        mac.update(algorithm);
        mac.update(b"\n");
        mac.update(&self.timestamp.basic);
        mac.update(b"\n");
        self.scope.update(&mut mac);
        mac.update(b"\n");
        mac.update(&hex_32(&self.previous));
        mac.update(b"\n");
        mac
    }

    fn finish(&mut self, mac: HmacSha256, signature_hex: &[u8]) -> Result<(), AuthError> {
        let provided = decode_hex_32(signature_hex);
        match provided {
            Some(provided) if !self.broken && mac.verify_slice(&provided).is_ok() => {
                self.previous = provided;
                Ok(())
            }
            _ => {
                self.broken = true;
                Err(AuthError::SignatureDoesNotMatch(None))
            }
        }
    }
}

impl fmt::Debug for ChunkSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ChunkSigner")
            .field("scope", &self.scope)
            .field("previous", &hex(&self.previous))
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of the canonical form of an aws-chunked body's trailers:
/// `name:value\n` each, names lower-case and sorted, values trimmed, less
/// the `x-amz-trailer-signature` that signs them.
pub fn trailer_sha256<'t>(trailers: impl IntoIterator<Item = (&'t str, &'t str)>) -> [u8; 32] {
    let mut lines: Vec<(String, &str)> = trailers
        .into_iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value))
        .filter(|(name, _)| name != "x-amz-trailer-signature")
        .collect();
    lines.sort_by(|(a, _), (b, _)| a.cmp(b));
    let mut canonical = Vec::new();
    for (name, value) in lines {
        canonical.extend_from_slice(name.as_bytes());
        canonical.push(b':');
        push_trimmed(value.as_bytes(), &mut canonical);
        canonical.push(b'\n');
    }
    Sha256::digest(&canonical).into()
}
