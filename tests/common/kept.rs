//! The answer cache's race (`runner/src/http/answer_cache.rs`): one tag moved again and again
//! through one front end while many clients read it through another (or the same). A kept
//! answer must be exactly as fresh as the component's: a read that starts after a move was
//! acknowledged never sees the tag older than that move.

use super::rng::Rng;
use super::{OCI_MANIFEST, Registry, header, image_manifest, sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `BERTH_KEPT_SEED`, or one from the clock; printed so that any run replays.
pub fn seed() -> u64 {
    super::rng::seed("kept-answer race", "BERTH_KEPT_SEED")
}

/// What the race saw: the violations, and how many reads it made.
pub struct RaceOutcome {
    pub problems: Vec<String>,
    pub reads: usize,
}

/// Move `repo:tag` through `writer` `moves` times, to a manifest of its own each time, while
/// `readers` clients GET or HEAD it through `reader`. Between two moves the writer waits for a
/// seeded number of reads, so that answers are kept and given again between changes.
pub async fn race_a_moving_tag(
    writer: &Registry,
    reader: &Registry,
    repo: &str,
    seed: u64,
    readers: usize,
    moves: usize,
) -> RaceOutcome {
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = writer.push_blob(repo, config).await;
    // Every manifest pushed by digest first: a move is then one small PUT of the tag.
    let mut manifests = Vec::new();
    for i in 0..=moves {
        let annotation = format!(r#","annotations":{{"move":"{i}"}}"#);
        let manifest = image_manifest(&[(super::OCI_CONFIG, &config_digest, config.len())], &[], &annotation);
        let digest = sha256(&manifest);
        assert_eq!(writer.put_manifest(repo, &digest, OCI_MANIFEST, &manifest).await.status(), 201);
        manifests.push((manifest, digest));
    }
    let index_of = |digest: &str| manifests.iter().position(|(_, d)| d == digest);
    let path = format!("/v2/{repo}/manifests/latest");
    assert_eq!(writer.put_manifest(repo, "latest", OCI_MANIFEST, &manifests[0].0).await.status(), 201);

    // The number of the last move acknowledged, and the reads made so far.
    let acked = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let read_done = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers_run = (0..readers).map(|client| {
        let (acked, reads, read_done, done) = (acked.clone(), reads.clone(), read_done.clone(), done.clone());
        let (reader, path, manifests) = (reader.clone(), path.clone(), manifests.clone());
        async move {
            let mut rng = Rng::new(seed, client as u64);
            let mut problems = Vec::new();
            while !done.load(Ordering::SeqCst) {
                // Read before the request starts: every move up to here was acknowledged.
                let floor = acked.load(Ordering::SeqCst);
                let head = rng.chance(25);
                let response = if head { reader.head(&path).await } else { reader.get(&path).await };
                let status = response.status().as_u16();
                let digest = header(&response, "docker-content-digest");
                let body = response.bytes().await.unwrap_or_default();
                let seen = manifests.iter().position(|(_, d)| *d == digest);
                match seen {
                    _ if status != 200 => problems.push(format!("client {client}: {path} answered {status}")),
                    None => problems.push(format!("client {client}: {path} named an unknown digest {digest:?}")),
                    Some(seen) if seen < floor => problems.push(format!(
                        "client {client}: a {} started after move {floor} was acknowledged saw move {seen}",
                        if head { "HEAD" } else { "GET" }
                    )),
                    Some(seen) if !head && body[..] != manifests[seen].0[..] => {
                        problems.push(format!("client {client}: the body is not the manifest of move {seen}"))
                    }
                    Some(_) => {}
                }
                reads.fetch_add(1, Ordering::SeqCst);
                read_done.notify_waiters();
            }
            problems
        }
    });
    let writing = async {
        let mut rng = Rng::new(seed, u64::MAX);
        for (i, (manifest, _)) in manifests.iter().enumerate().skip(1) {
            // Wait on the readers, not on a clock: a seeded number of reads between two moves.
            let until = reads.load(Ordering::SeqCst) + rng.between(0, 3 * readers);
            while reads.load(Ordering::SeqCst) < until {
                let notified = read_done.notified();
                if reads.load(Ordering::SeqCst) >= until {
                    break;
                }
                notified.await;
            }
            let response = writer.put_manifest(repo, "latest", OCI_MANIFEST, manifest).await;
            assert_eq!(response.status(), 201, "move {i}");
            acked.store(i, Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
    };
    let (problems, ()) = tokio::join!(futures::future::join_all(readers_run), writing);
    let mut problems: Vec<String> = problems.into_iter().flatten().collect();
    // And once all is quiet, every front end serves the last move.
    let last = reader.get(&path).await;
    if index_of(&header(&last, "docker-content-digest")) != Some(moves) {
        problems.push(format!("after the race {path} is not the last move"));
    }
    RaceOutcome { problems, reads: reads.load(Ordering::SeqCst) }
}

/// The answer cache's count of `outcome` (`hit`, `changed`, `miss`, `kept`) in a scrape.
pub fn answer_cache_count(metrics: &str, outcome: &str) -> f64 {
    let prefix = format!("berth_answer_cache_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}
