//! Browser form uploads (POST Object): the signed policy document.

use hmac::Mac as _;

use super::{decode_hex_32, parse_credential, AuthError, Place, Scope, SigningKey, Timestamp, ALGORITHM, S3};

/// A browser form upload's claim (POST Object): its `x-amz-algorithm`,
/// `x-amz-credential`, `x-amz-date` and `x-amz-signature` fields. The
/// signature covers the base64 `policy` field as sent; the policy's
/// expiration and conditions are the caller's to check.
#[derive(Clone, Debug)]
pub struct PostClaim {
    access_key: String,
    scope: Scope,
    timestamp: Timestamp,
    signature: [u8; 32],
}

impl PostClaim {
    /// Read the form's fields (`None` where absent).
    pub fn parse(
        algorithm: Option<&[u8]>,
        credential: Option<&[u8]>,
        date: Option<&[u8]>,
        signature: Option<&[u8]>,
    ) -> Result<PostClaim, AuthError> {
        fn field<'f>(value: Option<&'f [u8]>, name: &'static str) -> Result<&'f [u8], AuthError> {
            value.map(<[u8]>::trim_ascii).ok_or(AuthError::PostFieldMissing(name))
        }
        let algorithm = field(algorithm, "x-amz-algorithm")?;
        let credential = field(credential, "x-amz-credential")?;
        let date = field(date, "x-amz-date")?;
        let signature = field(signature, "x-amz-signature")?;
        if algorithm != ALGORITHM.as_bytes() {
            return Err(AuthError::InvalidArgument(
                "x-amz-algorithm only supports \"AWS4-HMAC-SHA256\"",
            ));
        }
        let credential =
            std::str::from_utf8(credential).map_err(|_| AuthError::InvalidArgument("x-amz-credential is not text"))?;
        let (access_key, scope) = parse_credential(credential, &S3, Place::Query)?;
        let timestamp = Timestamp::parse_basic(date).ok_or(AuthError::InvalidArgument(
            "x-amz-date must be in the ISO8601 Long Format",
        ))?;
        if timestamp.day().as_bytes() != scope.date {
            return Err(AuthError::InvalidArgument(
                "x-amz-credential's date is not the day of x-amz-date",
            ));
        }
        let signature =
            decode_hex_32(signature).ok_or(AuthError::InvalidArgument("x-amz-signature is not 64 hex digits"))?;
        Ok(PostClaim {
            access_key,
            scope,
            timestamp,
            signature,
        })
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Check the signature of `policy_base64`, the `policy` field as sent.
    pub fn verify(&self, key: &SigningKey, policy_base64: &[u8]) -> Result<(), AuthError> {
        verify_policy_signature(key, policy_base64, &self.signature)
    }
}

/// Check a POST policy's signature, `signature_hex` being
/// `hex(HMAC(signing key, policy_base64))`.
pub fn verify_post_policy(key: &SigningKey, policy_base64: &[u8], signature_hex: &[u8]) -> Result<(), AuthError> {
    let provided = decode_hex_32(signature_hex).ok_or(AuthError::SignatureDoesNotMatch(None))?;
    verify_policy_signature(key, policy_base64, &provided)
}

fn verify_policy_signature(key: &SigningKey, policy_base64: &[u8], provided: &[u8; 32]) -> Result<(), AuthError> {
    let mut mac = key.mac();
    mac.update(policy_base64);
    // `verify_slice` compares in constant time.
    mac.verify_slice(provided)
        .map_err(|_| AuthError::SignatureDoesNotMatch(None))
}
