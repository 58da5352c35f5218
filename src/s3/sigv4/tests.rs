use sha2::{Digest as _, Sha256};

use super::key::hmac;
use super::suite::{self, CASES};
use super::*;

/// The published suite's generic service (see `suite`).
static GENERIC: Profile = Profile {
    service: "service",
    path: PathRule::Generic { normalize: false },
    presigned_payload_from_header: true,
};
static GENERIC_NORMALIZED: Profile = Profile {
    service: "service",
    path: PathRule::Generic { normalize: true },
    presigned_payload_from_header: true,
};

/// The credentials of AWS's S3 documentation examples.
const DOC_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 20130524T000000Z, the documentation examples' time.
const DOC_TIME: i64 = 1_369_353_600;
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A request written out as text: `METHOD target HTTP/1.1`, header lines
/// (a line starting with white space continues the one before), a blank
/// line, the body.
#[derive(Clone)]
struct Request {
    method: String,
    path: Vec<u8>,
    query: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    fn parse(text: &str) -> Request {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let (method, rest) = request_line.split_once(' ').unwrap();
        // The target may hold spaces (the suite's raw paths): the version
        // is the last word.
        let (target, _version) = rest.rsplit_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let value = &mut headers.last_mut().unwrap().1;
                value.push(b'\n');
                value.extend_from_slice(line.as_bytes());
                continue;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_owned(), value.as_bytes().to_vec()));
        }
        Request {
            method: method.to_owned(),
            path: path.as_bytes().to_vec(),
            query: query.as_bytes().to_vec(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    fn without(mut self, name: &str) -> Request {
        self.headers.retain(|(header, _)| !header.eq_ignore_ascii_case(name));
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(header, _)| header.eq_ignore_ascii_case(name))
    }

    fn header_refs(&self) -> Vec<(&str, &[u8])> {
        self.headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect()
    }

    fn view<'a>(&'a self, headers: &'a [(&'a str, &'a [u8])]) -> RequestView<'a> {
        RequestView {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers,
        }
    }

    fn parse_claim(&self, profile: &'static Profile) -> Result<Option<Claim>, AuthError> {
        let headers = self.header_refs();
        parse_with(&self.view(&headers), profile)
    }

    fn claim(&self) -> Claim {
        self.parse_claim(&S3).unwrap().unwrap()
    }

    fn verify(&self, secret: &str, now: i64) -> Result<Verified, AuthError> {
        self.verify_with(&S3, secret, now)
    }

    fn verify_with(&self, profile: &'static Profile, secret: &str, now: i64) -> Result<Verified, AuthError> {
        let headers = self.header_refs();
        let view = self.view(&headers);
        let claim = parse_with(&view, profile)?.expect("a signed request");
        claim.verify(&view, &claim.signing_key(secret), now)
    }

    fn canonical(&self, profile: &'static Profile) -> (String, String) {
        let headers = self.header_refs();
        let view = self.view(&headers);
        let claim = parse_with(&view, profile).unwrap().unwrap();
        let canonical_request = claim.canonical_request(&view).unwrap();
        let string_to_sign = claim.string_to_sign(&canonical_request);
        (
            String::from_utf8(canonical_request).unwrap(),
            String::from_utf8(string_to_sign).unwrap(),
        )
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes).into())
}

/// Run one suite case signed one way: the canonical request, the string to
/// sign and the signature must be the published ones, the right secret must
/// verify and a wrong one must not, showing what was signed.
fn check_suite_case(case: &suite::Case, signed: &suite::Signed) {
    let profile = if case.normalize { &GENERIC_NORMALIZED } else { &GENERIC };
    let mut request = Request::parse(signed.request);
    if !request.has("x-amz-content-sha256") {
        // The suite hashes the body without sending the hash; S3 clients
        // send it, unsigned if need be, as this does.
        let hash = sha256_hex(&request.body);
        request = request.header("X-Amz-Content-Sha256", &hash);
    }
    let (canonical_request, string_to_sign) = request.canonical(profile);
    assert_eq!(
        canonical_request, signed.canonical_request,
        "{}: canonical request",
        case.name
    );
    assert_eq!(string_to_sign, signed.string_to_sign, "{}: string to sign", case.name);
    let verified = request
        .verify_with(profile, suite::SECRET, suite::TIME_UNIX)
        .unwrap_or_else(|error| panic!("{}: {error:?}", case.name));
    assert_eq!(
        hex(&verified.seed_signature),
        signed.signature,
        "{}: signature",
        case.name
    );
    assert_eq!(verified.access_key, "AKIDEXAMPLE");
    assert_eq!(
        verified.presigned,
        request.query.windows(15).any(|name| name == b"X-Amz-Signature")
    );
    assert_eq!(verified.scope.to_string(), "20150830/us-east-1/service/aws4_request");
    match request.verify_with(profile, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEX", suite::TIME_UNIX) {
        Err(AuthError::SignatureDoesNotMatch(Some(mismatch))) => {
            assert_eq!(
                mismatch.canonical_request,
                signed.canonical_request.as_bytes(),
                "{}",
                case.name
            );
            assert_eq!(
                mismatch.string_to_sign,
                signed.string_to_sign.as_bytes(),
                "{}",
                case.name
            );
            assert_eq!(mismatch.signature_provided, signed.signature, "{}", case.name);
        }
        other => panic!("{}: a wrong secret gave {other:?}", case.name),
    }
}

#[test]
fn suite_header_signed_cases_verify() {
    assert_eq!(CASES.len(), 35);
    for case in CASES {
        check_suite_case(case, &case.header);
    }
}

#[test]
fn suite_presigned_cases_verify() {
    for case in CASES {
        check_suite_case(case, &case.query);
    }
}

#[test]
fn suite_presigned_cases_expire_after_their_hour() {
    let case = CASES.iter().find(|case| case.name == "get-vanilla").unwrap();
    let request = Request::parse(case.query.request).header("x-amz-content-sha256", EMPTY_SHA256);
    assert!(request
        .verify_with(&GENERIC_NORMALIZED, suite::SECRET, suite::TIME_UNIX + 3600)
        .is_ok());
    let expired = request.verify_with(&GENERIC_NORMALIZED, suite::SECRET, suite::TIME_UNIX + 3601);
    assert!(
        matches!(
            expired,
            Err(AuthError::Expired {
                expires_seconds: 3600,
                ..
            })
        ),
        "{expired:?}"
    );
}

// AWS's S3 documentation examples (API Reference: sig-v4-header-based-auth,
// sigv4-query-string-auth, sigv4-streaming, sigv4-streaming-trailers,
// sigv4-post-example), with their credentials and 20130524T000000Z.

/// GET Object with a Range: S3's "Example: GET Object".
const DOC_GET_OBJECT: &str = "GET /test.txt HTTP/1.1
Host: examplebucket.s3.amazonaws.com
Range: bytes=0-9
x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
x-amz-date: 20130524T000000Z
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41

";

#[test]
fn doc_get_object() {
    let request = Request::parse(DOC_GET_OBJECT);
    let (canonical_request, string_to_sign) = request.canonical(&S3);
    assert_eq!(
        canonical_request,
        "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
         x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    );
    let verified = request.verify(DOC_SECRET, DOC_TIME).unwrap();
    assert_eq!(verified.access_key, DOC_ACCESS_KEY);
    assert_eq!(
        verified.payload,
        Payload::Hash(decode_hex_32(EMPTY_SHA256.as_bytes()).unwrap())
    );
    assert!(!verified.presigned);
    assert!(verified.chunk_signer().is_none());
}

/// PUT Object: S3's "Example: PUT Object", the `Date` header signed too.
const DOC_PUT_OBJECT: &str = "PUT /test$file.text HTTP/1.1
Host: examplebucket.s3.amazonaws.com
Date: Fri, 24 May 2013 00:00:00 GMT
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd
x-amz-date: 20130524T000000Z
x-amz-storage-class: REDUCED_REDUNDANCY
x-amz-content-sha256: 44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072

Welcome to Amazon S3.";

#[test]
fn doc_put_object() {
    let request = Request::parse(DOC_PUT_OBJECT);
    let (canonical_request, string_to_sign) = request.canonical(&S3);
    assert_eq!(
        canonical_request,
        "PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\nhost:examplebucket.s3.amazonaws.com\n\
         x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n\
         x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n\
         date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n\
         44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    assert_eq!(
        string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
    );
    let verified = request.verify(DOC_SECRET, DOC_TIME).unwrap();
    // The payload to check is the body's hash.
    assert_eq!(verified.payload, Payload::Hash(Sha256::digest(&request.body).into()));
    // A client that percent-encodes the `$` signs the same request.
    let mut encoded = request.clone();
    encoded.path = b"/test%24file.text".to_vec();
    assert!(encoded.verify(DOC_SECRET, DOC_TIME).is_ok());
}

/// GET Bucket Lifecycle: `?lifecycle`, a parameter without a value.
#[test]
fn doc_get_bucket_lifecycle() {
    let request = Request::parse(
        "GET /?lifecycle HTTP/1.1
Host: examplebucket.s3.amazonaws.com
x-amz-date: 20130524T000000Z
x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543

",
    );
    let (canonical_request, string_to_sign) = request.canonical(&S3);
    assert!(
        canonical_request.starts_with("GET\n/\nlifecycle=\nhost:"),
        "{canonical_request}"
    );
    assert!(string_to_sign.ends_with("\n9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"));
    request.verify(DOC_SECRET, DOC_TIME).unwrap();
}

/// GET Bucket (List Objects): parameters sorted.
#[test]
fn doc_list_objects() {
    let request = Request::parse(
        "GET /?max-keys=2&prefix=J HTTP/1.1
Host: examplebucket.s3.amazonaws.com
x-amz-date: 20130524T000000Z
x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-content-sha256;x-amz-date,Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7

",
    );
    let (canonical_request, string_to_sign) = request.canonical(&S3);
    assert!(
        canonical_request.starts_with("GET\n/\nmax-keys=2&prefix=J\n"),
        "{canonical_request}"
    );
    assert!(string_to_sign.ends_with("\ndf57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"));
    request.verify(DOC_SECRET, DOC_TIME).unwrap();
    // Given in the other order, the parameters sign the same.
    let mut reordered = request.clone();
    reordered.query = b"prefix=J&max-keys=2".to_vec();
    reordered.verify(DOC_SECRET, DOC_TIME).unwrap();
}

/// The presigned URL of S3's "Authenticating Requests: Using Query
/// Parameters" example: a GET of test.txt valid for a day.
const DOC_PRESIGNED: &str = "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1
Host: examplebucket.s3.amazonaws.com

";

#[test]
fn doc_presigned_url() {
    let request = Request::parse(DOC_PRESIGNED);
    let (canonical_request, string_to_sign) = request.canonical(&S3);
    assert_eq!(
        canonical_request,
        "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
         host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
    );
    assert_eq!(
        string_to_sign,
        "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
         3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    );
    let verified = request.verify(DOC_SECRET, DOC_TIME + 3600).unwrap();
    assert!(verified.presigned);
    assert_eq!(verified.payload, Payload::Unsigned);
    // An unsigned x-amz-content-sha256 header changes nothing.
    let hashed = request.clone().header("x-amz-content-sha256", EMPTY_SHA256);
    assert_eq!(hashed.verify(DOC_SECRET, DOC_TIME).unwrap().payload, Payload::Unsigned);
}

#[test]
fn presigned_url_expires_after_its_expires_seconds() {
    let request = Request::parse(DOC_PRESIGNED);
    assert!(request.verify(DOC_SECRET, DOC_TIME + 86_400).is_ok());
    let error = request.verify(DOC_SECRET, DOC_TIME + 86_401).unwrap_err();
    assert_eq!(
        (error.status(), error.code(), error.message().as_str()),
        (403, "AccessDenied", "Request has expired")
    );
    assert_eq!(
        error.details(),
        vec![
            ("X-Amz-Expires", "86400".to_owned()),
            ("Expires", "2013-05-25T00:00:00Z".to_owned()),
            ("ServerTime", "2013-05-25T00:00:01Z".to_owned()),
        ]
    );
    // Expired is told before a wrong signature.
    assert!(matches!(
        request.verify("wrong", DOC_TIME + 86_401),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn presigned_url_dated_in_the_future_is_refused() {
    let request = Request::parse(DOC_PRESIGNED);
    assert!(request.verify(DOC_SECRET, DOC_TIME - SKEW_SECONDS_MAX).is_ok());
    let error = request.verify(DOC_SECRET, DOC_TIME - SKEW_SECONDS_MAX - 1).unwrap_err();
    assert_eq!(error, AuthError::NotYetValid);
    assert_eq!((error.status(), error.code()), (403, "AccessDenied"));
}

/// Replace `from` with `to` in the query of the documentation's presigned URL.
fn presigned_with(from: &str, to: &str) -> Request {
    let mut request = Request::parse(DOC_PRESIGNED);
    let query = String::from_utf8(request.query).unwrap();
    assert!(query.contains(from), "{from}");
    request.query = query.replacen(from, to, 1).into_bytes();
    request
}

#[test]
fn presigned_expires_longer_than_a_week_is_refused() {
    let week = presigned_with("X-Amz-Expires=86400", "X-Amz-Expires=604800");
    assert!(week.parse_claim(&S3).is_ok());
    let longer = presigned_with("X-Amz-Expires=86400", "X-Amz-Expires=604801");
    let error = longer.parse_claim(&S3).unwrap_err();
    assert_eq!(
        error,
        AuthError::QueryMalformed("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    );
    assert_eq!(
        (error.status(), error.code()),
        (400, "AuthorizationQueryParametersError")
    );
    for (expires, message) in [
        ("-1", "X-Amz-Expires must be non-negative"),
        ("soon", "X-Amz-Expires should be a number"),
        ("", "X-Amz-Expires should be a number"),
        ("99999999999999999999999", "X-Amz-Expires should be a number"),
    ] {
        let request = presigned_with("X-Amz-Expires=86400", &format!("X-Amz-Expires={expires}"));
        assert_eq!(
            request.parse_claim(&S3).unwrap_err(),
            AuthError::QueryMalformed(message),
            "{expires}"
        );
    }
}

#[test]
fn presigned_parameters_are_checked() {
    let missing = presigned_with("&X-Amz-Date=20130524T000000Z", "");
    assert_eq!(
        missing.parse_claim(&S3).unwrap_err(),
        AuthError::QueryMalformed(PRESIGNED_REQUIRES)
    );
    let twice = presigned_with("&X-Amz-Expires=86400", "&X-Amz-Expires=86400&X-Amz-Expires=1");
    assert!(matches!(twice.parse_claim(&S3), Err(AuthError::QueryMalformed(_))));
    let algorithm = presigned_with("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1");
    assert!(matches!(algorithm.parse_claim(&S3), Err(AuthError::QueryMalformed(_))));
    let date = presigned_with("X-Amz-Date=20130524T000000Z", "X-Amz-Date=20130524");
    assert!(matches!(date.parse_claim(&S3), Err(AuthError::QueryMalformed(_))));
    let day = presigned_with("X-Amz-Date=20130524T000000Z", "X-Amz-Date=20130525T000000Z");
    assert_eq!(
        day.parse_claim(&S3).unwrap_err(),
        AuthError::QueryMalformed("Invalid credential date. Date is not the same as X-Amz-Date.")
    );
    let service = presigned_with("%2Fs3%2F", "%2Fec2%2F");
    let error = service.parse_claim(&S3).unwrap_err();
    assert!(matches!(error, AuthError::QueryCredentialMalformed(_)));
    assert_eq!(error.code(), "AuthorizationQueryParametersError");
    assert!(error
        .message()
        .starts_with("Error parsing the X-Amz-Credential parameter; incorrect service"));
    let signature = presigned_with("X-Amz-Signature=aeeed9bb", "X-Amz-Signature=zzeed9bb");
    assert!(matches!(signature.parse_claim(&S3), Err(AuthError::QueryMalformed(_))));
}

#[test]
fn presigned_url_must_sign_host() {
    let request = presigned_with("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range");
    assert_eq!(
        request.parse_claim(&S3).unwrap_err(),
        AuthError::HeadersNotSigned("host".to_owned())
    );
}

#[test]
fn presigned_url_refuses_unsigned_amz_headers() {
    // Someone given a presigned PUT must not turn it into a copy.
    let request = Request::parse(DOC_PRESIGNED).header("X-Amz-Copy-Source", "/secrets/key");
    let error = request.verify(DOC_SECRET, DOC_TIME).unwrap_err();
    assert_eq!(error, AuthError::HeadersNotSigned("x-amz-copy-source".to_owned()));
    assert_eq!((error.status(), error.code()), (403, "AccessDenied"));
    assert_eq!(
        error.details(),
        vec![("HeadersNotSigned", "x-amz-copy-source".to_owned())]
    );
}

/// The chunked upload of S3's "Example: PUT Object" (sigv4-streaming):
/// 66560 bytes of `a` in chunks of 65536, 1024 and 0.
const DOC_STREAMING: &str = "PUT /examplebucket/chunkObject.txt HTTP/1.1
Host: s3.amazonaws.com
x-amz-date: 20130524T000000Z
x-amz-storage-class: REDUCED_REDUNDANCY
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9
x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD
Content-Encoding: aws-chunked
x-amz-decoded-content-length: 66560
Content-Length: 66824

";

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[test]
fn doc_streaming_seed_and_chunk_signatures() {
    let request = Request::parse(DOC_STREAMING);
    let (_, string_to_sign) = request.canonical(&S3);
    assert!(string_to_sign.ends_with("\ncee3fed04b70f867d036f722359b0b1f2f0e5dc0efadbc082b76c4c60e316455"));
    let verified = request.verify(DOC_SECRET, DOC_TIME).unwrap();
    assert_eq!(verified.payload, Payload::StreamingSigned);
    let mut signer = verified.chunk_signer().unwrap();
    signer
        .chunk(
            &sha256(&[b'a'; 65_536]),
            b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        )
        .unwrap();
    signer
        .chunk(
            &sha256(&[b'a'; 1024]),
            b"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        )
        .unwrap();
    signer
        .chunk(
            &sha256(b""),
            b"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        )
        .unwrap();
}

#[test]
fn tampered_chunk_signature_breaks_the_chain() {
    let verified = Request::parse(DOC_STREAMING).verify(DOC_SECRET, DOC_TIME).unwrap();
    let mut signer = verified.chunk_signer().unwrap();
    let error = signer
        .chunk(
            &sha256(&[b'a'; 65_536]),
            b"bd80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        )
        .unwrap_err();
    assert_eq!((error.status(), error.code()), (403, "SignatureDoesNotMatch"));
    // Nothing after a broken link verifies, not even the right signature.
    let next = signer.chunk(
        &sha256(&[b'a'; 65_536]),
        b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    );
    assert!(next.is_err());

    // Tampered data, and chunks out of order, fail too.
    let mut signer = verified.chunk_signer().unwrap();
    assert!(signer
        .chunk(
            &sha256(&[b'b'; 65_536]),
            b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        )
        .is_err());
    let mut signer = verified.chunk_signer().unwrap();
    assert!(signer
        .chunk(
            &sha256(&[b'a'; 1024]),
            b"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        )
        .is_err());
    // A signature that is not 64 hex digits is a mismatch.
    let mut signer = verified.chunk_signer().unwrap();
    assert!(signer.chunk(&sha256(b""), b"ad80").is_err());
}

/// sigv4-streaming-trailers: the same body, then a CRC32C trailer signed.
const DOC_STREAMING_TRAILER: &str = "PUT /examplebucket/chunkObject.txt HTTP/1.1
Host: s3.amazonaws.com
x-amz-date: 20130524T000000Z
x-amz-storage-class: REDUCED_REDUNDANCY
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer,Signature=106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e
x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
Content-Encoding: aws-chunked
x-amz-decoded-content-length: 66560
x-amz-trailer: x-amz-checksum-crc32c
Content-Length: 66824

";

#[test]
fn doc_streaming_trailer_signatures() {
    let request = Request::parse(DOC_STREAMING_TRAILER);
    let (_, string_to_sign) = request.canonical(&S3);
    assert!(string_to_sign.ends_with("\n44d48b8c2f70eae815a0198cc73d7a546a73a93359c070abbaa5e6c7de112559"));
    let verified = request.verify(DOC_SECRET, DOC_TIME).unwrap();
    assert_eq!(verified.payload, Payload::StreamingSignedTrailer);
    let mut signer = verified.chunk_signer().unwrap();
    signer
        .chunk(
            &sha256(&[b'a'; 65_536]),
            b"b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
        )
        .unwrap();
    signer
        .chunk(
            &sha256(&[b'a'; 1024]),
            b"1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
        )
        .unwrap();
    signer
        .chunk(
            &sha256(b""),
            b"2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
        )
        .unwrap();
    let trailers = [
        ("x-amz-checksum-crc32c", "sOO8/Q=="),
        (
            "x-amz-trailer-signature",
            "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
        ),
    ];
    let trailer_hash = trailer_sha256(trailers);
    assert_eq!(
        hex(&trailer_hash),
        "1e376db7e1a34a8ef1c4bcee131a2d60a1cb62503747488624e10995f448d774"
    );
    let mut tampered = signer.clone();
    signer
        .trailer(
            &trailer_hash,
            b"d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
        )
        .unwrap();
    let other = trailer_sha256([("x-amz-checksum-crc32c", "AAAAAA==")]);
    assert!(tampered
        .trailer(
            &other,
            b"d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
        )
        .is_err());
}

#[test]
fn streaming_unsigned_trailer_has_no_chunk_signer() {
    let request = Request::parse(&DOC_STREAMING.replace(
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    ));
    let claim = request.claim();
    assert_eq!(claim.payload, Payload::StreamingUnsignedTrailer);
    // The seed signature was over the other mode: it no longer verifies.
    assert!(matches!(
        request.verify(DOC_SECRET, DOC_TIME),
        Err(AuthError::SignatureDoesNotMatch(Some(_)))
    ));
}

/// S3's "Example: Browser-Based Upload using HTTP POST": the policy as sent
/// (base64) and its signature.
const DOC_POST_POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
const DOC_POST_SIGNATURE: &[u8] = b"8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e";

#[test]
fn doc_post_policy_signature() {
    let claim = PostClaim::parse(
        Some(b"AWS4-HMAC-SHA256"),
        Some(b"AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"),
        Some(b"20151229T000000Z"),
        Some(DOC_POST_SIGNATURE),
    )
    .unwrap();
    assert_eq!(claim.access_key(), DOC_ACCESS_KEY);
    assert_eq!(claim.scope().to_string(), "20151229/us-east-1/s3/aws4_request");
    assert_eq!(claim.timestamp().unix(), 1_451_347_200);
    let key = SigningKey::derive(DOC_SECRET, claim.scope());
    claim.verify(&key, DOC_POST_POLICY.as_bytes()).unwrap();
    verify_post_policy(&key, DOC_POST_POLICY.as_bytes(), DOC_POST_SIGNATURE).unwrap();
    // One byte of the policy changed, or another secret: refused.
    let mut changed = DOC_POST_POLICY.as_bytes().to_vec();
    changed[10] ^= 1;
    assert_eq!(
        claim.verify(&key, &changed),
        Err(AuthError::SignatureDoesNotMatch(None))
    );
    let other = SigningKey::derive("another secret", claim.scope());
    assert!(claim.verify(&other, DOC_POST_POLICY.as_bytes()).is_err());
    assert!(verify_post_policy(&key, DOC_POST_POLICY.as_bytes(), b"8afd").is_err());
}

#[test]
fn post_form_fields_are_checked() {
    let missing = PostClaim::parse(
        Some(b"AWS4-HMAC-SHA256"),
        None,
        Some(b"20151229T000000Z"),
        Some(DOC_POST_SIGNATURE),
    );
    let error = missing.unwrap_err();
    assert_eq!(error, AuthError::PostFieldMissing("x-amz-credential"));
    assert_eq!((error.status(), error.code()), (400, "InvalidArgument"));
    assert!(error.message().contains("'x-amz-credential'"));
    let day = PostClaim::parse(
        Some(b"AWS4-HMAC-SHA256"),
        Some(b"AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"),
        Some(b"20151230T000000Z"),
        Some(DOC_POST_SIGNATURE),
    );
    assert!(day.is_err());
}

// Edge cases, on requests signed here with the documentation's key.

/// Sign `request` in its `Authorization` header as an S3 client would,
/// covering `signed_headers`.
fn sign(request: Request, signed_headers: &str, secret: &str) -> Request {
    let placeholder = format!(
        "AWS4-HMAC-SHA256 Credential={DOC_ACCESS_KEY}/20130524/us-east-1/s3/aws4_request, \
         SignedHeaders={signed_headers}, Signature={}",
        "0".repeat(64)
    );
    let mut request = request.without("authorization").header("Authorization", &placeholder);
    let headers = request.header_refs();
    let view = request.view(&headers);
    let claim = parse(&view).unwrap().unwrap();
    let string_to_sign = claim.string_to_sign(&claim.canonical_request(&view).unwrap());
    let signature = hex(&hmac(&claim.signing_key(secret).0, &string_to_sign));
    let authorization = placeholder.replace(&"0".repeat(64), &signature);
    request = request.without("authorization").header("Authorization", &authorization);
    request
}

fn plain_get() -> Request {
    Request::parse(
        "GET /photos/a%20b.jpg?versionId=x HTTP/1.1
Host: 127.0.0.1:3000
x-amz-date: 20130524T000000Z
x-amz-content-sha256: UNSIGNED-PAYLOAD

",
    )
}

const SIGNED: &str = "host;x-amz-content-sha256;x-amz-date";

#[test]
fn signed_here_verifies() {
    let request = sign(plain_get(), SIGNED, DOC_SECRET);
    let verified = request.verify(DOC_SECRET, DOC_TIME).unwrap();
    assert_eq!(verified.payload, Payload::Unsigned);
    assert_eq!(verified.timestamp.as_str(), "20130524T000000Z");
}

#[test]
fn header_auth_outside_fifteen_minutes_is_too_skewed() {
    let request = sign(plain_get(), SIGNED, DOC_SECRET);
    assert!(request.verify(DOC_SECRET, DOC_TIME + SKEW_SECONDS_MAX).is_ok());
    assert!(request.verify(DOC_SECRET, DOC_TIME - SKEW_SECONDS_MAX).is_ok());
    for now in [DOC_TIME + SKEW_SECONDS_MAX + 1, DOC_TIME - SKEW_SECONDS_MAX - 1] {
        let error = request.verify(DOC_SECRET, now).unwrap_err();
        assert!(matches!(error, AuthError::TimeTooSkewed { .. }), "{error:?}");
        assert_eq!((error.status(), error.code()), (403, "RequestTimeTooSkewed"));
    }
    let error = request.verify(DOC_SECRET, DOC_TIME + 3600).unwrap_err();
    assert_eq!(
        error.details(),
        vec![
            ("RequestTime", "20130524T000000Z".to_owned()),
            ("ServerTime", "2013-05-24T01:00:00Z".to_owned()),
            ("MaxAllowedSkewMilliseconds", "900000".to_owned()),
        ]
    );
}

#[test]
fn wrong_secret_does_not_match_and_shows_what_was_signed() {
    let request = sign(plain_get(), SIGNED, DOC_SECRET);
    let error = request
        .verify("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ", DOC_TIME)
        .unwrap_err();
    assert_eq!((error.status(), error.code()), (403, "SignatureDoesNotMatch"));
    let details = error.details();
    let names: Vec<&str> = details.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "AWSAccessKeyId",
            "StringToSign",
            "SignatureProvided",
            "StringToSignBytes",
            "CanonicalRequest",
            "CanonicalRequestBytes"
        ]
    );
    assert_eq!(details[0].1, DOC_ACCESS_KEY);
    assert!(details[1].1.starts_with("AWS4-HMAC-SHA256\n20130524T000000Z\n"));
    assert!(details[3].1.starts_with("41 57 53 34 2d "), "{}", details[3].1);
    assert!(
        details[4].1.starts_with("GET\n/photos/a%20b.jpg\nversionId=x\n"),
        "{}",
        details[4].1
    );
    // No secret in anything that can be shown or logged.
    let shown = format!("{error} {error:?} {details:?}");
    assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("EXAMPLEKEZ"));
}

#[test]
fn signature_compare_fails_alike_wherever_the_difference_is() {
    // The comparison is hmac's constant-time `verify_slice`; a difference in
    // the first byte and one in the last are refused the same way.
    let request = sign(plain_get(), SIGNED, DOC_SECRET);
    let authorization = String::from_utf8(
        request
            .headers
            .iter()
            .find(|(name, _)| name == "Authorization")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let (prefix, signature) = authorization.rsplit_once("Signature=").unwrap();
    for position in [0, 63] {
        let mut digits = signature.as_bytes().to_vec();
        digits[position] = if digits[position] == b'0' { b'1' } else { b'0' };
        let changed = format!("{prefix}Signature={}", String::from_utf8(digits).unwrap());
        let request = request
            .clone()
            .without("authorization")
            .header("Authorization", &changed);
        assert!(matches!(
            request.verify(DOC_SECRET, DOC_TIME),
            Err(AuthError::SignatureDoesNotMatch(Some(_)))
        ));
    }
}

#[test]
fn host_must_be_signed() {
    let request = sign(plain_get(), SIGNED, DOC_SECRET);
    let unsigned_host = request.clone().without("authorization").header(
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=x-amz-content-sha256;x-amz-date, \
             Signature=0000000000000000000000000000000000000000000000000000000000000000",
    );
    let error = unsigned_host.parse_claim(&S3).unwrap_err();
    assert_eq!(error, AuthError::HeadersNotSigned("host".to_owned()));
}

#[test]
fn unsigned_amz_headers_are_refused_but_content_sha256() {
    let request = sign(plain_get(), "host;x-amz-date", DOC_SECRET);
    // x-amz-content-sha256 may go unsigned, as S3 allows.
    request.verify(DOC_SECRET, DOC_TIME).unwrap();
    let extra = request
        .header("x-amz-meta-a", "1")
        .header("X-Amz-Meta-A", "2")
        .header("x-amz-tagging", "t=1");
    let error = extra.verify(DOC_SECRET, DOC_TIME).unwrap_err();
    assert_eq!(
        error,
        AuthError::HeadersNotSigned("x-amz-meta-a, x-amz-tagging".to_owned())
    );
}

#[test]
fn date_header_stands_in_for_x_amz_date() {
    let request = plain_get()
        .without("x-amz-date")
        .header("Date", "Fri, 24 May 2013 00:00:00 GMT");
    let request = sign(request, "date;host;x-amz-content-sha256", DOC_SECRET);
    let (_, string_to_sign) = request.canonical(&S3);
    assert!(string_to_sign.starts_with("AWS4-HMAC-SHA256\n20130524T000000Z\n"));
    request.verify(DOC_SECRET, DOC_TIME).unwrap();
}

#[test]
fn missing_or_bad_date_is_access_denied() {
    for request in [
        plain_get().without("x-amz-date"),
        plain_get().without("x-amz-date").header("Date", "yesterday"),
        plain_get()
            .without("x-amz-date")
            .header("x-amz-date", "20130524T250000Z"),
    ] {
        let request = request.header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256, \
             Signature=0000000000000000000000000000000000000000000000000000000000000000",
        );
        let error = request.parse_claim(&S3).unwrap_err();
        assert_eq!(error, AuthError::MissingDate);
        assert_eq!(
            (error.status(), error.code(), error.message().as_str()),
            (
                403,
                "AccessDenied",
                "AWS authentication requires a valid Date or x-amz-date header"
            )
        );
    }
}

fn with_authorization(value: &str) -> Request {
    plain_get().header("Authorization", value)
}

const GOOD_AUTHORIZATION: &str =
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
     SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
     Signature=0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn malformed_authorization_headers() {
    assert!(with_authorization(GOOD_AUTHORIZATION).parse_claim(&S3).is_ok());
    for (from, to) in [
        ("/us-east-1/", "/"),
        ("/20130524/", "/20130525/"),
        ("/20130524/", "/2013052/"),
        ("/s3/", "/ec2/"),
        ("aws4_request", "aws5_request"),
        ("Credential=AKIAIOSFODNN7EXAMPLE", "Credential="),
        ("SignedHeaders=", "SignedHeader="),
        ("SignedHeaders=host;", "SignedHeaders=host;;"),
        ("Signature=0000", "Signature=zz00"),
        (", Signature=", ", Signature=00, Signature="),
        ("Signature=", "Signature"),
    ] {
        let value = GOOD_AUTHORIZATION.replacen(from, to, 1);
        let error = with_authorization(&value).parse_claim(&S3).unwrap_err();
        assert!(matches!(error, AuthError::HeaderMalformed(_)), "{to}: {error:?}");
        assert_eq!((error.status(), error.code()), (400, "AuthorizationHeaderMalformed"));
        assert!(error.message().starts_with("The authorization header is malformed; "));
    }
    let twice = with_authorization(GOOD_AUTHORIZATION).header("Authorization", GOOD_AUTHORIZATION);
    assert!(matches!(twice.parse_claim(&S3), Err(AuthError::HeaderMalformed(_))));
    let other = with_authorization("Bearer abc").parse_claim(&S3).unwrap_err();
    assert_eq!(other, AuthError::InvalidArgument("Unsupported Authorization Type"));
    let sigv4a = with_authorization(&GOOD_AUTHORIZATION.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"));
    assert!(matches!(sigv4a.parse_claim(&S3), Err(AuthError::InvalidArgument(_))));
}

#[test]
fn region_is_any() {
    let value = GOOD_AUTHORIZATION.replace("us-east-1", "garage");
    let claim = with_authorization(&value).claim();
    assert_eq!(claim.scope().region(), "garage");
    assert_eq!(claim.access_key(), DOC_ACCESS_KEY);
}

#[test]
fn content_sha256_is_required_and_checked() {
    let missing = with_authorization(GOOD_AUTHORIZATION).without("x-amz-content-sha256");
    let error = missing.parse_claim(&S3).unwrap_err();
    assert_eq!(error, AuthError::MissingContentSha256);
    assert_eq!((error.status(), error.code()), (400, "InvalidRequest"));
    for value in ["", "abc", "STREAMING-PAYLOAD", &"g".repeat(64)] {
        let request = with_authorization(GOOD_AUTHORIZATION)
            .without("x-amz-content-sha256")
            .header("x-amz-content-sha256", value);
        assert_eq!(
            request.parse_claim(&S3).unwrap_err(),
            AuthError::InvalidArgument(CONTENT_SHA256_VALUES)
        );
    }
    let upper = with_authorization(GOOD_AUTHORIZATION)
        .without("x-amz-content-sha256")
        .header("x-amz-content-sha256", &EMPTY_SHA256.to_ascii_uppercase());
    assert!(matches!(upper.claim().payload, Payload::Hash(_)));
}

#[test]
fn sigv2_is_refused() {
    for request in [
        with_authorization("AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg="),
        Request::parse(
            "GET /photos/a.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjbyPxybd%2FZ8 HTTP/1.1
Host: 127.0.0.1

",
        ),
    ] {
        let error = request.parse_claim(&S3).unwrap_err();
        assert_eq!(error, AuthError::SigV2);
        assert_eq!((error.status(), error.code()), (400, "InvalidRequest"));
        assert!(error.message().contains("Please use AWS4-HMAC-SHA256"));
    }
}

#[test]
fn anonymous_requests_have_no_claim() {
    assert!(plain_get().parse_claim(&S3).unwrap().is_none());
    // `Signature` alone is no auth parameter (a SigV2 URL has AWSAccessKeyId).
    let mut request = plain_get();
    request.query = b"list-type=2&prefix=Signature".to_vec();
    assert!(request.parse_claim(&S3).unwrap().is_none());
}

#[test]
fn one_mechanism_at_a_time() {
    let mut request = with_authorization(GOOD_AUTHORIZATION);
    request.query = Request::parse(DOC_PRESIGNED).query;
    let error = request.parse_claim(&S3).unwrap_err();
    assert!(matches!(error, AuthError::InvalidArgument(MULTIPLE_MECHANISMS)));
}

#[test]
fn security_tokens_are_refused() {
    let header = with_authorization(GOOD_AUTHORIZATION).header("X-Amz-Security-Token", "token");
    assert_eq!(header.parse_claim(&S3).unwrap_err(), AuthError::InvalidToken);
    let query = presigned_with(
        "&X-Amz-SignedHeaders",
        "&X-Amz-Security-Token=token&X-Amz-SignedHeaders",
    );
    let error = query.parse_claim(&S3).unwrap_err();
    assert_eq!(error, AuthError::InvalidToken);
    assert_eq!((error.status(), error.code()), (400, "InvalidToken"));
}

#[test]
fn unknown_key_error() {
    let error = AuthError::unknown_key("NOSUCHKEY");
    assert_eq!((error.status(), error.code()), (403, "InvalidAccessKeyId"));
    assert_eq!(error.details(), vec![("AWSAccessKeyId", "NOSUCHKEY".to_owned())]);
}

// Canonicalisation edge cases.

fn canonical_query_of(query: &str, presigned: bool) -> String {
    let mut out = Vec::new();
    canonical_query(query.as_bytes(), presigned, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn canonical_query_encodes_sorts_and_keeps_plus_literal() {
    // `+` is a literal plus (mkv's query reading); a space is %20.
    assert_eq!(canonical_query_of("prefix=a+b", false), "prefix=a%2Bb");
    assert_eq!(canonical_query_of("prefix=a%20b", false), "prefix=a%20b");
    assert_eq!(canonical_query_of("prefix=a%2bb", false), "prefix=a%2Bb");
    // Names then values, compared as encoded.
    assert_eq!(canonical_query_of("b=2&a=2&a=1&a-b=0", false), "a=1&a=2&a-b=0&b=2");
    assert_eq!(canonical_query_of("uploads&acl=", false), "acl=&uploads=");
    assert_eq!(canonical_query_of("k=%7e%2F/&", false), "k=~%2F%2F");
    assert_eq!(canonical_query_of("", false), "");
    // A presigned URL's signature is not signed; elsewhere it is a parameter.
    assert_eq!(canonical_query_of("X-Amz-Signature=1&x=2", true), "x=2");
    assert_eq!(
        canonical_query_of("X-Amz-Signature=1&x=2", false),
        "X-Amz-Signature=1&x=2"
    );
    let mut out = Vec::new();
    assert_eq!(canonical_query(b"a=%zz", false, &mut out), Err(AuthError::InvalidUri));
}

fn canonical_uri_of(path: &str) -> String {
    let mut out = Vec::new();
    PathRule::S3.canonical_uri(path.as_bytes(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn s3_paths_are_encoded_once_and_not_normalised() {
    assert_eq!(canonical_uri_of("/bucket/a/../b//c/./d"), "/bucket/a/../b//c/./d");
    assert_eq!(canonical_uri_of("/bucket/a%20b+c$%24"), "/bucket/a%20b%2Bc%24%24");
    assert_eq!(canonical_uri_of("/bucket/%E1%88%B4"), "/bucket/%E1%88%B4");
    assert_eq!(canonical_uri_of("/bucket/%e1%88%b4"), "/bucket/%E1%88%B4");
    assert_eq!(canonical_uri_of("/bucket/%7E~"), "/bucket/~~");
    assert_eq!(canonical_uri_of(""), "/");
    let mut out = Vec::new();
    assert_eq!(
        PathRule::S3.canonical_uri(b"/a%2", &mut out),
        Err(AuthError::InvalidUri)
    );
}

#[test]
fn header_values_are_trimmed_and_joined() {
    let mut out = Vec::new();
    push_trimmed(b"  a \t  b\r\n c  ", &mut out);
    assert_eq!(out, b"a b c");
    let request = plain_get()
        .header("X-Amz-Meta-Tag", " one  two ")
        .header("x-amz-meta-tag", "three");
    let request = sign(
        request,
        "host;x-amz-content-sha256;x-amz-date;x-amz-meta-tag",
        DOC_SECRET,
    );
    let (canonical_request, _) = request.canonical(&S3);
    assert!(
        canonical_request.contains("\nx-amz-meta-tag:one two,three\n"),
        "{canonical_request}"
    );
    request.verify(DOC_SECRET, DOC_TIME).unwrap();
}

#[test]
fn dot_segments_of_generic_paths() {
    for (path, normalized) in [
        ("/", "/"),
        ("/example/..", "/"),
        ("/example1/example2/../..", "/"),
        ("/./", "/"),
        ("/./example", "/example"),
        ("//example//", "/example/"),
        ("/a/b/..", "/a/"),
        ("/a/./b", "/a/b"),
    ] {
        assert_eq!(remove_dot_segments(path.as_bytes()), normalized.as_bytes(), "{path}");
    }
}

// Times.

#[test]
fn timestamps_parse_and_print() {
    let time = Timestamp::parse_basic(b"20130524T000000Z").unwrap();
    assert_eq!(time.unix(), DOC_TIME);
    assert_eq!((time.as_str(), time.day()), ("20130524T000000Z", "20130524"));
    assert_eq!(time.iso8601(), "2013-05-24T00:00:00Z");
    assert_eq!(
        Timestamp::parse_basic(b"20150830T123600Z").unwrap().unix(),
        suite::TIME_UNIX
    );
    assert_eq!(Timestamp::parse_basic(b"19700101T000000Z").unwrap().unix(), 0);
    assert_eq!(Timestamp::parse_basic(b"20000229T235959Z").unwrap().unix(), 951_868_799);
    for bad in [
        "20130229T000000Z",
        "19000229T000000Z",
        "20131324T000000Z",
        "20130500T000000Z",
        "20130524T240000Z",
        "20130524T006000Z",
        "20130524T000060Z",
        "20130524 000000Z",
        "20130524T000000",
        "2013-05-24T00:00:00Z",
        "+0130524T000000Z",
    ] {
        assert!(Timestamp::parse_basic(bad.as_bytes()).is_none(), "{bad}");
    }
    for unix in [0, 951_868_799, DOC_TIME, 4_102_444_800, 253_402_300_799] {
        let time = Timestamp::from_unix(unix).unwrap();
        assert_eq!(Timestamp::parse_basic(time.as_str().as_bytes()), Some(time), "{unix}");
    }
    assert!(Timestamp::from_unix(-1).is_none());
    assert!(Timestamp::from_unix(253_402_300_800).is_none());
    let http = Timestamp::parse_http_date(b"Fri, 24 May 2013 00:00:00 GMT").unwrap();
    assert_eq!(http, time);
    assert!(Timestamp::parse_http_date(b"Friday").is_none());
    // A zero numeric offset is GMT (botocore's `Date` header).
    assert_eq!(
        Timestamp::parse_http_date(b"Fri, 24 May 2013 00:00:00 -0000"),
        Some(http)
    );
    assert_eq!(
        Timestamp::parse_http_date(b"Fri, 24 May 2013 00:00:00 +0000"),
        Some(http)
    );
    assert!(Timestamp::now_unix() > DOC_TIME);
}

// Keys.

#[test]
fn signing_key_derivation_matches_aws() {
    // The derived key of AWS's POST example (20151229/us-east-1/s3), and the
    // HMAC chain of the general reference's example (20150830/us-east-1/iam).
    let scope = Scope {
        date: *b"20151229",
        region: "us-east-1".to_owned(),
        service: "s3",
    };
    assert_eq!(
        hex(&SigningKey::derive(DOC_SECRET, &scope).0),
        "cbcef1ebeaefc82cce6530b9f0a9ae598846065f5c5bae0674bd5ebc4ba52d28"
    );
    let iam = Scope {
        date: *b"20150830",
        region: "us-east-1".to_owned(),
        service: "iam",
    };
    assert_eq!(
        hex(&SigningKey::derive("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &iam).0),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
}

#[test]
fn signing_key_cache_hits_misses_and_forgets_changed_secrets() {
    let claim = sign(plain_get(), SIGNED, DOC_SECRET).claim();
    let mut cache = SigningKeyCache::new();
    let key = cache.signing_key(DOC_ACCESS_KEY, DOC_SECRET, claim.scope());
    assert_eq!(key, claim.signing_key(DOC_SECRET));
    assert_eq!(cache.signing_key(DOC_ACCESS_KEY, DOC_SECRET, claim.scope()), key);
    assert_eq!(cache.len(), 1);
    // A reloaded secret is not served the old key.
    let changed = cache.signing_key(DOC_ACCESS_KEY, "new secret", claim.scope());
    assert_ne!(changed, key);
    assert_eq!(changed, claim.signing_key("new secret"));
    assert_eq!(cache.len(), 1);
    // Another day or region is another key.
    let mut other = claim.scope().clone();
    other.region = "eu-west-1".to_owned();
    assert_ne!(cache.signing_key(DOC_ACCESS_KEY, "new secret", &other), changed);
    assert_eq!(cache.len(), 2);
    // Bounded.
    for index in 0..SIGNING_KEYS_MAX + 10 {
        cache.signing_key(&format!("KEY{index}"), "secret", &other);
        assert!(cache.len() <= SIGNING_KEYS_MAX);
    }
    assert!(!format!("{cache:?}").contains("secret"));
}

#[test]
fn keys_do_not_show_in_debug() {
    let verified = sign(plain_get(), SIGNED, DOC_SECRET)
        .verify(DOC_SECRET, DOC_TIME)
        .unwrap();
    let key_hex = hex(&verified.signing_key.0);
    let shown = format!(
        "{verified:?} {:?}",
        Request::parse(DOC_STREAMING)
            .verify(DOC_SECRET, DOC_TIME)
            .unwrap()
            .chunk_signer()
    );
    assert!(!shown.contains(&key_hex));
    assert!(shown.contains("SigningKey(..)"));
    assert!(!shown.contains(DOC_SECRET));
}
