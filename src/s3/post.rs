//! POST Object: a browser's form upload (`POST /bucket`,
//! `multipart/form-data`), with a signed policy document when S3 access
//! control is on.
//!
//! The form's fields come before its `file` (fields after it are ignored,
//! as AWS does); they are read whole, within `FIELDS_BYTES_MAX`, and the
//! file is streamed to the volumes as it arrives, its end found by the
//! form's boundary (`FileSource`). The policy (`policy`, base64 JSON) is
//! checked against the fields before a byte of the file is read: it must
//! not have expired, every condition must hold, and every field must be
//! named by a condition; `content-length-range` is checked as the file
//! streams (too long: refused mid-stream; too short: refused at its end,
//! before the value is stored). Who signed it is `super::auth`'s
//! business (`auth::check_post`).

use bytes::Bytes;
use serde_json::Value;

use crate::app::App;
use crate::connection::{BodyError, BodyReader, Connection};
use crate::http::RequestHead;
use crate::meta::{Meta, CONTENT_TYPE_BYTES_MAX};
use crate::replication::{ClientBody, PieceSource, ReplicationError};
use crate::write::{self, Plan};

use super::list::etag_hex;
use super::request::{native_key, S3Request};
use super::{auth, bucket, object, refuse, xml, Reply, S3Error, Sent};

/// Bytes of every field before the file, names and part headers included.
const FIELDS_BYTES_MAX: usize = 64 * 1024;
/// Longest part header block (`Content-Disposition`, `Content-Type`).
const PART_HEAD_BYTES_MAX: usize = 4096;
/// Fields a form may carry before its file.
const FIELDS_MAX: usize = 100;
/// Bytes read from the client at a time.
const READ_BYTES: usize = 256 * 1024;
/// Longest boundary (RFC 2046: 70).
const BOUNDARY_BYTES_MAX: usize = 70;

/// One form field: its name as sent and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// The fields of a form, looked up by name case-insensitively (AWS's
/// form field names are).
#[derive(Debug, Default)]
pub struct Fields(pub Vec<Field>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value.as_str())
    }
}

fn malformed(why: &str) -> S3Error {
    S3Error::new(
        400,
        "MalformedPOSTRequest",
        format!("The body of your POST request is not well-formed multipart/form-data: {why}."),
    )
}

fn policy_refusal(why: impl std::fmt::Display) -> S3Error {
    S3Error::new(403, "AccessDenied", format!("Invalid according to Policy: {why}"))
}

fn policy_malformed(why: impl std::fmt::Display) -> S3Error {
    S3Error::new(400, "InvalidPolicyDocument", format!("Invalid Policy: {why}"))
}

/// The boundary of a `multipart/form-data` content type.
fn boundary(content_type: Option<&str>) -> Result<Vec<u8>, S3Error> {
    let content_type = content_type.unwrap_or("");
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(S3Error::new(
            412,
            "PreconditionFailed",
            "Bucket POST must be of the enclosure-type multipart/form-data",
        ));
    }
    let boundary = params
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty() && value.len() <= BOUNDARY_BYTES_MAX)
        .ok_or_else(|| malformed("no boundary"))?;
    Ok(boundary.as_bytes().to_vec())
}

/// A multipart/form-data body being read from the client.
struct Form<'a> {
    body: ClientBody<'a>,
    /// Bytes read and not consumed; starts with the CRLF the first
    /// delimiter lacks, so that every delimiter is `CRLF--boundary`.
    buffer: Vec<u8>,
    delimiter: Vec<u8>,
    /// The client's body has ended.
    ended: bool,
}

impl Form<'_> {
    /// Read more of the body into the buffer; false once it ended.
    async fn fill(&mut self) -> Result<bool, ReplicationError> {
        if self.ended {
            return Ok(false);
        }
        match self.body.next_piece(READ_BYTES).await? {
            Some(piece) => {
                self.buffer.extend_from_slice(&piece);
                Ok(true)
            }
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    fn find(&self, needle: &[u8], from: usize) -> Option<usize> {
        self.buffer
            .get(from..)?
            .windows(needle.len())
            .position(|window| window == needle)
            .map(|at| at + from)
    }

    /// Read until `needle` is in the buffer, no further than `limit` bytes
    /// of buffer; its position.
    async fn read_until(&mut self, needle: &[u8], limit: usize, what: &str) -> Result<usize, S3Error> {
        let mut searched = 0;
        let too_large = || {
            S3Error::new(
                400,
                "MaxPostPreDataLengthExceeded",
                format!("Your POST request fields preceding the upload file were too large ({what})."),
            )
        };
        loop {
            if let Some(at) = self.find(needle, searched) {
                // However the bytes arrived, in one read or many.
                return if at > limit { Err(too_large()) } else { Ok(at) };
            }
            searched = self.buffer.len().saturating_sub(needle.len() - 1);
            if self.buffer.len() > limit {
                return Err(too_large());
            }
            if !self.fill().await.map_err(body_error)? {
                return Err(malformed("the body ended inside the form"));
            }
        }
    }

    /// Past the next delimiter: the next part's name, filename and content
    /// type, or None after the closing delimiter.
    async fn next_part(&mut self, budget: &mut usize) -> Result<Option<PartHead>, S3Error> {
        let delimiter = self.delimiter.clone();
        let at = self.read_until(&delimiter, *budget, "a delimiter").await?;
        self.consume(at + delimiter.len(), budget)?;
        while self.buffer.len() < 2 {
            if !self.fill().await.map_err(body_error)? {
                return Err(malformed("the body ended after a delimiter"));
            }
        }
        if self.buffer.starts_with(b"--") {
            return Ok(None);
        }
        let end = self
            .read_until(b"\r\n\r\n", PART_HEAD_BYTES_MAX, "a part's headers")
            .await?;
        let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.consume(end + 4, budget)?;
        PartHead::parse(&head).map(Some)
    }

    fn consume(&mut self, count: usize, budget: &mut usize) -> Result<(), S3Error> {
        *budget = budget.checked_sub(count).ok_or_else(|| {
            S3Error::new(
                400,
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceding the upload file were too large.",
            )
        })?;
        self.buffer.drain(..count);
        Ok(())
    }

    /// The fields up to the `file` part, and that part's head.
    async fn fields(&mut self) -> Result<(Fields, PartHead), S3Error> {
        let mut budget = FIELDS_BYTES_MAX;
        let mut fields = Fields::default();
        loop {
            let Some(part) = self.next_part(&mut budget).await? else {
                return Err(S3Error::invalid_argument(
                    "POST requires exactly one file upload per request.",
                ));
            };
            if part.name.eq_ignore_ascii_case("file") {
                return Ok((fields, part));
            }
            if fields.0.len() == FIELDS_MAX {
                return Err(malformed("too many fields"));
            }
            let delimiter = self.delimiter.clone();
            let end = self.read_until(&delimiter, budget, &part.name).await?;
            let value = String::from_utf8(self.buffer[..end].to_vec())
                .map_err(|_| S3Error::invalid_argument("a form field is not UTF-8"))?;
            // Leave the delimiter for `next_part`.
            self.consume(end, &mut budget)?;
            fields.0.push(Field { name: part.name, value });
        }
    }
}

fn body_error(error: ReplicationError) -> S3Error {
    match error {
        ReplicationError::Body(BodyError::Timeout) => S3Error::new(
            400,
            "RequestTimeout",
            "Your socket connection to the server was not read from or written to within the timeout period.",
        ),
        _ => S3Error::new(400, "IncompleteBody", "the request body was cut short"),
    }
}

/// A part's `Content-Disposition` (its `Content-Type` is not used: the
/// value's is the form's field).
#[derive(Debug)]
struct PartHead {
    name: String,
    filename: Option<String>,
}

impl PartHead {
    fn parse(head: &str) -> Result<PartHead, S3Error> {
        let mut name = None;
        let mut filename = None;
        for line in head.split("\r\n") {
            let Some((header, value)) = line.split_once(':') else {
                continue;
            };
            if !header.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for (key, value) in disposition_params(value)? {
                match key.to_ascii_lowercase().as_str() {
                    "name" if name.is_none() => name = Some(value),
                    "filename" if filename.is_none() => filename = Some(value),
                    "name" | "filename" => return Err(malformed("a part names itself twice")),
                    _ => {}
                }
            }
        }
        Ok(PartHead {
            name: name.ok_or_else(|| malformed("a part has no name"))?,
            filename,
        })
    }
}

/// The parameters of a `Content-Disposition` value (`form-data; name="a";
/// filename="b"`), quoted strings read as RFC 9110 reads them: a `;` or
/// `name=` inside quotes is text, `\"` an escaped quote.
fn disposition_params(value: &str) -> Result<Vec<(String, String)>, S3Error> {
    let mut params = Vec::new();
    let mut rest = value.split_once(';').map_or("", |(_, rest)| rest);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(params);
        }
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| malformed("a parameter without '='"))?;
        let after = after.trim_start();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut text = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => text.push(chars.next().ok_or_else(|| malformed("a quoted string ends"))?.1),
                        Some((at, '"')) => break at + 1,
                        Some((_, other)) => text.push(other),
                        None => return Err(malformed("a quoted string is not closed")),
                    }
                };
                (text, &quoted[end..])
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim_end().to_owned(), &after[end..])
            }
        };
        params.push((key.trim().to_owned(), value));
        let remainder = remainder.trim_start();
        rest = match remainder.strip_prefix(';') {
            Some(next) => next,
            None if remainder.is_empty() => "",
            None => return Err(malformed("text after a parameter")),
        };
    }
}

/// The form's file, up to the delimiter after it, as the writer's source.
struct FileSource<'a, 'b> {
    form: &'b mut Form<'a>,
    delivered: u64,
    /// `content-length-range`, when the policy names one.
    range: Option<(u64, u64)>,
    done: bool,
}

impl PieceSource for FileSource<'_, '_> {
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError> {
        if self.done {
            return Ok(None);
        }
        // Bytes that could begin the delimiter stay until it is seen or
        // ruled out; the buffer holds at most `bytes_max + READ_BYTES`.
        let keep = self.form.delimiter.len() - 1;
        loop {
            if let Some(at) = self.form.find(&self.form.delimiter, 0) {
                let take = at.min(bytes_max);
                let piece: Vec<u8> = self.form.buffer.drain(..take).collect();
                self.done = take == at;
                return self.deliver(piece);
            }
            let safe = self.form.buffer.len().saturating_sub(keep);
            if safe >= bytes_max {
                let piece: Vec<u8> = self.form.buffer.drain(..bytes_max).collect();
                return self.deliver(piece);
            }
            if !self.form.fill().await? {
                return Err(ReplicationError::Body(BodyError::Malformed(
                    "the form ended inside its file",
                )));
            }
        }
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}

impl FileSource<'_, '_> {
    fn deliver(&mut self, piece: Vec<u8>) -> Result<Option<Bytes>, ReplicationError> {
        self.delivered += piece.len() as u64;
        if let Some((min, max)) = self.range {
            if self.delivered > max {
                return Err(rejected(
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size",
                ));
            }
            if self.done && self.delivered < min {
                return Err(rejected(
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                ));
            }
        }
        if piece.is_empty() {
            return Ok(None);
        }
        Ok(Some(Bytes::from(piece)))
    }
}

fn rejected(code: &'static str, message: &str) -> ReplicationError {
    ReplicationError::Body(BodyError::Rejected {
        status: 400,
        code,
        message: message.to_owned(),
    })
}

/// What a policy allows: checked against the fields; the file's length
/// range, if the policy bounds it.
fn check_policy(policy: &Value, bucket: &str, fields: &Fields, now_ms: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let expiration = policy
        .get("expiration")
        .and_then(Value::as_str)
        .ok_or_else(|| policy_malformed("Policy missing expiration."))?;
    let expires_ms = xml::parse_iso8601(expiration)
        .ok_or_else(|| policy_malformed(format!("Invalid 'expiration' value: '{expiration}'")))?;
    if expires_ms <= now_ms {
        return Err(policy_refusal("Policy expired."));
    }
    let conditions = policy
        .get("conditions")
        .and_then(Value::as_array)
        .ok_or_else(|| policy_malformed("Policy missing conditions."))?;
    if conditions.is_empty() {
        return Err(policy_malformed("Policy has no conditions."));
    }
    let value_of = |name: &str| -> Option<String> {
        if name.eq_ignore_ascii_case("bucket") {
            return Some(bucket.to_owned());
        }
        fields.get(name).map(str::to_owned)
    };
    let mut covered: Vec<String> = Vec::new();
    let mut range = None;
    for condition in conditions {
        let (operator, name, expected) = match condition {
            Value::Object(map) if map.len() == 1 => {
                let (name, expected) = map.iter().next().expect("one entry");
                let expected = expected
                    .as_str()
                    .ok_or_else(|| policy_malformed(format!("the condition on {name} is not a string")))?;
                ("eq", name.clone(), expected.to_owned())
            }
            Value::Array(items) if items.first().and_then(Value::as_str) == Some("content-length-range") => {
                let bound = |index: usize| items.get(index).and_then(Value::as_u64);
                match (items.len(), bound(1), bound(2)) {
                    (3, Some(min), Some(max)) if min <= max => range = Some((min, max)),
                    _ => return Err(policy_malformed("Invalid content-length-range")),
                }
                continue;
            }
            Value::Array(items) if items.len() == 3 => {
                let text = |index: usize| items[index].as_str();
                match (text(0), text(1), text(2)) {
                    (Some(operator), Some(name), Some(expected)) => {
                        let name = name
                            .strip_prefix('$')
                            .ok_or_else(|| policy_malformed(format!("the field {name} does not start with '$'")))?;
                        (operator, name.to_owned(), expected.to_owned())
                    }
                    _ => return Err(policy_malformed("a condition is not three strings")),
                }
            }
            _ => return Err(policy_malformed("a condition is neither an object nor a list")),
        };
        let actual = value_of(&name);
        let holds = match operator.to_ascii_lowercase().as_str() {
            "eq" => actual.as_deref() == Some(expected.as_str()),
            "starts-with" => actual
                .as_deref()
                .is_some_and(|value| value.starts_with(expected.as_str())),
            other => return Err(policy_malformed(format!("unknown condition {other}"))),
        };
        if !holds {
            return Err(policy_refusal(format!(
                "Policy Condition failed: [\"{operator}\", \"${name}\", \"{expected}\"]"
            )));
        }
        covered.push(name.to_ascii_lowercase());
    }
    for field in &fields.0 {
        let name = field.name.to_ascii_lowercase();
        let exempt = matches!(
            name.as_str(),
            "policy"
                | "signature"
                | "awsaccesskeyid"
                | "x-amz-signature"
                | "x-amz-credential"
                | "x-amz-algorithm"
                | "x-amz-date"
                | "x-amz-security-token"
                | "file"
        ) || name.starts_with("x-ignore-");
        if !exempt && !covered.contains(&name) {
            return Err(policy_refusal(format!("Extra input fields: {}", field.name)));
        }
    }
    Ok(range)
}

/// POST Object.
pub async fn post(
    app: &App,
    connection: &mut Connection,
    head: &RequestHead,
    request: &S3Request,
    access: &auth::Access,
) -> Result<Sent, S3Error> {
    let delimiter = [
        b"\r\n--".as_slice(),
        &boundary(request.headers.content_type.as_deref())?,
    ]
    .concat();
    let keep_alive = head.keep_alive;
    let mut form = Form {
        body: ClientBody {
            connection: &mut *connection,
            body: BodyReader::new(head.body, app.config.body_limits),
            continue_pending: head.expect_continue,
        },
        buffer: b"\r\n".to_vec(),
        delimiter,
        ended: false,
    };
    let (fields, file) = form.fields().await?;
    // Who may write here: the policy's signer, or anyone with S3 open.
    let policy = auth::check_post(access, &request.bucket, &fields)?;
    let range = match &policy {
        Some(policy) => check_policy(policy, &request.bucket, &fields, crate::meta::now_ms())?,
        None => None,
    };
    let key_text = fields
        .get("key")
        .ok_or_else(|| S3Error::invalid_argument("Bucket POST must contain a field named 'key'."))?;
    let key_text = match &file.filename {
        Some(filename) => key_text.replace("${filename}", filename),
        None => key_text.to_owned(),
    };
    if key_text.is_empty() {
        return Err(S3Error::invalid_argument(
            "Bucket POST must contain a field named 'key'.",
        ));
    }
    let key = object::checked_native_key(native_key(&request.bucket, key_text.as_bytes()))?;
    bucket::check_writable(app, &request.bucket).await?;
    // The value's content type is the form's field, which the policy
    // governs, never the file part's own header, which it does not.
    let content_type = fields.get("content-type").map(str::to_owned);
    if content_type
        .as_ref()
        .is_some_and(|text| text.len() > CONTENT_TYPE_BYTES_MAX || !crate::http::is_header_value(text))
    {
        return Err(S3Error::invalid_argument(
            "Content-Type is too long or holds a control character",
        ));
    }
    let redirect = fields.get("success_action_redirect").or_else(|| fields.get("redirect"));
    if redirect.is_some_and(|url| !crate::http::is_header_value(url)) {
        return Err(S3Error::invalid_argument(
            "success_action_redirect holds a control character",
        ));
    }
    let user = form_metadata(&fields)?;
    let _guard = super::lock(app, &key).await?;
    let meta = Meta {
        content_type,
        user,
        ..Meta::default()
    };
    let plan = Plan::s3_value(None, meta);
    let mut source = FileSource {
        form: &mut form,
        delivered: 0,
        range,
        done: false,
    };
    let stored = write::store_value(app, &key, &mut source, plan).await?;
    drop(form);
    // Recorded once the value is: a refused upload makes no bucket.
    bucket::ensure_for_write(app, &request.bucket).await?;
    let etag = stored.md5.as_ref().map(etag_hex).unwrap_or_default();
    // The key as a URL path: it may hold any character, CR and LF too.
    let location = format!("/{}/{}", request.bucket, encode(&key_text));
    if let Some(redirect) = redirect {
        let separator = if redirect.contains('?') { '&' } else { '?' };
        let target = format!(
            "{redirect}{separator}bucket={}&key={}&etag=%22{etag}%22",
            encode(&request.bucket),
            encode(&key_text)
        );
        Reply::empty(303)
            .header("Location", target)
            .header("ETag", format_args!("\"{etag}\""))
            .write(connection, keep_alive, false);
        return Ok(Sent::status(303));
    }
    let status = match fields.get("success_action_status") {
        Some("200") => 200,
        Some("201") => 201,
        _ => 204,
    };
    let reply = match status {
        201 => Reply::xml(201, xml::post_response(&location, &request.bucket, &key_text, &etag)),
        _ => Reply::empty(status),
    };
    reply
        .header("ETag", format_args!("\"{etag}\""))
        .header("Location", &location)
        .write(connection, keep_alive, false);
    Ok(Sent::status(status))
}

/// Headers a form may give that S3 keeps with the value, as a PutObject's.
const STORED_FIELDS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

/// The metadata a form gives its value: `x-amz-meta-*` fields and the
/// headers S3 stores; a field asking for what mkv does not do (tags, a
/// checksum it would not verify) is refused, never ignored.
fn form_metadata(fields: &Fields) -> Result<Vec<(String, String)>, S3Error> {
    let mut user = Vec::new();
    for field in &fields.0 {
        let name = field.name.to_ascii_lowercase();
        if let Some(user_name) = name.strip_prefix("x-amz-meta-") {
            user.push((user_name.to_owned(), field.value.clone()));
        } else if STORED_FIELDS.contains(&name.as_str()) {
            user.push((format!(":{name}"), field.value.clone()));
        } else if name == "tagging" || name == "content-md5" || name.starts_with("x-amz-checksum-") {
            return Err(refuse::not_implemented(&format!(
                "the {name} field of POST Object is not implemented"
            )));
        } else if name == "acl" || (name.starts_with("x-amz-") && !is_form_auth_field(&name)) {
            let header = if name == "acl" { "x-amz-acl" } else { name.as_str() };
            if let Some(reason) = refuse::header_refusal(header, &field.value) {
                return Err(refuse::not_implemented(&reason));
            }
        }
    }
    object::checked_user_metadata(user)
}

/// The fields that carry a form's signature.
fn is_form_auth_field(name: &str) -> bool {
    matches!(
        name,
        "x-amz-signature" | "x-amz-credential" | "x-amz-algorithm" | "x-amz-date" | "x-amz-security-token"
    )
}

/// Percent-encode a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(name, value)| Field {
                    name: name.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        )
    }

    fn policy(conditions: Value) -> Value {
        serde_json::json!({"expiration": "2099-01-01T00:00:00Z", "conditions": conditions})
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(boundary(Some("multipart/form-data; boundary=abc")).unwrap(), b"abc");
        assert_eq!(boundary(Some("Multipart/Form-Data; boundary=\"a b\"")).unwrap(), b"a b");
        assert_eq!(boundary(Some("text/plain")).unwrap_err().status, 412);
        assert_eq!(boundary(Some("multipart/form-data")).unwrap_err().status, 400);
    }

    #[test]
    fn conditions_hold_or_refuse() {
        let form = fields(&[("key", "foo.txt"), ("Content-Type", "text/plain"), ("x-ignore-a", "b")]);
        let good = policy(serde_json::json!([
            {"bucket": "b"}, ["starts-with", "$key", "foo"], ["eq", "$content-type", "text/plain"],
            ["content-length-range", 0, 1024]
        ]));
        assert_eq!(check_policy(&good, "b", &form, 0).unwrap(), Some((0, 1024)));
        assert_eq!(check_policy(&good, "other", &form, 0).unwrap_err().status, 403);
        let uncovered = policy(serde_json::json!([{"bucket": "b"}, ["starts-with", "$key", ""]]));
        assert_eq!(check_policy(&uncovered, "b", &form, 0).unwrap_err().status, 403);
        let expired = serde_json::json!({"expiration": "2000-01-01T00:00:00Z", "conditions": [{"bucket": "b"}]});
        assert_eq!(check_policy(&expired, "b", &form, 1).unwrap_err().status, 403);
        for bad in [
            serde_json::json!({"conditions": [{"bucket": "b"}]}),
            serde_json::json!({"expiration": "tomorrow", "conditions": [{"bucket": "b"}]}),
            policy(serde_json::json!([])),
            policy(serde_json::json!([["content-length-range", 0]])),
            policy(serde_json::json!([["content-length-range", -1, 0]])),
        ] {
            assert_eq!(check_policy(&bad, "b", &form, 0).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn part_heads_name_fields_and_files() {
        let head = PartHead::parse(
            "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain",
        )
        .unwrap();
        assert_eq!((head.name.as_str(), head.filename.as_deref()), ("file", Some("a.txt")));
        assert!(PartHead::parse("Content-Type: text/plain").is_err());
        // Quoting is honoured: a `; name=file` inside a quoted filename is
        // the filename's text, not a second name.
        let head =
            PartHead::parse("Content-Disposition: form-data; name=\"notfile\"; filename=\"a; name=file\"").unwrap();
        assert_eq!(
            (head.name.as_str(), head.filename.as_deref()),
            ("notfile", Some("a; name=file"))
        );
        assert!(PartHead::parse("Content-Disposition: form-data; name=\"a\"; name=\"file\"").is_err());
        assert!(PartHead::parse("Content-Disposition: form-data; name=\"unclosed").is_err());
    }
}
