//! Metrics: the Prometheus endpoint on `--metrics-port` counts requests as
//! they happen, and its text parses as the exposition format.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cluster::{free_port, request, Cluster};

/// One scrape: every sample by its name with labels, as written.
struct Scrape {
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn take(port: u16) -> Scrape {
        let (head, body) = get_metrics(port, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
        Scrape { samples: parse(&body) }
    }

    fn value(&self, sample: &str) -> f64 {
        self.samples.get(sample).copied().unwrap_or(0.0)
    }

    /// How much `sample` grew since `before`.
    fn growth(&self, before: &Scrape, sample: &str) -> f64 {
        self.value(sample) - before.value(sample)
    }
}

fn get_metrics(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_string(), body.to_string())
}

/// Parse the Prometheus text format strictly enough to catch a broken page:
/// every sample line is `name{labels} value` with a float value, every
/// sample belongs to a family announced by `# TYPE` before it, a
/// histogram's buckets are cumulative and end in `+Inf` equal to `_count`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            if words.next() == Some("TYPE") {
                let name = words.next().expect("# TYPE names a family");
                let kind = words.next().expect("# TYPE gives a type");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "family twice: {line}"
                );
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the page");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|labels| !labels.is_empty()) {
            let labels = labels
                .strip_prefix('{')
                .and_then(|labels| labels.strip_suffix('}'))
                .unwrap_or_else(|| panic!("bad labels: {line}"));
            for label in labels.split("\",").filter(|label| !label.is_empty()) {
                let (key, value) = label.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(!key.is_empty() && !value.contains('\n'), "bad label: {line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|family| types.get(*family).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE before {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "sample twice: {line}"
        );
    }
    check_histograms(&types, &samples);
    samples
}

fn check_histograms(types: &HashMap<String, String>, samples: &HashMap<String, f64>) {
    for family in types
        .iter()
        .filter(|(_, kind)| *kind == "histogram")
        .map(|(name, _)| name)
    {
        let counts: HashSet<&String> = samples
            .keys()
            .filter(|series| series.starts_with(&format!("{family}_count")))
            .collect();
        assert!(!counts.is_empty(), "{family} has no _count");
        for count_series in counts {
            let labels = count_series.strip_prefix(&format!("{family}_count")).unwrap();
            let inner = labels.trim_start_matches('{').trim_end_matches('}');
            let mut buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|(series, &value)| {
                    let rest = series.strip_prefix(&format!("{family}_bucket{{"))?;
                    let rest = if inner.is_empty() {
                        rest
                    } else {
                        rest.strip_prefix(&format!("{inner},"))?
                    };
                    let bound = rest.strip_prefix("le=\"")?.strip_suffix("\"}")?;
                    let bound = if bound == "+Inf" {
                        f64::INFINITY
                    } else {
                        bound.parse().ok()?
                    };
                    Some((bound, value))
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
                "{family}{labels}: buckets not cumulative"
            );
            let last = buckets.last().unwrap_or_else(|| panic!("{family}{labels}: no buckets"));
            assert_eq!(last.0, f64::INFINITY, "{family}{labels}: no +Inf bucket");
            assert_eq!(
                last.1,
                samples[count_series.as_str()],
                "{family}{labels}: +Inf is not _count"
            );
        }
    }
}

#[test]
fn metrics_count_requests_as_they_happen_and_parse_as_prometheus_text() {
    let metrics_port = free_port();
    let cluster = Cluster::start(3, &["--metrics-port", &metrics_port.to_string()]);
    let before = Scrape::take(metrics_port);
    let body = vec![7u8; 100_000];
    assert_eq!(request("PUT", &cluster.url("/metrics/key"), Some(&body)).status, 201);
    assert_eq!(request("GET", &cluster.url("/metrics/key"), None).status, 302);
    assert_eq!(request("GET", &cluster.url("/metrics/absent"), None).status, 404);
    assert_eq!(request("DELETE", &cluster.url("/metrics/key"), None).status, 204);
    let after = Scrape::take(metrics_port);

    let requests = |method: &str, status: u16| format!("mkv_requests_total{{method=\"{method}\",status=\"{status}\"}}");
    assert_eq!(after.growth(&before, &requests("PUT", 201)), 1.0);
    assert_eq!(after.growth(&before, &requests("GET", 302)), 1.0);
    assert_eq!(after.growth(&before, &requests("GET", 404)), 1.0);
    assert_eq!(after.growth(&before, &requests("DELETE", 204)), 1.0);
    assert_eq!(after.growth(&before, "mkv_cache_hits_total"), 1.0);
    assert_eq!(after.growth(&before, "mkv_cache_misses_total"), 1.0);
    let latency = |kind: &str| format!("mkv_request_duration_seconds_count{{kind=\"{kind}\"}}");
    // GETs are timed one in 16: these two GETs were the first and second.
    assert!(after.samples.contains_key(&latency("get_hit")));
    assert!(after.samples.contains_key(&latency("get_miss")));
    assert_eq!(after.growth(&before, &latency("put")), 1.0);
    assert!(after.growth(&before, "mkv_received_bytes_total") >= body.len() as f64);
    assert!(after.growth(&before, "mkv_sent_bytes_total") > 0.0);
    // The PUT wrote its record twice (deleted, then live), the DELETE removed it.
    assert!(after.growth(&before, "mkv_index_duration_seconds_count{kind=\"write\"}") >= 2.0);
    assert_eq!(
        after.growth(&before, "mkv_index_duration_seconds_count{kind=\"read\"}"),
        1.0
    );
    assert_eq!(after.value("mkv_puts_in_flight"), 0.0);
    assert_eq!(after.value("mkv_replica_write_failures_total"), 0.0);
    for volume in &cluster.volumes {
        assert_eq!(
            after.value(&format!("mkv_volume_up{{volume=\"{}\"}}", volume.host())),
            1.0
        );
    }
    for reactor in 0..2 {
        assert!(after
            .samples
            .contains_key(&format!("mkv_connections{{reactor=\"{reactor}\"}}")));
    }
    assert!(after.value("mkv_index_memtable_bytes") > 0.0);
    assert!(after.value("process_resident_memory_bytes") > 1e6);
    assert!(after.value("process_open_fds") > 3.0);

    let (head, _) = get_metrics(metrics_port, "/key");
    assert!(
        head.starts_with("HTTP/1.1 404"),
        "the metrics port serves no keys: {head}"
    );
}

#[test]
fn metrics_count_a_put_a_volume_failed() {
    let metrics_port = free_port();
    let mut cluster = Cluster::start(3, &["--metrics-port", &metrics_port.to_string()]);
    let before = Scrape::take(metrics_port);
    cluster.volumes[1].stop();
    let status = request("PUT", &cluster.url("/metrics/failed"), Some(b"value")).status;
    assert!(status >= 500, "{status}");
    let after = Scrape::take(metrics_port);
    assert_eq!(after.growth(&before, "mkv_replica_write_failures_total"), 1.0);
    assert_eq!(
        after.growth(
            &before,
            &format!("mkv_requests_total{{method=\"PUT\",status=\"{status}\"}}")
        ),
        1.0
    );
}

#[test]
fn a_request_that_waits_is_counted_with_its_own_status_and_cache_read() {
    let metrics_port = free_port();
    let metrics = metrics_port.to_string();
    let cluster = Cluster::start(3, &["--threads", "1", "--metrics-port", &metrics]);
    let s3 = ("x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    let big = vec![5u8; 32 << 20];
    assert_eq!(
        crate::cluster::request_full("PUT", &cluster.url("/mbkt"), &[s3], Some(b"")).status,
        200
    );
    assert_eq!(
        crate::cluster::request_full("PUT", &cluster.url("/mbkt/big"), &[s3], Some(&big)).status,
        200
    );
    assert_eq!(request("PUT", &cluster.url("/hit"), Some(b"v")).status, 201);
    assert_eq!(request("GET", &cluster.url("/hit"), None).status, 302);
    let before = Scrape::take(metrics_port);

    // An S3 GET streamed to a client that does not read: its answer's
    // status is written, then it waits on the client while the one reactor
    // serves cache hits to others.
    let mut slow = TcpStream::connect(("127.0.0.1", cluster.port())).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        slow,
        "GET /mbkt/big HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 4096];
    let read = slow.read(&mut first).unwrap();
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));
    let hits = 20;
    for _ in 0..hits {
        assert_eq!(request("GET", &cluster.url("/hit"), None).status, 302);
    }
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    assert!(read + rest.len() > big.len());
    let after = Scrape::take(metrics_port);

    let requests = |method: &str, status: u16| format!("mkv_requests_total{{method=\"{method}\",status=\"{status}\"}}");
    assert_eq!(after.growth(&before, &requests("GET", 302)), f64::from(hits));
    assert_eq!(after.growth(&before, &requests("GET", 200)), 1.0);
    assert_eq!(after.growth(&before, "mkv_cache_hits_total"), f64::from(hits));
    assert_eq!(after.growth(&before, "mkv_cache_misses_total"), 0.0);
}

#[test]
fn scrapes_answer_while_slow_clients_hold_connections() {
    let metrics_port = free_port();
    let _cluster = Cluster::start(1, &["-replicas", "1", "--metrics-port", &metrics_port.to_string()]);
    // Clients that connect and send nothing, or a head one byte at a time.
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", metrics_port)).unwrap())
        .collect();
    let mut trickling = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    trickling.write_all(b"G").unwrap();
    // Each scrape must get its page while they are connected: read with a
    // timeout shorter than the 5 s a silent client may hold its thread.
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("the scrape is answered while others stall");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    drop(silent);
}
