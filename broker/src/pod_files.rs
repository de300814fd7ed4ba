//! Settings a broker on Kubernetes learns only once its pod runs somewhere:
//! its external addresses (`advertised.listeners.file`, see
//! [`crate::advertised`]) and its rack (`broker.rack.file`, [`rack`]).
//!
//! Both depend on where the pod landed, which the pod template cannot say
//! (and a pod cannot read its node's labels through the downward API), so
//! the operator writes them into the cluster's ConfigMap, mounted into the
//! pod, and the broker waits at start until its file exists rather than
//! start with a value that could be wrong: the same mechanism for both.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::ConfigError;

/// How often a missing file is looked for.
pub const POLL: Duration = Duration::from_secs(1);
/// How often the wait is logged.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// The file's text once it exists and holds something. `timeout` bounds the
/// wait (tests); `None` waits for as long as it takes. `what` says in the
/// log (every 30 s) what the broker waits for and who writes it.
///
/// # Errors
/// An I/O error other than the file not existing, or the timeout.
pub fn wait_for(
    path: &Path,
    poll: Duration,
    timeout: Option<Duration>,
    what: &str,
) -> Result<String, ConfigError> {
    let started = Instant::now();
    let mut logged = None::<Instant>;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::ReadFile {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            return Err(ConfigError::Invalid(format!(
                "{} did not appear within {:?}",
                path.display(),
                timeout.unwrap_or_default()
            )));
        }
        if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(file = %path.display(), "waiting for {what}");
            logged = Some(Instant::now());
        }
        std::thread::sleep(poll);
    }
}

/// The `broker.rack` to use: `rack` itself without a file, else the file's
/// value once the file exists and is not empty (it wins over `rack`).
/// Called once, at load, before the broker binds or registers anything.
///
/// # Errors
/// An unreadable file, or one whose value is not a single rack.
pub fn rack(rack: Option<String>, file: Option<&Path>) -> Result<Option<String>, ConfigError> {
    let Some(path) = file else {
        return Ok(rack);
    };
    let text = wait_for(
        path,
        POLL,
        None,
        "this broker's rack (broker.rack.file); on Kubernetes the operator writes it \
         from the spec.rack.topologyKey label of the pod's node",
    )?;
    let value =
        parse_rack(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    tracing::info!(file = %path.display(), rack = %value, "broker.rack from file");
    Ok(Some(value))
}

/// The rack a `broker.rack.file` holds: its one value, surrounding white
/// space and a final line break removed.
///
/// # Errors
/// More than one line, or white space inside the value.
pub fn parse_rack(text: &str) -> Result<String, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("no rack".into());
    }
    if value.contains(char::is_whitespace) {
        return Err(format!(
            "{value:?}: expected one rack name (no spaces or line breaks)"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rack_file_holds_one_value() {
        assert_eq!(parse_rack("eu-west-1a\n").as_deref(), Ok("eu-west-1a"));
        assert_eq!(parse_rack("  zone-b  ").as_deref(), Ok("zone-b"));
        assert!(parse_rack("a\nb\n").is_err());
        assert!(parse_rack("a b").is_err());
        assert!(parse_rack(" \n").is_err());
    }

    #[test]
    fn the_broker_waits_for_its_rack_file_and_takes_broker_rack_from_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rack-node-a");
        // Missing: no rack is made up.
        assert!(
            wait_for(
                &path,
                Duration::from_millis(10),
                Some(Duration::from_millis(50)),
                "a rack",
            )
            .is_err()
        );
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(&path, "").expect("write");
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(&path, "zone-c\n").expect("write");
            })
        };
        // Wired into the broker's settings; the file wins over broker.rack.
        let c = crate::config::BrokerConfig::load_from([
            "skiff-broker",
            "--broker-rack",
            "zone-stale",
            "--broker-rack-file",
            path.to_str().expect("utf-8"),
        ])
        .expect("loads");
        writer.join().expect("writer");
        assert_eq!(c.broker_rack.as_deref(), Some("zone-c"));
        // No file: broker.rack as given.
        assert_eq!(
            rack(Some("r1".into()), None).expect("no file").as_deref(),
            Some("r1")
        );
        // A bad value stops the broker at start.
        std::fs::write(&path, "two\nlines\n").expect("write");
        assert!(rack(None, Some(&path)).is_err());
    }
}
