//! Whether each exchange a route uses can be reached: a TCP connect to its token
//! endpoint's host and port, no request. All are tried at once, so a run waits at most
//! about one timeout whatever the number of exchanges.

use std::collections::BTreeSet;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mayfly_core::Config;

use super::finding::{Finding, Severity};

/// How long a connect may take.
const TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn check(config: &Config, findings: &mut Vec<Finding>) {
    let used: BTreeSet<&str> = config.routes.iter().map(|r| r.exchange.as_str()).collect();
    let (sender, receiver) = mpsc::channel();
    let mut pending = Vec::new();
    for exchange in used.iter().filter_map(|name| config.exchanges.get(*name)) {
        let endpoint = &exchange.token_endpoint;
        let (Some(host), Some(port)) = (endpoint.host_str(), endpoint.port_or_known_default()) else { continue };
        let address = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let shown = format!("exchange `{}` ({host}:{port})", exchange.name);
        pending.push(shown.clone());
        let sender = sender.clone();
        // Name resolution has no timeout of its own; a thread left behind ends with the process.
        std::thread::spawn(move || {
            let _ = sender.send((shown, connect(&address, port)));
        });
    }
    drop(sender);
    let deadline = Instant::now() + TIMEOUT + Duration::from_millis(500);
    while !pending.is_empty() {
        let Ok((shown, result)) = receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        pending.retain(|p| *p != shown);
        if let Err(why) = result {
            findings.push(unreachable(shown, &why));
        }
    }
    for shown in pending {
        findings.push(unreachable(shown, &format!("no answer within {}s", TIMEOUT.as_secs())));
    }
}

fn unreachable(location: String, why: &str) -> Finding {
    let fix = format!("cannot connect ({why}): check `token_endpoint` and the network, or pass `--offline`");
    Finding::new(Severity::Warning, "exchange-unreachable", location, fix)
}

/// Connects to any address the host resolves to.
fn connect(host: &str, port: u16) -> Result<(), String> {
    let addresses = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?;
    let mut last = "no address".to_owned();
    for address in addresses {
        match TcpStream::connect_timeout(&address, TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_port_connects_and_a_closed_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(connect("127.0.0.1", port).is_ok());
        drop(listener);
        assert!(connect("127.0.0.1", port).is_err());
    }
}
