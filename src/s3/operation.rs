//! Which S3 operation a request asks for, and what it needs to be allowed
//! (sans-IO).
//!
//! `classify` is the one reading of method, path and sub-resources that
//! both the dispatch (`super::dispatch`) and the access check
//! (`super::auth`) use: an operation cannot run without the grant its
//! variant names, because there is no other way from a request to an
//! operation.

use crate::http::Method;

use super::request::S3Request;

/// An S3 operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    /// A method other than GET on the service.
    ServiceMethodNotAllowed,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    GetBucketLocation,
    GetBucketVersioning,
    ListMultipartUploads,
    ListObjectVersions,
    ListObjectsV2,
    ListObjectsV1,
    DeleteObjects,
    UploadPartCopy,
    UploadPart,
    CopyObject,
    PutObject,
    ListParts,
    GetObject,
    HeadObject,
    AbortMultipartUpload,
    DeleteObject,
    CreateMultipartUpload,
    CompleteMultipartUpload,
    PutBucketCors,
    GetBucketCors,
    DeleteBucketCors,
    /// A CORS preflight (`OPTIONS`): never signed, answered from the
    /// bucket's rules alone.
    Preflight,
    /// A browser's form upload (`POST /bucket`, multipart/form-data),
    /// signed in the form: `auth::check_post`.
    PostObject,
    /// Anything else: answered 501 NotImplemented.
    NotImplemented,
}

pub use super::identity::Permission;

/// What an operation needs of the identity that asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A signed request from any known key (ListBuckets: each key sees
    /// the buckets it may list).
    AnyKey,
    /// A signed request from a key with any permission on the bucket.
    AnyOn,
    /// A signed request from a key with this permission on the bucket,
    /// or (`Read` only) an anonymous read of a public-read bucket.
    On(Permission),
    /// Nothing: a CORS preflight, which reads only the bucket's CORS rules
    /// and which browsers never sign.
    Nothing,
    /// Making a bucket: a key granted `write` on every bucket (`"*"`); one
    /// that may write the bucket, if it exists already (a no-op).
    CreateBucket,
    /// Deleting a bucket: a key granted `delete` on every bucket.
    DeleteBucket,
}

impl Operation {
    /// What this operation needs on the request's bucket. A copy also
    /// needs `Read` on its source's bucket (`copy_source_bucket`).
    pub fn need(self) -> Need {
        use Operation::*;
        use Permission::*;
        match self {
            ListBuckets | ServiceMethodNotAllowed => Need::AnyKey,
            NotImplemented => Need::AnyKey,
            HeadBucket | GetBucketLocation | GetBucketVersioning | GetBucketCors => Need::AnyOn,
            // Checked once the form's fields are read (`auth::check_post`).
            Preflight | PostObject => Need::Nothing,
            PutBucketCors | DeleteBucketCors => Need::On(Write),
            CreateBucket => Need::CreateBucket,
            DeleteBucket => Need::DeleteBucket,
            DeleteObjects | DeleteObject => Need::On(Delete),
            ListMultipartUploads | ListObjectVersions | ListObjectsV2 | ListObjectsV1 => Need::On(List),
            UploadPartCopy
            | UploadPart
            | CopyObject
            | PutObject
            | ListParts
            | AbortMultipartUpload
            | CreateMultipartUpload
            | CompleteMultipartUpload => Need::On(Write),
            GetObject | HeadObject => Need::On(Read),
        }
    }

    /// Whether the operation reads another object (`x-amz-copy-source`).
    pub fn copies(self) -> bool {
        matches!(self, Operation::CopyObject | Operation::UploadPartCopy)
    }
}

/// The operation `request` asks for.
pub fn classify(method: Method, request: &S3Request) -> Operation {
    use Operation::*;
    if method == Method::Options {
        return match request.bucket.is_empty() {
            true => ServiceMethodNotAllowed,
            false => Preflight,
        };
    }
    if request.bucket.is_empty() {
        return match method {
            Method::Get => ListBuckets,
            _ => ServiceMethodNotAllowed,
        };
    }
    if request.key.is_empty() {
        return match method {
            Method::Put if request.has("cors") => PutBucketCors,
            Method::Get if request.has("cors") => GetBucketCors,
            Method::Delete if request.has("cors") => DeleteBucketCors,
            Method::Put if request.query.is_empty() => CreateBucket,
            Method::Head => HeadBucket,
            Method::Delete if request.query.is_empty() => DeleteBucket,
            Method::Get if request.has("location") => GetBucketLocation,
            Method::Get if request.has("versioning") => GetBucketVersioning,
            Method::Get if request.has("uploads") => ListMultipartUploads,
            Method::Get if request.has("versions") => ListObjectVersions,
            Method::Get if request.param("list-type") == Some(b"2") => ListObjectsV2,
            Method::Get => ListObjectsV1,
            Method::Post if request.has("delete") => DeleteObjects,
            Method::Post if request.query.is_empty() => PostObject,
            _ => NotImplemented,
        };
    }
    let upload = request.has("uploadId");
    let copy = request.headers.copy_source.is_some();
    match method {
        Method::Put if upload && copy => UploadPartCopy,
        Method::Put if upload => UploadPart,
        Method::Put if copy => CopyObject,
        Method::Put => PutObject,
        Method::Get if upload => ListParts,
        Method::Get => GetObject,
        Method::Head => HeadObject,
        Method::Delete if upload => AbortMultipartUpload,
        Method::Delete => DeleteObject,
        Method::Post if request.has("uploads") => CreateMultipartUpload,
        Method::Post if upload => CompleteMultipartUpload,
        _ => NotImplemented,
    }
}

/// The bucket of an `x-amz-copy-source` (`bucket/key` or `/bucket/key`,
/// percent-encoded, perhaps with `?versionId=`); None when it names none.
pub fn copy_source_bucket(request: &S3Request) -> Option<String> {
    let source = request.headers.copy_source.as_deref()?;
    let source = source.split('?').next().unwrap_or("");
    let source = source.strip_prefix('/').unwrap_or(source);
    let bucket = source.split('/').next().filter(|bucket| !bucket.is_empty())?;
    let mut decoded = Vec::new();
    crate::http::percent_decode_into(bucket.as_bytes(), &mut decoded)
        .then(|| String::from_utf8(decoded).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_request;

    fn classify_text(text: &str) -> (Operation, S3Request) {
        let bytes = text.as_bytes();
        let head = parse_request(bytes).unwrap().unwrap();
        let request = S3Request::parse(bytes, &head).unwrap();
        (classify(head.method, &request), request)
    }

    #[test]
    fn each_request_is_one_operation() {
        let cases = [
            ("GET / HTTP/1.1\r\n\r\n", Operation::ListBuckets),
            (
                "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Operation::ServiceMethodNotAllowed,
            ),
            ("PUT /b HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Operation::CreateBucket),
            ("GET /b?list-type=2 HTTP/1.1\r\n\r\n", Operation::ListObjectsV2),
            ("GET /b HTTP/1.1\r\n\r\n", Operation::ListObjectsV1),
            (
                "POST /b?delete HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Operation::DeleteObjects,
            ),
            ("GET /b/k HTTP/1.1\r\n\r\n", Operation::GetObject),
            ("HEAD /b/k HTTP/1.1\r\n\r\n", Operation::HeadObject),
            (
                "PUT /b/k HTTP/1.1\r\nx-amz-copy-source: /a/k\r\nContent-Length: 0\r\n\r\n",
                Operation::CopyObject,
            ),
            (
                "PUT /b/k?uploadId=u&partNumber=1 HTTP/1.1\r\nx-amz-copy-source: a/k\r\nContent-Length: 0\r\n\r\n",
                Operation::UploadPartCopy,
            ),
            (
                "POST /b/k?uploads HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                Operation::CreateMultipartUpload,
            ),
            (
                "DELETE /b/k?uploadId=u HTTP/1.1\r\n\r\n",
                Operation::AbortMultipartUpload,
            ),
            ("PATCH /b/k HTTP/1.1\r\n\r\n", Operation::NotImplemented),
        ];
        for (text, expected) in cases {
            if let Ok(Some(head)) = parse_request(text.as_bytes()) {
                let request = S3Request::parse(text.as_bytes(), &head).unwrap();
                assert_eq!(classify(head.method, &request), expected, "{text}");
            }
        }
    }

    #[test]
    fn copy_sources_name_their_bucket() {
        for (source, bucket) in [
            ("/src/k", Some("src")),
            ("src/k?versionId=null", Some("src")),
            ("sr%63/k", Some("src")),
            ("/", None),
        ] {
            let text = format!("PUT /b/k HTTP/1.1\r\nx-amz-copy-source: {source}\r\nContent-Length: 0\r\n\r\n");
            let (operation, request) = classify_text(&text);
            assert!(operation.copies());
            assert_eq!(copy_source_bucket(&request).as_deref(), bucket, "{source}");
        }
    }

    #[test]
    fn every_operation_needs_a_key_but_public_reads() {
        assert_eq!(Operation::GetObject.need(), Need::On(Permission::Read));
        assert_eq!(Operation::PutObject.need(), Need::On(Permission::Write));
        assert_eq!(Operation::DeleteObjects.need(), Need::On(Permission::Delete));
        assert_eq!(Operation::ListBuckets.need(), Need::AnyKey);
    }
}
