//! Who may do what over S3: access keys, their secrets, and the buckets
//! each may read, write, list and delete from; and the buckets anyone may
//! read.
//!
//! The rules come from a credentials file (`--s3-auth FILE`, TOML), from
//! the environment (`MKV_S3_ACCESS_KEY` and `MKV_S3_SECRET_KEY`: one key
//! with every permission on every bucket, as MinIO's root user), or both
//! (the environment's key joins the file's). With neither, S3 stays open.
//!
//! ```toml
//! # A key that may read and list "photos", and do anything to objects of "logs".
//! [[key]]
//! access_key = "AKIDEXAMPLE1"
//! secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
//! buckets = { "photos" = ["read", "list"], "logs" = ["read", "write", "list", "delete"] }
//!
//! # "*" is every bucket. Creating a bucket needs "write" on "*", deleting
//! # one "delete" on "*".
//! [[key]]
//! access_key = "ADMINKEY"
//! secret_key = "another secret"
//! buckets = { "*" = ["read", "write", "list", "delete"] }
//!
//! # Anonymous GET and HEAD of this bucket's objects (not listing, not writing).
//! [bucket.public-assets]
//! public_read = true
//! ```
//!
//! The permissions, per bucket: `read` (GET and HEAD of objects, and a copy
//! from them), `write` (PUT, POST, copy to, multipart uploads), `list`
//! (listing objects and uploads; ListBuckets shows a key the buckets it may
//! list) and `delete` (objects, uploads). A key's grants on `"*"` add to
//! those it has on each bucket.
//!
//! The file is strict, so a mistake refuses it rather than opening a hole
//! or locking someone out silently: unknown fields, unknown permissions,
//! an access key given twice, an empty secret and a malformed bucket name
//! are refused with the line they are on. Secrets appear in no message
//! and no `Debug` output.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::sigv4::CREDENTIAL_PART_BYTES_MAX;

/// The environment variables of the one all-powerful key.
pub const ENV_ACCESS_KEY: &str = "MKV_S3_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "MKV_S3_SECRET_KEY";
/// Largest credentials file read: ten thousand keys fit in a megabyte, and
/// the bound keeps a wrong path (a log, a disk image) from being slurped.
pub const FILE_BYTES_MAX: usize = 1 << 20;
/// Longest secret: AWS's are 40 characters.
pub const SECRET_BYTES_MAX: usize = 256;
/// The bucket name that grants on every bucket.
pub const EVERY_BUCKET: &str = "*";

/// One thing a key may do in a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    List,
    Delete,
}

impl Permission {
    const ALL: [Permission; 4] = [
        Permission::Read,
        Permission::Write,
        Permission::List,
        Permission::Delete,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::List => "list",
            Permission::Delete => "delete",
        }
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Permissions(u8);

impl Permissions {
    const ALL: Permissions = Permissions(0b1111);

    fn has(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(permissions: I) -> Permissions {
        Permissions(
            permissions
                .into_iter()
                .fold(0, |bits, permission| bits | permission.bit()),
        )
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_set()
            .entries(
                Permission::ALL
                    .iter()
                    .filter(|permission| self.has(**permission))
                    .map(|permission| permission.name()),
            )
            .finish()
    }
}

/// An access key: its secret and what it may do.
pub struct Key {
    access_key: String,
    secret_key: String,
    /// Grants per bucket, `"*"` not among them.
    buckets: HashMap<String, Permissions>,
    /// The grants on `"*"`: every bucket.
    every_bucket: Permissions,
}

impl Key {
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret, to derive signing keys from; never to be shown.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Whether this key may do `permission` in `bucket`.
    pub fn may(&self, bucket: &str, permission: Permission) -> bool {
        self.every_bucket.has(permission) || self.buckets.get(bucket).is_some_and(|granted| granted.has(permission))
    }

    /// Whether ListBuckets shows `bucket` to this key.
    pub fn may_list_bucket(&self, bucket: &str) -> bool {
        self.may(bucket, Permission::List)
    }

    /// Whether this key may create buckets: `write` on `"*"`.
    pub fn may_create_bucket(&self) -> bool {
        self.every_bucket.has(Permission::Write)
    }

    /// Whether this key may delete (empty) buckets: `delete` on `"*"`.
    pub fn may_delete_bucket(&self) -> bool {
        self.every_bucket.has(Permission::Delete)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Key")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("buckets", &self.buckets)
            .field("every_bucket", &self.every_bucket)
            .finish()
    }
}

/// Every key, and the public buckets.
#[derive(Debug, Default)]
pub struct Identities {
    keys: HashMap<String, Key>,
    public_read: HashSet<String>,
}

/// The credentials file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    key: Vec<KeyDoc>,
    #[serde(default)]
    bucket: BTreeMap<String, Spanned<BucketDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    access_key: Spanned<String>,
    secret_key: Spanned<String>,
    #[serde(default)]
    buckets: BTreeMap<String, Spanned<Vec<Permission>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketDoc {
    #[serde(default)]
    public_read: bool,
}

impl Identities {
    /// Read a credentials file's text; the error names the line at fault.
    pub fn parse(text: &str) -> Result<Identities, String> {
        if text.len() > FILE_BYTES_MAX {
            return Err(format!("the file is larger than {FILE_BYTES_MAX} bytes"));
        }
        let doc: FileDoc = toml::from_str(text).map_err(|error| describe(text, &error))?;
        let at = |span: std::ops::Range<usize>| format!("line {}", line_of(text, span.start));
        let mut identities = Identities::default();
        for key_doc in doc.key {
            let access_key = key_doc.access_key.get_ref();
            check_access_key(access_key).map_err(|problem| format!("{}: {problem}", at(key_doc.access_key.span())))?;
            check_secret(key_doc.secret_key.get_ref())
                .map_err(|problem| format!("{}: {problem}", at(key_doc.secret_key.span())))?;
            let mut key = Key {
                access_key: access_key.clone(),
                secret_key: key_doc.secret_key.get_ref().clone(),
                buckets: HashMap::new(),
                every_bucket: Permissions::default(),
            };
            for (bucket, permissions) in &key_doc.buckets {
                let granted: Permissions = permissions.get_ref().iter().copied().collect();
                if bucket == EVERY_BUCKET {
                    key.every_bucket = granted;
                } else {
                    check_bucket(bucket).map_err(|problem| format!("{}: {problem}", at(permissions.span())))?;
                    key.buckets.insert(bucket.clone(), granted);
                }
            }
            if identities.keys.contains_key(access_key) {
                return Err(format!(
                    "{}: access key \"{access_key}\" is given twice",
                    at(key_doc.access_key.span())
                ));
            }
            identities.keys.insert(access_key.clone(), key);
        }
        for (bucket, bucket_doc) in doc.bucket {
            if bucket == EVERY_BUCKET {
                return Err(format!(
                    "{}: a [bucket.NAME] table names one bucket; \"*\" is not one",
                    at(bucket_doc.span())
                ));
            }
            check_bucket(&bucket).map_err(|problem| format!("{}: {problem}", at(bucket_doc.span())))?;
            if bucket_doc.get_ref().public_read {
                identities.public_read.insert(bucket);
            }
        }
        Ok(identities)
    }

    /// The one key of the environment: every permission on every bucket.
    pub fn from_env(access_key: &str, secret_key: &str) -> Result<Identities, String> {
        check_access_key(access_key).map_err(|problem| format!("{ENV_ACCESS_KEY}: {problem}"))?;
        check_secret(secret_key).map_err(|problem| format!("{ENV_SECRET_KEY}: {problem}"))?;
        let key = Key {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            buckets: HashMap::new(),
            every_bucket: Permissions::ALL,
        };
        let mut identities = Identities::default();
        identities.keys.insert(access_key.to_owned(), key);
        Ok(identities)
    }

    /// The environment's key from the two variables' values: `None` when
    /// neither is set, an error when only one is.
    pub fn from_env_vars(access_key: Option<&str>, secret_key: Option<&str>) -> Result<Option<Identities>, String> {
        match (access_key, secret_key) {
            (None, None) => Ok(None),
            (Some(access_key), Some(secret_key)) => Identities::from_env(access_key, secret_key).map(Some),
            (Some(_), None) => Err(format!("{ENV_ACCESS_KEY} is set but {ENV_SECRET_KEY} is not")),
            (None, Some(_)) => Err(format!("{ENV_SECRET_KEY} is set but {ENV_ACCESS_KEY} is not")),
        }
    }

    /// Both sets of rules: `other`'s keys join these (an access key in both
    /// is refused), and its public buckets.
    pub fn merge(mut self, other: Identities) -> Result<Identities, String> {
        for (access_key, key) in other.keys {
            if self.keys.contains_key(&access_key) {
                return Err(format!(
                    "access key \"{access_key}\" is given twice (in the file and in {ENV_ACCESS_KEY})"
                ));
            }
            self.keys.insert(access_key, key);
        }
        self.public_read.extend(other.public_read);
        Ok(self)
    }

    pub fn lookup(&self, access_key: &str) -> Option<&Key> {
        self.keys.get(access_key)
    }

    /// Whether anyone may GET and HEAD the objects of `bucket`.
    pub fn public_read(&self, bucket: &str) -> bool {
        self.public_read.contains(bucket)
    }

    /// The access keys, for a log line at load (they are not secret).
    pub fn access_keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// An access key must fit a SigV4 credential: printable, none of the
/// characters that separate its parts.
fn check_access_key(access_key: &str) -> Result<(), String> {
    if access_key.is_empty() || access_key.len() > CREDENTIAL_PART_BYTES_MAX {
        return Err(format!("an access key has 1 to {CREDENTIAL_PART_BYTES_MAX} characters"));
    }
    if !access_key
        .bytes()
        .all(|byte| byte.is_ascii_graphic() && !b"/,;=".contains(&byte))
    {
        return Err(format!(
            "access key \"{}\" may hold only printable ASCII other than / , ; =",
            access_key.escape_default()
        ));
    }
    Ok(())
}

/// Problems with a secret, described without it.
fn check_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("the secret_key is empty".to_owned());
    }
    if secret.len() > SECRET_BYTES_MAX {
        return Err(format!("the secret_key is longer than {SECRET_BYTES_MAX} bytes"));
    }
    if secret.trim() != secret {
        return Err("the secret_key starts or ends with white space (clients would sign without it)".to_owned());
    }
    Ok(())
}

/// A bucket name as S3 spells them (lower-case letters, digits, `.` and
/// `-`), so a misspelt one is refused rather than never matching.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if super::bucket::valid_name(bucket) {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is not a bucket name (nor \"*\")",
            bucket.escape_default()
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// A TOML error as one line, its line number first. An error on a line
/// that holds a secret is told without the parser's words, which may quote
/// the value.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().trim().to_owned();
    };
    let line = line_of(text, span.start);
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    if mentions_secret(line_text) {
        return format!(
            "line {line}: the secret_key on this line is not a valid TOML string \
             (the parser's message is not shown: it may quote the secret)"
        );
    }
    let message = error.message().trim().replace('\n', " ");
    format!("line {line}: {message}")
}

/// Whether a line names `secret_key`, however spelled: TOML allows a key
/// in quotes with `\uXXXX` escapes (`"secret\u005fkey"`).
fn mentions_secret(line: &str) -> bool {
    let mut decoded = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('\\') {
        decoded.push_str(&rest[..at]);
        let escape = &rest[at + 1..];
        let digits = match escape.chars().next() {
            Some('u') => 4,
            Some('U') => 8,
            _ => 0,
        };
        let code = escape.get(1..=digits).and_then(|hex| u32::from_str_radix(hex, 16).ok());
        match code.and_then(char::from_u32) {
            Some(character) if digits > 0 => {
                decoded.push(character);
                rest = &escape[1 + digits..];
            }
            _ => {
                decoded.push('\\');
                rest = escape;
            }
        }
    }
    decoded.push_str(rest);
    decoded.contains("secret_key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_spelled_otherwise_is_not_echoed() {
        let text = "[[key]]\naccess_key = \"A\"\n\"secret\\u005fkey\" = 1234567890123\n";
        let error = Identities::parse(text).unwrap_err();
        assert!(!error.contains("1234567890123"), "{error}");
        assert!(mentions_secret("'secret_key' = 1") && mentions_secret("\"secret\\U0000005fkey\" = 1"));
        assert!(!mentions_secret("access_key = \"s\""));
    }

    /// The example of the module's documentation.
    const EXAMPLE: &str = r#"
# A key that may read and list "photos", and do anything to objects of "logs".
[[key]]
access_key = "AKIDEXAMPLE1"
secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
buckets = { "photos" = ["read", "list"], "logs" = ["read", "write", "list", "delete"] }

# "*" is every bucket. Creating a bucket needs "write" on "*", deleting
# one "delete" on "*".
[[key]]
access_key = "ADMINKEY"
secret_key = "another secret"
buckets = { "*" = ["read", "write", "list", "delete"] }

# Anonymous GET and HEAD of this bucket's objects (not listing, not writing).
[bucket.public-assets]
public_read = true
"#;

    #[test]
    fn the_documented_example_parses_as_documented() {
        let module = include_str!("identity.rs");
        let documented: String = module
            .lines()
            .skip_while(|line| *line != "//! ```toml")
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| format!("{}\n", line.strip_prefix("//!").unwrap().trim_start()))
            .collect();
        assert_eq!(documented.trim(), EXAMPLE.trim());

        let identities = Identities::parse(EXAMPLE).unwrap();
        assert_eq!(identities.len(), 2);
        let reader = identities.lookup("AKIDEXAMPLE1").unwrap();
        assert_eq!(reader.secret_key(), "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        assert!(reader.may("photos", Permission::Read));
        assert!(reader.may("photos", Permission::List));
        assert!(!reader.may("photos", Permission::Write));
        assert!(!reader.may("photos", Permission::Delete));
        assert!(reader.may("logs", Permission::Delete));
        assert!(!reader.may("other", Permission::Read));
        assert!(reader.may_list_bucket("photos") && reader.may_list_bucket("logs"));
        assert!(!reader.may_list_bucket("public-assets"));
        assert!(!reader.may_create_bucket() && !reader.may_delete_bucket());

        let admin = identities.lookup("ADMINKEY").unwrap();
        for permission in Permission::ALL {
            assert!(admin.may("anything", permission));
        }
        assert!(admin.may_list_bucket("photos"));
        assert!(admin.may_create_bucket() && admin.may_delete_bucket());

        assert!(identities.lookup("NOSUCHKEY").is_none());
        assert!(identities.public_read("public-assets"));
        assert!(!identities.public_read("photos"));
        let mut keys: Vec<&str> = identities.access_keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ADMINKEY", "AKIDEXAMPLE1"]);
    }

    #[test]
    fn every_bucket_grants_add_to_a_buckets_own() {
        let identities = Identities::parse(
            r#"
[[key]]
access_key = "K"
secret_key = "s"
buckets = { "*" = ["list"], "logs" = ["write"] }
"#,
        )
        .unwrap();
        let key = identities.lookup("K").unwrap();
        assert!(key.may("logs", Permission::Write) && key.may("logs", Permission::List));
        assert!(key.may("other", Permission::List) && !key.may("other", Permission::Write));
        assert!(!key.may_create_bucket());
    }

    /// Parse `text`, expecting a refusal that names `line`.
    fn refused(text: &str, line: usize) -> String {
        let error = Identities::parse(text).unwrap_err();
        assert!(error.starts_with(&format!("line {line}: ")), "{error}");
        assert!(!error.contains('\n'), "{error}");
        error
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let error = refused("[[key]]\naccess_key = \"K\"\nsecret_key = \"s\"\nbucket = {}\n", 4);
        assert!(error.contains("bucket"), "{error}");
        let error = refused("keys = []\n", 1);
        assert!(error.contains("keys"), "{error}");
        let error = refused("[bucket.photos]\npublic_read = true\npublic_write = true\n", 3);
        assert!(error.contains("public_write"), "{error}");
    }

    #[test]
    fn unknown_permissions_are_refused() {
        let error = refused(
            "[[key]]\naccess_key = \"K\"\nsecret_key = \"s\"\nbuckets = { \"photos\" = [\"reed\"] }\n",
            4,
        );
        assert!(error.contains("reed"), "{error}");
    }

    #[test]
    fn duplicate_access_keys_are_refused() {
        let text =
            "[[key]]\naccess_key = \"K\"\nsecret_key = \"a\"\n\n[[key]]\naccess_key = \"K\"\nsecret_key = \"b\"\n";
        let error = refused(text, 6);
        assert!(error.contains("\"K\" is given twice"), "{error}");
    }

    #[test]
    fn bad_secrets_are_refused_without_being_shown() {
        let error = refused("[[key]]\naccess_key = \"K\"\nsecret_key = \"\"\n", 3);
        assert!(error.contains("empty"), "{error}");
        let error = refused("[[key]]\naccess_key = \"K\"\nsecret_key = \" padded \"\n", 3);
        assert!(!error.contains("padded"), "{error}");
        // A secret of the wrong type: the parser's message would quote it.
        let error = refused("[[key]]\naccess_key = \"K\"\nsecret_key = 123456789\n", 3);
        assert!(!error.contains("123456789"), "{error}");
        let error = refused("[[key]]\naccess_key = \"K\"\nsecret_key = \"bad\\q escape\"\n", 3);
        assert!(!error.contains("escape"), "{error}");
        let missing = Identities::parse("[[key]]\naccess_key = \"K\"\n").unwrap_err();
        assert!(missing.contains("secret_key"), "{missing}");
    }

    #[test]
    fn bad_access_keys_and_bucket_names_are_refused() {
        refused("[[key]]\naccess_key = \"\"\nsecret_key = \"s\"\n", 2);
        refused("[[key]]\naccess_key = \"A/B\"\nsecret_key = \"s\"\n", 2);
        refused("[[key]]\naccess_key = \"A B\"\nsecret_key = \"s\"\n", 2);
        let error = refused(
            "[[key]]\naccess_key = \"K\"\nsecret_key = \"s\"\nbuckets = { \"Photos\" = [\"read\"] }\n",
            4,
        );
        assert!(error.contains("Photos"), "{error}");
        refused("[bucket.\"*\"]\npublic_read = true\n", 1);
        refused("[bucket.Public_Assets]\npublic_read = true\n", 1);
        refused("[bucket.public]\npublic_read = \"yes\"\n", 2);
    }

    #[test]
    fn a_file_with_no_keys_is_valid_and_bucket_tables_may_say_false() {
        let identities = Identities::parse("[bucket.public]\npublic_read = false\n").unwrap();
        assert!(identities.is_empty());
        assert!(!identities.public_read("public"));
        assert!(Identities::parse("").unwrap().is_empty());
    }

    #[test]
    fn the_environment_key_may_do_everything() {
        let identities = Identities::from_env("ROOT", "root secret").unwrap();
        let key = identities.lookup("ROOT").unwrap();
        for permission in Permission::ALL {
            assert!(key.may("any-bucket", permission));
        }
        assert!(key.may_create_bucket() && key.may_delete_bucket() && key.may_list_bucket("x"));
        assert!(Identities::from_env("ROOT", "")
            .unwrap_err()
            .starts_with(ENV_SECRET_KEY));
        assert!(Identities::from_env("", "s").unwrap_err().starts_with(ENV_ACCESS_KEY));
        assert!(Identities::from_env_vars(None, None).unwrap().is_none());
        assert!(Identities::from_env_vars(Some("ROOT"), Some("s")).unwrap().is_some());
        assert!(Identities::from_env_vars(Some("ROOT"), None).is_err());
        assert!(Identities::from_env_vars(None, Some("s")).is_err());
    }

    #[test]
    fn merging_adds_the_environment_key_and_refuses_a_clash() {
        let file = Identities::parse(EXAMPLE).unwrap();
        let merged = file
            .merge(Identities::from_env("ROOT", "root secret").unwrap())
            .unwrap();
        assert_eq!(merged.len(), 3);
        assert!(merged.lookup("ROOT").unwrap().may_create_bucket());
        assert!(merged.public_read("public-assets"));
        let file = Identities::parse(EXAMPLE).unwrap();
        let error = file.merge(Identities::from_env("ADMINKEY", "x").unwrap()).unwrap_err();
        assert!(
            error.contains("ADMINKEY") && !error.contains("another secret"),
            "{error}"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let identities = Identities::parse(EXAMPLE).unwrap();
        let shown = format!("{identities:?}");
        assert!(
            shown.contains("AKIDEXAMPLE1") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(
            !shown.contains("EXAMPLEKEY") && !shown.contains("another secret"),
            "{shown}"
        );
    }
}
