//! The body of a request that carries a value (PutObject, UploadPart):
//! decoded from `aws-chunked` when it is so encoded, and checked on its
//! way through against what the client said it is: the length it declared,
//! an additional checksum (`x-amz-checksum-*` as a header or an
//! aws-chunked trailer) and a payload hash (`x-amz-content-sha256`).
//!
//! Every check is made before the body's last piece is handed to the
//! writer, so a body that fails one reaches no volume whole: nothing is
//! stored. Hashing is inline, on the reactor (PERF.md has what it costs).

use bytes::Bytes;

use crate::app::App;
use crate::connection::{BodyError, BodyReader, Connection};
use crate::http::{BodyFraming, RequestHead};
use crate::replication::{ClientBody, PieceSource, ReplicationError};

use super::checksum::{self, Algorithm, Checksummer, ContentSha256};
use super::chunked::{AwsChunkedDecoder, AwsChunkedError};
use super::request::S3Request;
use super::S3Error;

/// The name a stored checksum has among a value's metadata entries: it is
/// returned as `x-amz-checksum-*` only to a client that asks for it
/// (`x-amz-checksum-mode: ENABLED`), never as user metadata.
pub const CHECKSUM_ENTRY_PREFIX: &str = "!";

/// The metadata entry that keeps `algorithm`'s checksum `value` of a value.
pub fn checksum_entry(algorithm: Algorithm, value: String) -> (String, String) {
    (format!("{CHECKSUM_ENTRY_PREFIX}{}", algorithm.header()), value)
}

/// A request body, decoded from `aws-chunked` when it is so encoded, and
/// checked as it goes.
pub struct RequestBody<'a> {
    body: ClientBody<'a>,
    /// The aws-chunked decoder and `x-amz-decoded-content-length`, when
    /// the body is so encoded.
    chunked: Option<(AwsChunkedDecoder, Option<u64>)>,
    checks: Checks,
}

/// What the body must hash to.
struct Checks {
    /// The additional checksum computed, and where its expected value is.
    checksum: Option<(Checksummer, Expected)>,
    /// `x-amz-content-sha256` when it is a hash.
    payload: Option<(Checksummer, [u8; 32])>,
    /// The additional checksum, once verified: (algorithm, base64).
    verified: Option<(Algorithm, String)>,
    done: bool,
}

/// Where the expected value of the additional checksum comes from.
enum Expected {
    /// A header sent it.
    Header(Vec<u8>),
    /// An aws-chunked trailer will.
    Trailer,
    /// Only the algorithm was named: the checksum is computed and stored.
    Computed,
}

fn rejected(error: checksum::ChecksumError) -> ReplicationError {
    ReplicationError::Body(BodyError::Rejected {
        status: 400,
        code: error.code(),
        message: error.to_string(),
    })
}

impl Checks {
    fn from_request(request: &S3Request) -> Result<Checks, S3Error> {
        let refuse = |error: checksum::ChecksumError| S3Error::new(400, error.code(), error.to_string());
        let headers = &request.headers;
        let mut checksum = None;
        for (name, value) in &headers.refusable {
            let Some(algorithm) = Algorithm::from_header(name) else {
                continue;
            };
            if checksum.is_some() {
                return Err(S3Error::new(
                    400,
                    "InvalidRequest",
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            let expected = checksum::parse_expected(algorithm, value).map_err(refuse)?;
            checksum = Some((Checksummer::new(algorithm), Expected::Header(expected)));
        }
        if checksum.is_none() {
            if let Some(trailer) = headers.amz("x-amz-trailer") {
                let algorithm = Algorithm::from_trailer(trailer)
                    .ok_or_else(|| S3Error::invalid_argument("x-amz-trailer names no checksum this server knows"))?;
                if !headers.is_aws_chunked() {
                    return Err(S3Error::invalid_argument("x-amz-trailer needs an aws-chunked body"));
                }
                checksum = Some((Checksummer::new(algorithm), Expected::Trailer));
            } else if let Some(value) = headers.amz("x-amz-sdk-checksum-algorithm") {
                let algorithm = checksum::parse_algorithm(value).map_err(refuse)?;
                checksum = Some((Checksummer::new(algorithm), Expected::Computed));
            }
        }
        let payload = match headers.content_sha256.as_deref() {
            None => None,
            Some(text) => match checksum::parse_content_sha256(text).map_err(refuse)? {
                ContentSha256::Hash(hash) => Some((Checksummer::new(Algorithm::Sha256), hash)),
                ContentSha256::Unsigned | ContentSha256::Streaming { .. } => None,
            },
        };
        Ok(Checks {
            checksum,
            payload,
            verified: None,
            done: false,
        })
    }

    fn update(&mut self, piece: &[u8]) {
        if let Some((checksummer, _)) = &mut self.checksum {
            checksummer.update(piece);
        }
        if let Some((checksummer, _)) = &mut self.payload {
            checksummer.update(piece);
        }
    }

    /// The body ended: check it against what was expected (`trailers`: an
    /// aws-chunked body's, names lower-case).
    fn finish(&mut self, trailers: &[(String, String)]) -> Result<(), ReplicationError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        // Every checksum trailer must be the one announced, once.
        let mut checksum_trailers = trailers.iter().filter(|(name, _)| name.starts_with("x-amz-checksum-"));
        let announced = match &self.checksum {
            Some((checksummer, Expected::Trailer)) => Some(checksummer.algorithm().header()),
            _ => None,
        };
        let first = checksum_trailers.next();
        if first.is_some_and(|(name, _)| Some(name.as_str()) != announced) || checksum_trailers.next().is_some() {
            return Err(ReplicationError::Body(BodyError::Malformed(
                "a checksum trailer that x-amz-trailer did not announce, or more than one",
            )));
        }
        if let Some((checksummer, hash)) = self.payload.take() {
            checksum::verify_content_sha256(&checksummer.finish(), &hash).map_err(rejected)?;
        }
        let Some((checksummer, expected)) = self.checksum.take() else {
            return Ok(());
        };
        let algorithm = checksummer.algorithm();
        let raw = match expected {
            Expected::Header(expected) => checksummer.verify(&expected).map_err(rejected)?,
            Expected::Trailer => {
                let trailer = trailers
                    .iter()
                    .find(|(name, _)| name == algorithm.header())
                    .map(|(_, value)| value.as_str())
                    .ok_or(ReplicationError::Body(BodyError::Malformed(
                        "the checksum trailer x-amz-trailer announced is missing",
                    )))?;
                let expected = checksum::parse_expected(algorithm, trailer).map_err(rejected)?;
                checksummer.verify(&expected).map_err(rejected)?
            }
            Expected::Computed => checksummer.finish(),
        };
        self.verified = Some((algorithm, checksum::base64(&raw)));
        Ok(())
    }
}

impl PieceSource for RequestBody<'_> {
    async fn next_piece(&mut self, bytes_max: usize) -> Result<Option<Bytes>, ReplicationError> {
        let piece = match &mut self.chunked {
            None => self.body.next_piece(bytes_max).await?,
            Some((decoder, declared)) => next_decoded(&mut self.body, decoder, *declared, bytes_max).await?,
        };
        if let Some(piece) = &piece {
            self.checks.update(piece);
        }
        // The last piece is checked before it is handed out: the writer
        // sends it, and with it the value, only if the body is what the
        // client said.
        let (ended, trailers) = match &self.chunked {
            None => (piece.is_none() || self.body.body.is_done(), &[][..]),
            Some((decoder, _)) => (decoder.is_done(), decoder.trailers()),
        };
        if ended {
            self.checks.finish(trailers)?;
        }
        Ok(piece)
    }

    fn delivered(&self) -> u64 {
        match &self.chunked {
            None => self.body.delivered(),
            Some((decoder, _)) => decoder.decoded_bytes(),
        }
    }

    fn end_check(&self) -> Result<(), ReplicationError> {
        self.body.end_check()
    }

    fn checksum(&self) -> Option<(String, String)> {
        let (algorithm, value) = self.checks.verified.clone()?;
        Some(checksum_entry(algorithm, value))
    }
}

/// The next decoded piece of an aws-chunked body.
///
/// The piece that completes the declared length is handed out only once
/// the rest of the framing (the final 0-chunk, its trailers, the end of
/// the HTTP body) has been read and checked: the writer sends the last
/// piece, which is what makes a volume store the value, only for a body
/// that is whole, and nothing of the body is left on the connection.
async fn next_decoded(
    body: &mut ClientBody<'_>,
    decoder: &mut AwsChunkedDecoder,
    declared: Option<u64>,
    bytes_max: usize,
) -> Result<Option<Bytes>, ReplicationError> {
    let malformed = |what| ReplicationError::Body(BodyError::Malformed(what));
    let decode_error = |error| match error {
        AwsChunkedError::Malformed(what) => malformed(what),
        AwsChunkedError::Signature => ReplicationError::Body(BodyError::Rejected {
            status: 403,
            code: "SignatureDoesNotMatch",
            message: "The chunk signature we calculated does not match the signature you provided.".into(),
        }),
    };
    let mut decoded = Vec::new();
    loop {
        if decoder.is_done() {
            if declared.is_some_and(|declared| declared != decoder.decoded_bytes()) {
                return Err(malformed("the decoded body is not x-amz-decoded-content-length bytes"));
            }
            // The HTTP body must end where the aws-chunked stream does.
            if body.next_piece(bytes_max).await?.is_some() {
                return Err(malformed("the body goes on after its final aws-chunked chunk"));
            }
            return Ok((!decoded.is_empty()).then(|| Bytes::from(decoded)));
        }
        let Some(encoded) = body.next_piece(bytes_max).await? else {
            decoder.finish().map_err(decode_error)?;
            continue;
        };
        decoder.feed(&encoded, &mut decoded).map_err(decode_error)?;
        if declared.is_some_and(|declared| decoder.decoded_bytes() > declared) {
            return Err(malformed(
                "the decoded body is longer than x-amz-decoded-content-length",
            ));
        }
        // Short of the declared end, a piece goes out as soon as it has
        // bytes; at the end it waits for the framing to be read to its end.
        let at_end = declared == Some(decoder.decoded_bytes());
        if !decoded.is_empty() && !at_end {
            return Ok(Some(Bytes::from(decoded)));
        }
    }
}

/// The body of a request that carries a value, and its length when known.
pub fn request_body<'a>(
    app: &App,
    connection: &'a mut Connection,
    head: &RequestHead,
    request: &S3Request,
) -> Result<(RequestBody<'a>, Option<u64>), S3Error> {
    let body = ClientBody {
        connection,
        body: BodyReader::new(head.body, app.config.body_limits).deferring_excess(),
        continue_pending: head.expect_continue,
    };
    let checks = Checks::from_request(request)?;
    let chunked = request.headers.is_aws_chunked();
    let signer = request.access.chunk_signer();
    if signer.is_some() && !chunked {
        return Err(S3Error::invalid_argument(
            "a streaming signature goes with an aws-chunked body",
        ));
    }
    if chunked != request.headers.decoded_length.is_some() {
        return Err(S3Error::invalid_argument(
            "x-amz-decoded-content-length goes with an aws-chunked body, and only with one",
        ));
    }
    if !chunked {
        let declared = match head.body {
            BodyFraming::Length(length) => Some(length),
            // Neither a length nor chunked framing: an empty value is sent
            // with `Content-Length: 0`, so this is a client that forgot it.
            BodyFraming::None => {
                return Err(S3Error::new(
                    411,
                    "MissingContentLength",
                    "You must provide the Content-Length HTTP header.",
                ))
            }
            BodyFraming::Chunked => None,
        };
        let body = RequestBody {
            body,
            chunked: None,
            checks,
        };
        return Ok((body, declared));
    }
    let declared = match request.headers.decoded_length.as_deref() {
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| S3Error::invalid_argument("x-amz-decoded-content-length is not a number"))?,
        ),
        None => None,
    };
    let decoder = match signer {
        Some((signer, trailer)) => AwsChunkedDecoder::with_signer(signer, trailer),
        None => AwsChunkedDecoder::new(),
    };
    let body = RequestBody {
        body,
        chunked: Some((decoder, declared)),
        checks,
    };
    Ok((body, declared))
}
