//! Crashes: every acknowledged write survives `kill -9` of the master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::cluster::{fetch, Cluster};

#[test]
fn kill_9_during_writes_keeps_every_acknowledged_key() {
    let mut cluster = Cluster::start(3, &[]);
    let url = cluster.url("");
    let acknowledged = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let (url, acknowledged, stop) = (&url, &acknowledged, &stop);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .redirects(0)
                    .timeout(Duration::from_secs(5))
                    .build();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("/crash/{writer}/{i}");
                    let body = format!("value of {key}").repeat(100);
                    if let Ok(response) = agent.put(&format!("{url}{key}")).send_bytes(body.as_bytes()) {
                        if response.status() == 201 {
                            acknowledged.lock().unwrap().push((key, body));
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        cluster.kill_master();
        stop.store(true, Ordering::Relaxed);
    });
    cluster.start_master();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() > 10,
        "only {} writes before the kill",
        acknowledged.len()
    );
    for (key, body) in &acknowledged {
        assert_eq!(fetch(&cluster.url(key)).body, body.as_bytes(), "{key}");
    }
}
