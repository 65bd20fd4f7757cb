//! What the `mayfly-sts` load benchmarks share: their settings from the environment, the
//! load loop and percentiles.

use std::time::{Duration, Instant};

/// A setting from the environment, else `default`.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p` percentile (0 to 1) of `samples`, which it sorts.
pub(crate) fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

/// `requests` exchanges posting `form` to `/token` at `concurrency`, each worker taking
/// the exchanges in `urls` in turn (as a round-robin load balancer would), every answer
/// asserted a success: each exchange's latency, and the wall time of them all.
pub(crate) fn load(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    urls: &[String],
    form: &[(&'static str, String)],
    requests: usize,
    concurrency: usize,
) -> (Vec<Duration>, Duration) {
    let wall = Instant::now();
    let latencies = runtime.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|worker| {
                let (client, urls, form) = (client.clone(), urls.to_vec(), form.to_vec());
                let share = requests / concurrency + usize::from(worker < requests % concurrency);
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(share);
                    for k in 0..share {
                        let url = &urls[(worker + k) % urls.len()];
                        let start = Instant::now();
                        let response = client.post(format!("{url}/token")).form(&form).send().await.expect("answers");
                        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
                        out.push(start.elapsed());
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::with_capacity(requests);
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    (latencies, wall.elapsed())
}
