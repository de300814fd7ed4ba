//! `advertised.listeners.file`: advertised addresses that are only known
//! after the broker's pod exists.
//!
//! On Kubernetes a listener exposed through a LoadBalancer or NodePort
//! Service must advertise that Service's address, which the Service gets
//! after the pod template was written (and which differs per broker while
//! the template is shared). The operator writes each broker's addresses into
//! a file (a ConfigMap key per broker) once it knows them; the broker waits
//! for that file at start rather than advertise an address no client outside
//! the cluster could reach.
//!
//! The file holds `NAME://host:port` entries, separated by commas or line
//! breaks; each replaces the `advertised.listeners` entry of the same name.
//! An entry without a host (`NAME://:31234`) keeps the host of that entry
//! and changes only its port: a NodePort listener advertises its node's
//! address, which only the pod knows (`status.hostIP`), with the Service's
//! node port, which only the operator knows.

use std::path::Path;

use crate::config::ConfigError;
use crate::pod_files::{POLL, wait_for};

/// The `advertised.listeners` value to use: `advertised` itself without a
/// file, else `advertised` merged with the file's entries once the file
/// exists and is not empty (see [`merge`]). Called once, at load, before the
/// broker binds anything: on Kubernetes the ConfigMap key appears in the
/// mounted volume once the operator writes it.
///
/// # Errors
/// An unreadable file, or an entry that is not `NAME://host:port`.
pub fn resolve(
    advertised: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    let Some(path) = file else {
        return Ok(advertised);
    };
    let text = wait_for(
        path,
        POLL,
        None,
        "this broker's advertised addresses (advertised.listeners.file); \
         on Kubernetes the operator writes them once the broker's external Service has an address",
    )?;
    let merged = merge(advertised.as_deref().unwrap_or(""), &text)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    tracing::info!(file = %path.display(), advertised = %merged, "advertised listeners from file");
    Ok(Some(merged))
}

/// `advertised` (the `advertised.listeners` value, possibly empty) with the
/// entries of `file` in place of the same-named ones, in the order of
/// `advertised` followed by names only the file has.
///
/// # Errors
/// An entry that is not `NAME://host:port`, or a host-less file entry for a
/// listener `advertised` does not name.
pub fn merge(advertised: &str, file: &str) -> Result<String, String> {
    let mut out: Vec<(String, String)> = entries(advertised)?;
    for (name, addr) in entries(file)? {
        let (host, port) =
            split(&addr).ok_or_else(|| format!("{name}://{addr}: expected host:port"))?;
        let host = if host.is_empty() {
            out.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, a)| split(a))
                .map(|(h, _)| h.to_string())
                .ok_or_else(|| {
                    format!("{name}://:{port} has no host and advertised.listeners names no {name} to take it from")
                })?
        } else {
            host.to_string()
        };
        let addr = format!("{host}:{port}");
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 = addr,
            None => out.push((name, addr)),
        }
    }
    Ok(out
        .iter()
        .map(|(n, a)| format!("{n}://{a}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// `NAME://rest` pairs of a comma- or line-separated list.
fn entries(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .map(|e| {
            e.split_once("://")
                .map(|(n, a)| (n.trim().to_string(), a.trim().to_string()))
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| format!("{e:?}: expected NAME://host:port"))
        })
        .collect()
}

/// Host and port of `host:port` (`[v6]:port` too); the host may be empty.
fn split(addr: &str) -> Option<(&str, &str)> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_entries_replace_by_name_and_a_missing_host_keeps_the_advertised_one() {
        let base = "INTERNAL://kafka-0.kafka-brokers.ns.svc:9092,LB://kafka-0-lb.ns.svc:9094,NP://$HOST:9095,OPERATOR://kafka-0:19093";
        let merged = merge(base, "LB://203.0.113.7:9094\nNP://:31234\n").unwrap();
        assert_eq!(
            merged,
            "INTERNAL://kafka-0.kafka-brokers.ns.svc:9092,LB://203.0.113.7:9094,NP://$HOST:31234,OPERATOR://kafka-0:19093"
        );
        // IPv6 hosts and names only the file has.
        assert_eq!(
            merge("A://[::1]:1", "A://:2,B://lb.example.com:3").unwrap(),
            "A://[::1]:2,B://lb.example.com:3"
        );
        assert!(merge("", "NP://:31234").unwrap_err().contains("no host"));
        assert!(merge("", "garbage").is_err());
        assert!(merge("", "A://h:notaport").is_err());
    }

    #[test]
    fn the_broker_waits_for_the_file_and_then_advertises_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("advertised-0");
        // Missing: no address is made up.
        let err = wait_for(
            &path,
            Duration::from_millis(10),
            Some(Duration::from_millis(50)),
            "addresses",
        );
        assert!(err.is_err());
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(&path, "").unwrap();
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(&path, "EXTERNAL://198.51.100.4:9094\n").unwrap();
            })
        };
        let merged = resolve(
            Some(
                "INTERNAL://kafka-0.internal:9092,EXTERNAL://kafka-0-external.internal:9094".into(),
            ),
            Some(&path),
        )
        .unwrap();
        writer.join().unwrap();
        assert_eq!(
            merged.as_deref(),
            Some("INTERNAL://kafka-0.internal:9092,EXTERNAL://198.51.100.4:9094")
        );
        // Wired into the broker's settings (flag, env, properties file).
        let c = crate::config::BrokerConfig::load_from([
            "skiff-broker",
            "--listeners",
            "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9094",
            "--listener-security-protocol-map",
            "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT",
            "--advertised-listeners",
            "INTERNAL://kafka-0.internal:9092,EXTERNAL://10.0.0.7:9094",
            "--advertised-listeners-file",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let a = c.advertised_listeners().unwrap();
        assert_eq!((a[0].host.as_str(), a[0].port), ("kafka-0.internal", 9092));
        assert_eq!((a[1].host.as_str(), a[1].port), ("198.51.100.4", 9094));
        // No file: advertised.listeners as given.
        assert_eq!(
            resolve(Some("A://h:1".into()), None).unwrap().as_deref(),
            Some("A://h:1")
        );
    }
}
