//! S3 access control: who sent a request, and whether that identity may
//! run its operation.
//!
//! Off unless configured (`--s3-auth FILE`, or `MKV_S3_ACCESS_KEY` and
//! `MKV_S3_SECRET_KEY`; `main` installs it, the master's SIGHUP reloads
//! it): until then every request is `Access::Open`, as the
//! original master's S3 was. On, `check` runs for every S3 request, on
//! the S3 port and the main port alike, after the request is parsed and
//! before its operation (`super::dispatch`) touches anything:
//!
//! 1. the signature (`sigv4`): the `Authorization` header or a presigned
//!    URL, verified against the claimed key's secret; none is anonymous;
//! 2. the grant: the operation's `Need` (`operation.rs`, the one reading
//!    of a request that the dispatch also uses) against the key's
//!    permissions on the bucket (`identity`), and for a copy `Read` on the
//!    source's bucket. Anonymous requests may only read objects of a
//!    `public_read` bucket and send CORS preflights.
//!
//! The invariant: no side effect before both checks pass. What the
//! signature does not cover yet when the operation starts, the body, is
//! checked as it is read, before its last piece reaches a volume (the
//! value never becomes live otherwise): a signed SHA-256 (`body.rs`,
//! `object::read_small_body`), or each chunk's signature in a chain
//! (`chunked.rs` with `sigv4::ChunkSigner`). POST Object carries its
//! signature in the form, so `check_post` runs once the fields before its
//! file are read, before any of the file is.
//!
//! Derived signing keys are cached per reactor thread (one HMAC chain per
//! key and day), so a signed request costs one HMAC of its canonical form,
//! plus the SHA-256 of a signed body.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use base64::Engine as _;

use crate::app::App;

use super::identity::{Identities, Key, ENV_ACCESS_KEY, ENV_SECRET_KEY};
use super::operation::{copy_source_bucket, Need, Operation, Permission};
use super::post::Fields;
use super::request::S3Request;
use super::sigv4::{self, AuthError, PostClaim, RequestView, SigningKey, SigningKeyCache, Timestamp, Verified};
use super::S3Error;

/// The identities S3 requests are checked against, reloadable.
pub struct Auth {
    file: Option<PathBuf>,
    /// The environment's key, (access, secret).
    environment: Option<(String, String)>,
    /// None: S3 is open.
    current: RwLock<Option<Arc<Identities>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Auth")
            .field("file", &self.file)
            .field("environment", &self.environment.as_ref().map(|(access, _)| access))
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The identities of `file` and of the environment's key, if either
    /// is given; an error says what is wrong with them.
    pub fn load(file: Option<PathBuf>, environment: Option<(String, String)>) -> Result<Auth, String> {
        let auth = Auth {
            file,
            environment,
            current: RwLock::new(None),
        };
        let identities = auth.read()?;
        *auth.current.write().expect("not poisoned") = identities.map(Arc::new);
        Ok(auth)
    }

    /// The environment's key, from `MKV_S3_ACCESS_KEY` and
    /// `MKV_S3_SECRET_KEY`; an error when only one is set.
    pub fn environment_key() -> Result<Option<(String, String)>, String> {
        let access = std::env::var(ENV_ACCESS_KEY).ok().filter(|value| !value.is_empty());
        let secret = std::env::var(ENV_SECRET_KEY).ok().filter(|value| !value.is_empty());
        match (access, secret) {
            (Some(access), Some(secret)) => Ok(Some((access, secret))),
            (None, None) => Ok(None),
            _ => Err(format!(
                "{ENV_ACCESS_KEY} and {ENV_SECRET_KEY} go together: one is set, the other is not"
            )),
        }
    }

    fn read(&self) -> Result<Option<Identities>, String> {
        let from_file = match &self.file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|error| format!("--s3-auth {}: {error}", path.display()))?;
                Some(Identities::parse(&text).map_err(|error| format!("--s3-auth {}: {error}", path.display()))?)
            }
            None => None,
        };
        let from_environment = self
            .environment
            .as_ref()
            .map(|(access, secret)| Identities::from_env(access, secret))
            .transpose()
            .map_err(|error| format!("{ENV_ACCESS_KEY}: {error}"))?;
        match (from_file, from_environment) {
            (Some(file), Some(environment)) => file.merge(environment).map(Some),
            (file, environment) => Ok(file.or(environment)),
        }
    }

    /// Read the credentials file again (SIGHUP). One that does not parse
    /// changes nothing: the error is logged and the old rules stay.
    pub fn reload(&self) {
        if self.file.is_none() {
            return;
        }
        match self.read() {
            Ok(identities) => {
                let keys = identities.as_ref().map_or(0, Identities::len);
                *self.current.write().expect("not poisoned") = identities.map(Arc::new);
                eprintln!("mkv: S3 credentials reloaded: {keys} keys");
            }
            Err(error) => eprintln!("mkv: S3 credentials not reloaded, the old rules stay: {error}"),
        }
    }

    fn identities(&self) -> Option<Arc<Identities>> {
        self.current.read().expect("not poisoned").clone()
    }
}

/// The master's access control, installed once at start (`install`);
/// none installed is S3 open (the maintenance commands, tests in-process).
static INSTALLED: OnceLock<Auth> = OnceLock::new();

/// Make `auth` the master's access control.
pub fn install(auth: Auth) {
    if INSTALLED.set(auth).is_err() {
        eprintln!("mkv: S3 access control was installed already; the second is ignored");
    }
}

/// Read the credentials file again (SIGHUP).
pub fn reload() {
    if let Some(auth) = INSTALLED.get() {
        auth.reload();
    }
}

fn identities() -> Option<Arc<Identities>> {
    INSTALLED.get()?.identities()
}

thread_local! {
    /// Derived signing keys of this reactor thread. The cache keeps the
    /// secret each was derived from: a reload that changes a secret never
    /// reuses a key derived from the old one.
    static SIGNING_KEYS: RefCell<SigningKeyCache> = RefCell::new(SigningKeyCache::new());
}

fn signing_key(access_key: &str, secret: &str, scope: &sigv4::Scope) -> SigningKey {
    SIGNING_KEYS.with(|cache| cache.borrow_mut().signing_key(access_key, secret, scope))
}

/// Who sent a request, as far as S3 access control is concerned.
#[derive(Clone, Debug, Default)]
pub enum Access {
    /// Access control is off.
    #[default]
    Open,
    /// On, and the request carries no signature.
    Anonymous(Arc<Identities>),
    /// A verified signature.
    Signed {
        identities: Arc<Identities>,
        verified: Box<Verified>,
    },
}

impl Access {
    /// The key that signed, when one did.
    pub fn key(&self) -> Option<&Key> {
        match self {
            Access::Signed { identities, verified } => identities.lookup(&verified.access_key),
            _ => None,
        }
    }

    /// Whether the identity may list bucket `name` in ListBuckets.
    pub fn may_list_bucket(&self, name: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Anonymous(_) => false,
            Access::Signed { .. } => self.key().is_some_and(|key| key.may_list_bucket(name)),
        }
    }

    /// The chain verifier of a streamed signed body, when the request is one.
    pub fn chunk_signer(&self) -> Option<(sigv4::ChunkSigner, bool)> {
        match self {
            Access::Signed { verified, .. } => verified
                .chunk_signer()
                .map(|signer| (signer, verified.payload == sigv4::Payload::StreamingSignedTrailer)),
            _ => None,
        }
    }

    /// The body's SHA-256 the signature covers, when it covers one.
    pub fn signed_payload_hash(&self) -> Option<[u8; 32]> {
        match self {
            Access::Signed { verified, .. } => match verified.payload {
                sigv4::Payload::Hash(hash) => Some(hash),
                _ => None,
            },
            _ => None,
        }
    }
}

/// The S3 error of an authentication failure.
pub fn refusal(error: AuthError) -> S3Error {
    let mut refused = S3Error::new(error.status(), error.code(), error.message());
    refused.details = error.details();
    refused
}

fn access_denied() -> S3Error {
    S3Error::new(403, "AccessDenied", "Access Denied")
}

/// The request as it was sent, for the signature check: `raw` is its head.
fn with_view<T>(raw: &[u8], use_view: impl FnOnce(&RequestView) -> T) -> T {
    let mut headers = [httparse::EMPTY_HEADER; crate::http::HEADER_COUNT_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    // The codec already parsed this head: it is complete and valid.
    let _ = parsed.parse(raw);
    let target = parsed.path.unwrap_or("/").as_bytes();
    let (path, query) = match target.iter().position(|&byte| byte == b'?') {
        Some(at) => (&target[..at], &target[at + 1..]),
        None => (target, &b""[..]),
    };
    let pairs: Vec<(&str, &[u8])> = parsed
        .headers
        .iter()
        .map(|header| (header.name, header.value))
        .collect();
    let view = RequestView {
        method: parsed.method.unwrap_or("GET"),
        path,
        query,
        headers: &pairs,
    };
    use_view(&view)
}

/// Who sent `request` (whose head is `raw`), and whether they may run
/// `operation`: the error to answer when not.
pub async fn check(app: &App, raw: &[u8], request: &S3Request, operation: Operation) -> Result<Access, S3Error> {
    let Some(identities) = identities() else {
        return Ok(Access::Open);
    };
    let now = Timestamp::now_unix();
    let verified = with_view(raw, |view| -> Result<Option<Verified>, AuthError> {
        let Some(claim) = sigv4::parse(view)? else {
            return Ok(None);
        };
        let key = identities
            .lookup(claim.access_key())
            .ok_or_else(|| AuthError::unknown_key(claim.access_key()))?;
        let signing = signing_key(claim.access_key(), key.secret_key(), claim.scope());
        claim.verify(view, &signing, now).map(Some)
    })
    .map_err(refusal)?;
    let access = match verified {
        Some(verified) => Access::Signed {
            identities: identities.clone(),
            verified: Box::new(verified),
        },
        None => Access::Anonymous(identities.clone()),
    };
    // Whether the bucket exists matters to one rule alone (CreateBucket by
    // a key that may write the bucket but not create buckets), and is a
    // read of the index: made first, off the reactor, only when that rule
    // may ask it.
    let asks_existence =
        operation.need() == Need::CreateBucket && access.key().is_some_and(|key| !key.may_create_bucket());
    let bucket_exists = asks_existence && super::bucket::exists(app, &request.bucket).await?;
    permit(&identities, &access, request, operation, |_| Ok(bucket_exists))?;
    Ok(access)
}

/// Whether `access` may run `operation` on `request`'s bucket.
fn permit(
    identities: &Identities,
    access: &Access,
    request: &S3Request,
    operation: Operation,
    exists: impl Fn(&str) -> Result<bool, S3Error>,
) -> Result<(), S3Error> {
    let bucket = request.bucket.as_str();
    let need = operation.need();
    let Some(key) = access.key() else {
        // Anonymous: a public-read bucket's objects, and preflights.
        let public_read = need == Need::On(Permission::Read)
            && matches!(operation, Operation::GetObject | Operation::HeadObject)
            && identities.public_read(bucket);
        return match need == Need::Nothing || public_read {
            true => Ok(()),
            false => Err(access_denied()),
        };
    };
    // What anyone may read, a key without a grant may read too.
    let public_read = need == Need::On(Permission::Read)
        && matches!(operation, Operation::GetObject | Operation::HeadObject)
        && identities.public_read(bucket);
    let allowed = public_read
        || match need {
            Need::Nothing | Need::AnyKey => true,
            Need::AnyOn => [
                Permission::Read,
                Permission::Write,
                Permission::List,
                Permission::Delete,
            ]
            .into_iter()
            .any(|permission| key.may(bucket, permission)),
            Need::On(permission) => key.may(bucket, permission),
            Need::CreateBucket => key.may_create_bucket() || (key.may(bucket, Permission::Write) && exists(bucket)?),
            Need::DeleteBucket => key.may_delete_bucket(),
        };
    if !allowed {
        return Err(access_denied());
    }
    if operation.copies() {
        let source = copy_source_bucket(request)
            .ok_or_else(|| S3Error::invalid_argument("x-amz-copy-source names no bucket"))?;
        if !key.may(&source, Permission::Read) {
            return Err(access_denied());
        }
    }
    Ok(())
}

/// POST Object's policy, once its signature (in the form) and the signer's
/// grant to write `bucket` are checked; None when access control is off and
/// the form has no policy.
pub fn check_post(access: &Access, bucket: &str, fields: &Fields) -> Result<Option<serde_json::Value>, S3Error> {
    let policy_text = fields.get("policy");
    let decoded = policy_text
        .map(|text| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| S3Error::new(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Base64"))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|_| S3Error::new(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON."))
        })
        .transpose()?;
    let identities = match access {
        Access::Open => return Ok(decoded),
        Access::Anonymous(identities) | Access::Signed { identities, .. } => identities,
    };
    let (Some(policy_text), Some(policy)) = (policy_text, decoded) else {
        return Err(access_denied());
    };
    let key = if let Some(access_key) = fields.get("AWSAccessKeyId") {
        // A SigV2 form: base64(HMAC-SHA1(secret, policy)), as browser form
        // libraries and ceph/s3-tests still sign.
        let signature = fields
            .get("signature")
            .ok_or_else(|| S3Error::invalid_argument("Bucket POST must contain a field named 'signature'"))?;
        let key = identities
            .lookup(access_key)
            .ok_or_else(|| refusal(AuthError::unknown_key(access_key)))?;
        verify_v2_policy(key.secret_key(), policy_text.trim().as_bytes(), signature.trim())?;
        key
    } else {
        let claim = PostClaim::parse(
            fields.get("x-amz-algorithm").map(str::as_bytes),
            fields.get("x-amz-credential").map(str::as_bytes),
            fields.get("x-amz-date").map(str::as_bytes),
            fields.get("x-amz-signature").map(str::as_bytes),
        )
        .map_err(refusal)?;
        let key = identities
            .lookup(claim.access_key())
            .ok_or_else(|| refusal(AuthError::unknown_key(claim.access_key())))?;
        let signing = signing_key(claim.access_key(), key.secret_key(), claim.scope());
        claim.verify(&signing, policy_text.trim().as_bytes()).map_err(refusal)?;
        key
    };
    if !key.may(bucket, Permission::Write) {
        return Err(access_denied());
    }
    Ok(Some(policy))
}

/// Check a SigV2 form signature in constant time.
fn verify_v2_policy(secret: &str, policy: &[u8], signature_base64: &str) -> Result<(), S3Error> {
    use hmac::{Hmac, KeyInit as _, Mac as _};
    let mismatch = || refusal(AuthError::SignatureDoesNotMatch(None));
    let provided = base64::engine::general_purpose::STANDARD
        .decode(signature_base64)
        .map_err(|_| mismatch())?;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(policy);
    mac.verify_slice(&provided).map_err(|_| mismatch())
}
