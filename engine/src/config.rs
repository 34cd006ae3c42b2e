//! The configuration file both daemons read (`--config /etc/switchyard/switchyard.toml`), and how it
//! meets the command line.
//!
//! ```text
//!  [engine]    switchyard-engine: workers, I/O backend, addresses, control socket, buffers
//!  [turn]      both: the engine's TURN server and the credentials switchyard-control mints for it
//!  [control]   switchyard-control: HTTP, engine socket, DTLS identity, room limits
//!  [modes]     switchyard-control: when rooms run C2C, P2P or through the SFU
//! ```
//!
//! Each daemon validates the sections it reads and skips the others' (an unknown section is an error
//! for both). Every key stands for one command-line flag: a daemon parses its command line once to find
//! `--config`, makes each key the file sets the default of that key's flag, and parses again. So a flag
//! on the command line (or its environment variable) beats the file, and the file beats the built-in
//! default, with clap doing the parsing either way. A mistake in the file (an unknown section or key, a
//! wrong type, a value out of range) stops start-up with an error naming the file, the line and the key:
//!
//! ```text
//! /etc/switchyard/switchyard.toml:4: [engine] workers: expected an integer 1..=1024, got "many"
//! ```
//!
//! The `[control]` and `[modes]` sections are defined by `switchyard_control::config`, on top of the
//! loading, checking and flag plumbing here.

use std::ffi::OsString;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{ArgAction, Command, Parser};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use switchyard_udp::IoKind;

/// Where the packaged units point `--config`.
pub const DEFAULT_PATH: &str = "/etc/switchyard/switchyard.toml";

/// Why the configuration file cannot be used. Each message names the file, and the key when there is
/// one, so the operator can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}:{line}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What the parser expected.
        message: String,
    },
    /// A section or key is unknown, or its value is unusable.
    #[error("{file}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Key {
        /// The file.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// `[section] key`, or `[section]` for a whole section.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and checks a configuration file into `T` (a struct of sections).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&text, &path.display().to_string())
}

/// Checks configuration text into `T`; `file` names it in errors.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim().replace('\n', "; "),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| key_error(e, text, file))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn key_error(e: serde_path_to_error::Error<toml::de::Error>, text: &str, file: &str) -> ConfigError {
    let mut names = Vec::new();
    for seg in e.path().iter() {
        match seg {
            serde_path_to_error::Segment::Map { key } => names.push(key.clone()),
            serde_path_to_error::Segment::Seq { index } => {
                if let Some(last) = names.last_mut() {
                    last.push_str(&format!("[{index}]"));
                }
            }
            _ => {}
        }
    }
    let inner = e.into_inner();
    let line = inner.span().map(|s| line_of(text, s.start));
    let mut message = inner.message().to_string();
    if let Some((name, expected)) = unknown_field(&message) {
        // The path usually ends with the unknown key already.
        if names.last() != Some(&name) {
            names.push(name);
        }
        message = format!("unknown {}; {expected}", if names.len() == 1 { "section" } else { "key" });
    }
    let key = match names.split_first() {
        None => "(top level)".to_string(),
        Some((section, [])) => format!("[{section}]"),
        Some((section, rest)) => format!("[{section}] {}", rest.join(".")),
    };
    ConfigError::Key { file: file.to_string(), line, key, message }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and "expected one of a, b".
fn unknown_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, expected) = rest.split_once('`')?;
    Some((name.to_string(), expected.trim_start_matches(',').trim().replace('`', "")))
}

/// Deserializers for keys that say what they expect and what they got, in the operator's terms
/// (`expected an integer 1..=1024, got "many"`), for `#[serde(deserialize_with = ...)]` on
/// `Option` fields (so they run only for keys that are present).
pub mod check {
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::str::FromStr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};
    use switchyard_udp::IoKind;
    use toml::Value;

    fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    /// A value as an error shows it: strings quoted, arrays and tables by kind.
    pub fn got(v: &Value) -> String {
        match v {
            Value::String(s) => format!("{s:?}"),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Boolean(b) => b.to_string(),
            Value::Datetime(d) => d.to_string(),
            Value::Array(_) => "an array".to_string(),
            Value::Table(_) => "a table".to_string(),
        }
    }

    fn wrong<E: serde::de::Error>(expected: &str, v: &Value) -> E {
        E::custom(format!("expected {expected}, got {}", got(v)))
    }

    /// An integer in `LO..=HI`.
    pub fn int<'de, D, T, const LO: i64, const HI: i64>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        let v = raw(d)?;
        match v {
            Value::Integer(i) if (LO..=HI).contains(&i) => T::try_from(i).map(Some).ok(),
            _ => None,
        }
        .ok_or_else(|| wrong(&format!("an integer {LO}..={HI}"), &v))
    }

    /// `true` or `false`.
    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match raw(d)? {
            Value::Boolean(b) => Ok(Some(b)),
            v => Err(wrong("true or false", &v)),
        }
    }

    /// A non-empty string.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match raw(d)? {
            Value::String(s) if !s.is_empty() => Ok(Some(s)),
            v => Err(wrong("a non-empty string", &v)),
        }
    }

    /// A list of non-empty strings.
    pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        let v = raw(d)?;
        let expected = "a list of non-empty strings";
        let Value::Array(items) = &v else { return Err(wrong(expected, &v)) };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(D::Error::custom(format!("expected {expected}, got {} in the list", got(other)))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An absolute file system path.
    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        match raw(d)? {
            Value::String(s) if s.starts_with('/') => Ok(Some(PathBuf::from(s))),
            v => Err(wrong("an absolute path", &v)),
        }
    }

    fn parsed<'de, D: Deserializer<'de>, T: FromStr>(d: D, expected: &str) -> Result<Option<T>, D::Error> {
        let v = raw(d)?;
        match &v {
            Value::String(s) => s.parse().map(Some).ok(),
            _ => None,
        }
        .ok_or_else(|| wrong(expected, &v))
    }

    /// An IPv4 or IPv6 address.
    pub fn ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        parsed(d, "an IP address such as \"0.0.0.0\" or \"::\"")
    }

    /// An address and port.
    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        parsed(d, "an address and port such as \"127.0.0.1:8080\" or \"[::]:8080\"")
    }

    /// `"uring"` or `"mmsg"`.
    pub fn io<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IoKind>, D::Error> {
        parsed(d, "\"uring\" or \"mmsg\"")
    }

    /// `"LOW-HIGH"`, two UDP ports with LOW <= HIGH.
    pub fn port_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = raw(d)?;
        let ok = match &v {
            Value::String(s) => s
                .split_once('-')
                .and_then(|(lo, hi)| Some((lo.trim().parse::<u16>().ok()?, hi.trim().parse::<u16>().ok()?)))
                .is_some_and(|(lo, hi)| lo >= 1 && lo <= hi),
            _ => false,
        };
        match v {
            Value::String(s) if ok => Ok(Some(s)),
            v => Err(wrong("a port range \"LOW-HIGH\" within 1-65535", &v)),
        }
    }
}

/// Largest `[engine] recv_coalesce_us`: 10 ms (media latency grows by up to this much).
pub const MAX_RECV_COALESCE_US: i64 = 10_000;

/// Largest `[engine] socket_buffer`: 1 GiB.
pub const MAX_SOCKET_BUFFER: i64 = 1 << 30;

/// `[engine]`: the engine's own settings. Each key is the default of the flag of the same name
/// (`port_base` is `--port-base`; `pin = false` is `--no-pin`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct EngineSection {
    /// Worker threads, one UDP port each (default: one per core the unit may use).
    #[serde(default, deserialize_with = "check::int::<_, usize, 1, 1024>")]
    pub workers: Option<usize>,
    /// I/O backend (default: probe, io_uring when the kernel allows it).
    #[serde(default, deserialize_with = "check::io")]
    pub io: Option<IoKind>,
    /// Address the workers bind and advertise in ICE candidates.
    #[serde(default, deserialize_with = "check::ip_addr")]
    pub bind: Option<IpAddr>,
    /// First UDP port; worker i binds `port_base + i`; 0 lets the kernel pick.
    #[serde(default, deserialize_with = "check::int::<_, u16, 0, 65535>")]
    pub port_base: Option<u16>,
    /// Control socket path.
    #[serde(default, deserialize_with = "check::path")]
    pub socket: Option<PathBuf>,
    /// Pin each worker to a core.
    #[serde(default, deserialize_with = "check::boolean")]
    pub pin: Option<bool>,
    /// UDP receive and send buffer per worker socket, bytes (0: the system default).
    #[serde(default, deserialize_with = "check::int::<_, usize, 0, MAX_SOCKET_BUFFER>")]
    pub socket_buffer: Option<usize>,
    /// How long a worker that found its socket empty waits for more datagrams before it wakes,
    /// microseconds (0: wake at once).
    #[serde(default, deserialize_with = "check::int::<_, u64, 0, MAX_RECV_COALESCE_US>")]
    pub recv_coalesce_us: Option<u64>,
}

/// `[turn]`: the TURN service, shared by both daemons so that the secret the engine checks
/// credentials with and the one the control daemon mints them with live in one place.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct TurnSection {
    /// Run the engine's TURN server (`enabled = false` is the engine's `--no-turn`).
    #[serde(default, deserialize_with = "check::boolean")]
    pub enabled: Option<bool>,
    /// The engine's TURN listening port (`--turn-port`).
    #[serde(default, deserialize_with = "check::int::<_, u16, 1, 65535>")]
    pub port: Option<u16>,
    /// TURN realm (`--turn-realm`).
    #[serde(default, deserialize_with = "check::text")]
    pub realm: Option<String>,
    /// UDP ports for relayed transport addresses, `"LOW-HIGH"` (`--relay-ports`).
    #[serde(default, deserialize_with = "check::port_range")]
    pub relay_ports: Option<String>,
    /// Most allocations one TURN username may hold (`--turn-max-allocations-per-user`).
    #[serde(default, deserialize_with = "check::int::<_, u32, 1, 1_000_000>")]
    pub max_allocations_per_user: Option<u32>,
    /// Most allocations the engine holds (`--turn-max-allocations`).
    #[serde(default, deserialize_with = "check::int::<_, u32, 1, 1_000_000>")]
    pub max_allocations: Option<u32>,
    /// Shared secret of the TURN REST credentials (engine and control `--turn-secret`).
    #[serde(default, deserialize_with = "check::text")]
    pub secret: Option<String>,
    /// `stun:`/`turn:` URLs the control daemon hands to clients (its `--turn-url`, repeated).
    #[serde(default, deserialize_with = "check::texts")]
    pub urls: Option<Vec<String>>,
    /// Lifetime of the credentials the control daemon mints, seconds (`--turn-ttl-secs`).
    #[serde(default, deserialize_with = "check::int::<_, u64, 60, 2_592_000>")]
    pub ttl_secs: Option<u64>,
}

/// The file as the engine reads it: `[engine]` and `[turn]`; the control daemon's sections are
/// skipped, any other section is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    /// `[engine]`.
    pub engine: Option<EngineSection>,
    /// `[turn]`.
    pub turn: Option<TurnSection>,
    #[allow(dead_code)]
    control: Option<IgnoredAny>,
    #[allow(dead_code)]
    modes: Option<IgnoredAny>,
}

impl EngineSection {
    /// The `switchyard-engine` flags this section sets.
    pub fn flags(&self, out: &mut Flags) {
        out.section("engine");
        out.value("workers", "workers", self.workers);
        out.value("io", "io", self.io);
        out.value("bind", "bind", self.bind);
        out.value("port_base", "port-base", self.port_base);
        out.value("socket", "socket", self.socket.as_ref().map(|p| p.display()));
        out.switch("pin", "no-pin", self.pin.map(|pin| !pin));
        out.value("socket_buffer", "socket-buffer", self.socket_buffer);
        out.value("recv_coalesce_us", "recv-coalesce-us", self.recv_coalesce_us);
    }
}

impl TurnSection {
    /// The `switchyard-engine` flags this section sets (its TURN server).
    pub fn engine_flags(&self, out: &mut Flags) {
        out.section("turn");
        out.switch("enabled", "no-turn", self.enabled.map(|on| !on));
        out.value("port", "turn-port", self.port);
        out.value("realm", "turn-realm", self.realm.as_ref());
        out.value("relay_ports", "relay-ports", self.relay_ports.as_ref());
        out.value("max_allocations_per_user", "turn-max-allocations-per-user", self.max_allocations_per_user);
        out.value("max_allocations", "turn-max-allocations", self.max_allocations);
        out.value("secret", "turn-secret", self.secret.as_ref());
    }

    /// The `switchyard-control` flags this section sets (the credentials it hands out).
    pub fn control_flags(&self, out: &mut Flags) {
        out.section("turn");
        out.values("urls", "turn-url", self.urls.as_deref());
        out.value("secret", "turn-secret", self.secret.as_ref());
        out.value("ttl_secs", "turn-ttl-secs", self.ttl_secs);
    }
}

impl EngineFile {
    /// Every `switchyard-engine` flag the file sets.
    pub fn flags(&self) -> Flags {
        let mut out = Flags::default();
        if let Some(e) = &self.engine {
            e.flags(&mut out);
        }
        if let Some(t) = &self.turn {
            t.engine_flags(&mut out);
        }
        out
    }
}

/// What a key in the file does to its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// The flag's value(s), as they would be written on the command line.
    Values(Vec<String>),
    /// A flag without a value: as if given (`true`) or not (`false`).
    Present(bool),
}

/// One key of the file, as the flag it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFlag {
    /// `[section] key`, for errors.
    pub key: String,
    /// The flag's long name, without `--`.
    pub long: &'static str,
    /// What it is set to.
    pub value: FlagValue,
}

/// The flags a file sets, gathered section by section.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    section: &'static str,
    /// In file order within each section.
    pub list: Vec<FileFlag>,
}

impl Flags {
    /// Keys added from now on belong to `[name]`.
    pub fn section(&mut self, name: &'static str) {
        self.section = name;
    }

    fn push(&mut self, key: &str, long: &'static str, value: FlagValue) {
        self.list.push(FileFlag { key: format!("[{}] {key}", self.section), long, value });
    }

    /// A key whose value is the flag's value.
    pub fn value(&mut self, key: &str, long: &'static str, value: Option<impl Display>) {
        if let Some(v) = value {
            self.push(key, long, FlagValue::Values(vec![v.to_string()]));
        }
    }

    /// A list key: the flag repeated once per item.
    pub fn values(&mut self, key: &str, long: &'static str, values: Option<&[String]>) {
        if let Some(v) = values {
            self.push(key, long, FlagValue::Values(v.to_vec()));
        }
    }

    /// A boolean key that stands for giving a value-less flag (or not).
    pub fn switch(&mut self, key: &str, long: &'static str, present: Option<bool>) {
        if let Some(p) = present {
            self.push(key, long, FlagValue::Present(p));
        }
    }
}

/// Parses the process's command line into `A`, with the defaults of its flags taken from the file
/// given by `--config` (an `Option<PathBuf>` field with id `config`), when there is one. `flags`
/// loads that file and says which flags it sets. Command-line mistakes exit the way `A::parse()`
/// does; file mistakes come back as a [`ConfigError`].
pub fn parse_args<A: Parser>(flags: impl FnOnce(&Path) -> Result<Flags, ConfigError>) -> Result<A, ConfigError> {
    parse_args_from(std::env::args_os().collect(), flags)
}

/// [`parse_args`] over a given command line (the first item is the program name).
pub fn parse_args_from<A: Parser>(
    argv: Vec<OsString>,
    flags: impl FnOnce(&Path) -> Result<Flags, ConfigError>,
) -> Result<A, ConfigError> {
    let cmd = A::command();
    let first = cmd.clone().try_get_matches_from(&argv).unwrap_or_else(|e| e.exit());
    let Some(path) = first.try_get_one::<PathBuf>("config").ok().flatten().cloned() else {
        return Ok(A::from_arg_matches(&first).unwrap_or_else(|e| e.exit()));
    };
    let flags = flags(&path)?;
    let file = path.display().to_string();
    let cmd = with_defaults(cmd, &flags, &file)?;
    // The command line parsed once already, so whatever fails now is a value from the file.
    let matches = cmd.try_get_matches_from(&argv).map_err(|e| blame(&e, &flags, &file))?;
    A::from_arg_matches(&matches).map_err(|e| blame(&e, &flags, &file))
}

fn with_defaults(mut cmd: Command, flags: &Flags, file: &str) -> Result<Command, ConfigError> {
    for f in &flags.list {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(f.long)) else {
            return Err(ConfigError::Key {
                file: file.to_string(),
                line: None,
                key: f.key.clone(),
                message: format!("{} has no --{} flag in this build", cmd.get_name(), f.long),
            });
        };
        let values = match &f.value {
            FlagValue::Values(v) => v.clone(),
            FlagValue::Present(false) => continue,
            // What the flag stores when given: true for --sfu-only (SetTrue), false for a SetFalse flag.
            FlagValue::Present(true) => vec![(!matches!(arg.get_action(), ArgAction::SetFalse)).to_string()],
        };
        let id = arg.get_id().clone();
        cmd = cmd.mut_arg(id, |a| a.default_values(values));
    }
    Ok(cmd)
}

/// Turns clap's complaint about a default into one about the key that set it.
fn blame(e: &clap::Error, flags: &Flags, file: &str) -> ConfigError {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
    let arg = e.get(clap::error::ContextKind::InvalidArg).map(|a| a.to_string()).unwrap_or_default();
    let key = flags
        .list
        .iter()
        .find(|f| arg == format!("--{}", f.long) || arg.starts_with(&format!("--{} ", f.long)))
        .map_or_else(|| "(flags)".to_string(), |f| f.key.clone());
    ConfigError::Key { file: file.to_string(), line: None, key, message: first }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(text: &str) -> Result<EngineFile, String> {
        parse::<EngineFile>(text, "switchyard.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_engine_sections_and_skips_the_control_ones() {
        let f = engine(
            "[engine]\nworkers = 4\nio = \"mmsg\"\nbind = \"0.0.0.0\"\nport_base = 40000\nsocket = \"/run/x.sock\"\n\
             pin = false\nsocket_buffer = 8388608\nrecv_coalesce_us = 250\n[turn]\nport = 3478\nsecret = \"s\"\nurls = [\"turn:a\"]\n\
             [control]\nwhatever = 1\n[modes]\nc2c_max = \"not checked here\"\n",
        )
        .unwrap();
        let e = f.engine.clone().unwrap();
        assert_eq!(e.workers, Some(4));
        assert_eq!(e.io, Some(IoKind::Mmsg));
        assert_eq!(e.bind, Some(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(e.pin, Some(false));
        let flags: Vec<_> = f.flags().list.into_iter().map(|f| (f.key, f.long, f.value)).collect();
        assert!(flags.contains(&("[engine] workers".into(), "workers", FlagValue::Values(vec!["4".into()]))));
        assert!(flags.contains(&("[engine] pin".into(), "no-pin", FlagValue::Present(true))));
        assert!(flags.contains(&("[engine] socket".into(), "socket", FlagValue::Values(vec!["/run/x.sock".into()]))));
        assert!(flags.contains(&("[engine] recv_coalesce_us".into(), "recv-coalesce-us", FlagValue::Values(vec!["250".into()]))));
        assert!(flags.contains(&("[turn] secret".into(), "turn-secret", FlagValue::Values(vec!["s".into()]))));
        // urls are the control daemon's: not an engine flag.
        assert!(!flags.iter().any(|f| f.1 == "turn-url"));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let cases = [
            ("[engine]\nworkers = \"many\"\n", "switchyard.toml:2: [engine] workers: expected an integer 1..=1024, got \"many\""),
            ("[engine]\nworkers = 0\n", "switchyard.toml:2: [engine] workers: expected an integer 1..=1024, got 0"),
            ("[engine]\nport_base = 70000\n", "[engine] port_base: expected an integer 0..=65535, got 70000"),
            ("[engine]\nio = \"epoll\"\n", "[engine] io: expected \"uring\" or \"mmsg\", got \"epoll\""),
            ("[engine]\nbind = \"localhost\"\n", "[engine] bind: expected an IP address"),
            ("[engine]\npin = \"yes\"\n", "[engine] pin: expected true or false, got \"yes\""),
            ("[engine]\nrecv_coalesce_us = 20000\n", "[engine] recv_coalesce_us: expected an integer 0..=10000, got 20000"),
            ("[engine]\nsocket = \"engine.sock\"\n", "[engine] socket: expected an absolute path, got \"engine.sock\""),
            ("\n[engine]\nworkrs = 2\n", "switchyard.toml:3: [engine] workrs: unknown key; expected one of workers, io,"),
            ("[engin]\nworkers = 2\n", "switchyard.toml:1: [engin]: unknown section; expected one of engine, turn, control, modes"),
            ("engine = 5\n", "[engine]: invalid type: integer `5`, expected a table"),
            ("[turn]\nrelay_ports = \"9-2\"\n", "[turn] relay_ports: expected a port range \"LOW-HIGH\" within 1-65535, got \"9-2\""),
            ("[turn]\nurls = [\"turn:a\", 3]\n", "[turn] urls: expected a list of non-empty strings, got 3 in the list"),
            ("[engine]\nworkers = \n", "switchyard.toml:2: not valid TOML"),
        ];
        for (text, want) in cases {
            let got = engine(text).unwrap_err();
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
    }

    #[derive(Parser, Debug)]
    struct TestArgs {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value_t = 0)]
        port_base: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        #[arg(long)]
        no_pin: bool,
        #[arg(long = "turn-url")]
        turn_urls: Vec<String>,
        #[arg(long, value_parser = clap::value_parser!(u16).range(1024..))]
        turn_port: Option<u16>,
    }

    fn args(argv: &[&str], file: &str) -> Result<TestArgs, String> {
        let argv = std::iter::once("test").chain(argv.iter().copied()).map(OsString::from).collect();
        parse_args_from::<TestArgs>(argv, |_| {
            let f: EngineFile = parse(file, "switchyard.toml")?;
            let mut flags = f.flags();
            if let Some(t) = &f.turn {
                t.control_flags(&mut flags);
            }
            Ok(flags)
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_command_line_beats_the_file_which_beats_the_defaults() {
        let file = "[engine]\nworkers = 3\nport_base = 5000\npin = false\n[turn]\nurls = [\"turn:a\", \"turn:b\"]\n";
        let a = args(&["--config", "x"], file).unwrap();
        assert_eq!((a.workers, a.port_base, a.no_pin), (Some(3), 5000, true));
        assert_eq!(a.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(a.turn_urls, ["turn:a", "turn:b"]);
        let a = args(&["--config", "x", "--workers", "1", "--port-base", "6000", "--turn-url", "turn:c"], file).unwrap();
        assert_eq!((a.workers, a.port_base, a.no_pin), (Some(1), 6000, true));
        assert_eq!(a.turn_urls, ["turn:c"]);
        let a = args(&[], file).unwrap();
        assert_eq!((a.workers, a.port_base, a.no_pin), (None, 0, false), "no --config: no file");
        let a = args(&["--config", "x"], "[engine]\npin = true\n").unwrap();
        assert!(!a.no_pin);
    }

    #[test]
    fn a_value_the_flag_refuses_is_blamed_on_its_key() {
        let e = args(&["--config", "x"], "[turn]\nport = 80\n").unwrap_err();
        assert!(e.starts_with("x: [turn] port: invalid value '80' for '--turn-port <TURN_PORT>'"), "{e}");
    }

    #[test]
    fn the_turn_section_configures_the_engines_turn_server() {
        #[derive(Parser)]
        struct A {
            #[arg(long)]
            config: Option<PathBuf>,
            #[command(flatten)]
            turn: crate::turn::TurnArgs,
        }
        let parse_with = |file: &'static str, cli: &[&str]| {
            let argv = ["engine", "--config", "x"].iter().chain(cli).map(OsString::from).collect();
            parse_args_from::<A>(argv, |_| Ok(parse::<EngineFile>(file, "switchyard.toml")?.flags())).map_err(|e| e.to_string())
        };
        let file = "[turn]\nport = 3479\nrealm = \"r\"\nrelay_ports = \"50000-50100\"\nmax_allocations_per_user = 3\n\
                    max_allocations = 20\nsecret = \"s\"\nurls = [\"turn:x\"]\nttl_secs = 600\n";
        let c = parse_with(file, &[]).unwrap().turn.config().unwrap();
        assert_eq!((c.port, c.realm.as_str(), c.relay_ports), (3479, "r", (50000, 50100)));
        assert_eq!((c.max_allocations_per_user, c.max_allocations, c.secret.as_str()), (3, 20, "s"));
        assert_eq!(parse_with(file, &["--turn-port", "4000"]).unwrap().turn.config().unwrap().port, 4000);
        assert!(parse_with("[turn]\nenabled = false\n", &[]).unwrap().turn.config().is_none());
        assert!(parse_with("[turn]\nenabled = true\n", &[]).unwrap().turn.config().is_some());
    }

    #[test]
    fn a_key_whose_flag_this_binary_lacks_is_an_error() {
        let e = args(&["--config", "x"], "[engine]\nio = \"mmsg\"\n").unwrap_err();
        assert!(e.starts_with("x: [engine] io: ") && e.contains("has no --io flag"), "{e}");
    }
}
