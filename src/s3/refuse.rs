//! What mkv refuses rather than ignores (sans-IO).
//!
//! A request that asks for a feature mkv does not have, and whose silent
//! omission would leave the client believing something false about its
//! data's safety, secrecy, retention or version, is refused before
//! anything is read or written: encryption, object lock, tags, ACL grants,
//! storage classes, appends, version ids other than `null`, and every
//! bucket or object sub-resource not implemented. README.md's S3 section
//! lists each decision. Headers that change nothing a client relies on
//! (`x-amz-request-payer`, `x-amz-expected-bucket-owner`, SDK telemetry)
//! are accepted.

use super::request::S3Request;
use super::S3Error;

/// Sub-resources of a bucket or object that mkv does not implement.
/// Answered 501 for every method: reading one would answer for a
/// configuration mkv does not have, writing one would be dropped.
pub const UNSUPPORTED_SUB_RESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metadataConfiguration",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "select-type",
    "session",
    "tagging",
    "torrent",
    "usage",
    "website",
];

/// The only version every object has: mkv keeps no versions, and S3
/// calls the version of an object in an unversioned bucket `null`.
pub const NULL_VERSION: &str = "null";

/// Why `request` must be refused before it touches anything, if it must.
pub fn check(request: &S3Request) -> Result<(), S3Error> {
    if let Some(name) = UNSUPPORTED_SUB_RESOURCES.iter().find(|name| request.has(name)) {
        return Err(not_implemented(&format!("the ?{name} sub-resource is not implemented")));
    }
    let mut versions = request.query.iter().filter(|(name, _)| name == "versionId");
    if let Some((_, version)) = versions.next() {
        if versions.next().is_some() {
            return Err(S3Error::invalid_argument("versionId is given more than once"));
        }
        check_version(version)?;
    }
    for (name, value) in &request.headers.refusable {
        if let Some(reason) = header_refusal(name, value) {
            return Err(not_implemented(&reason));
        }
    }
    Ok(())
}

/// A version id: only `null` exists. Any other is refused with the error
/// AWS gives for a version id it does not know, so that a client removing
/// an old version never removes the current one.
pub fn check_version(version: &[u8]) -> Result<(), S3Error> {
    if version == NULL_VERSION.as_bytes() {
        return Ok(());
    }
    Err(S3Error::invalid_argument("Invalid version id specified"))
}

pub fn not_implemented(reason: &str) -> S3Error {
    S3Error::new(
        501,
        "NotImplemented",
        format!("A header or query you provided implies functionality that is not implemented: {reason}."),
    )
}

/// Whether the header `name` (lower-case) with `value` asks for something
/// mkv does not do, and why. An SSE-C key sent with a read is refused
/// too: the client believes the object is encrypted.
pub fn header_refusal(name: &str, value: &str) -> Option<String> {
    let value_lower = value.to_ascii_lowercase();
    let refused = match name {
        // Encryption of any kind (SSE-S3, SSE-KMS, SSE-C, and SSE-C of a
        // copy's source): the bytes would be stored in plaintext.
        _ if name.starts_with("x-amz-server-side-encryption")
            || name.starts_with("x-amz-copy-source-server-side-encryption") =>
        {
            true
        }
        // Object lock: no retention, no legal hold. Turning one off is no
        // claim and is accepted.
        "x-amz-bucket-object-lock-enabled" => value_lower != "false",
        "x-amz-object-lock-legal-hold" => value_lower != "off",
        "x-amz-object-lock-mode" | "x-amz-object-lock-retain-until-date" => true,
        // Tags are not kept; an empty tag set is no claim.
        "x-amz-tagging" => !value.is_empty(),
        "x-amz-tagging-directive" => value_lower == "replace",
        // No ACLs: the one canned ACL that grants nothing beyond the
        // owner's is accepted (SDKs and rclone send it by default).
        "x-amz-acl" => !matches!(value_lower.as_str(), "private" | "bucket-owner-full-control"),
        _ if name.starts_with("x-amz-grant-") => true,
        // One storage class, with the volumes' redundancy.
        "x-amz-storage-class" => value_lower != "standard",
        // No appends: an append ignored would replace the whole value.
        "x-amz-write-offset-bytes" => true,
        "x-amz-website-redirect-location" => true,
        // MFA delete is a versioning feature.
        "x-amz-mfa" => true,
        // Conditions on a delete by size or time: not checked, so refused
        // rather than deleting whatever is there.
        "x-amz-if-match-size" | "x-amz-if-match-last-modified-time" | "x-amz-if-match-initiated-time" => true,
        _ => false,
    };
    refused.then(|| format!("header {name}: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_claims_about_safety_secrecy_retention() {
        let refused = |name: &str, value: &str| header_refusal(name, value).is_some();
        assert!(refused("x-amz-server-side-encryption", "AES256"));
        assert!(refused("x-amz-server-side-encryption-customer-algorithm", "AES256"));
        assert!(refused("x-amz-server-side-encryption-aws-kms-key-id", "k"));
        assert!(refused("x-amz-copy-source-server-side-encryption-customer-key", "k"));
        assert!(refused("x-amz-bucket-object-lock-enabled", "true"));
        assert!(!refused("x-amz-bucket-object-lock-enabled", "False"));
        assert!(refused("x-amz-object-lock-mode", "GOVERNANCE"));
        assert!(refused("x-amz-object-lock-legal-hold", "ON"));
        assert!(!refused("x-amz-object-lock-legal-hold", "OFF"));
        assert!(refused("x-amz-tagging", "a=b"));
        assert!(!refused("x-amz-tagging", ""));
        assert!(refused("x-amz-acl", "public-read"));
        assert!(!refused("x-amz-acl", "private"));
        assert!(refused("x-amz-grant-read", "uri=x"));
        assert!(refused("x-amz-storage-class", "GLACIER"));
        assert!(!refused("x-amz-storage-class", "STANDARD"));
        assert!(refused("x-amz-write-offset-bytes", "0"));
        assert!(!refused("x-amz-request-payer", "requester"));
    }

    #[test]
    fn only_the_null_version_exists() {
        assert!(check_version(b"null").is_ok());
        assert_eq!(check_version(b"xyz").unwrap_err().status, 400);
        assert_eq!(check_version(b"").unwrap_err().status, 400);
    }
}
