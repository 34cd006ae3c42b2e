//! The control daemon's sections of the configuration file both daemons read: `[control]`, `[modes]`
//! and the credential half of `[turn]`. Loading, checking, error messages and the "each key is the
//! default of its flag" rule are `switchyard_engine::config`'s; this module says which keys the
//! control daemon has and which flags they stand for.
//!
//! `switchyard-control` skips `[engine]`; the all-in-one `switchyard` reads it too (its `--media-addr`,
//! `--media-port` and `--workers` are `[engine] bind`, `port_base` and `workers`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{Deserializer, Error as _, IgnoredAny};
use serde::Deserialize;
use switchyard_engine::config::{check, EngineSection, Flags, TurnSection};
use switchyard_engine::EngineConfig;

/// `[control]`. Each key is the default of the flag of the same name (`engine_socket` is
/// `--engine-socket`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ControlSection {
    /// HTTP address: web client, /ws signaling, /metrics, /healthz, /readyz, /api.
    #[serde(default, deserialize_with = "check::socket_addr")]
    pub http: Option<SocketAddr>,
    /// The engine's control socket.
    #[serde(default, deserialize_with = "check::path")]
    pub engine_socket: Option<PathBuf>,
    /// DTLS certificate and key (PEM), created on first start.
    #[serde(default, deserialize_with = "check::path")]
    pub identity: Option<PathBuf>,
    /// Seconds a transport may take to complete DTLS.
    #[serde(default, deserialize_with = "check::int::<_, u64, 1, 300>")]
    pub dtls_timeout_secs: Option<u64>,
    /// Most participants in one room.
    #[serde(default, deserialize_with = "check::int::<_, usize, 1, 100_000>")]
    pub max_participants: Option<usize>,
}

/// `[modes]`: when a room runs browser to browser, as a mesh, or through the SFU.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ModesSection {
    /// Largest room that runs browser to browser (`--c2c-max`).
    #[serde(default, deserialize_with = "check::int::<_, usize, 0, 100_000>")]
    pub c2c_max: Option<usize>,
    /// Largest room that runs as a full mesh (`--p2p-max`).
    #[serde(default, deserialize_with = "check::int::<_, usize, 0, 100_000>")]
    pub p2p_max: Option<usize>,
    /// How far below `p2p_max` an SFU room must shrink to go back to the mesh (`--hysteresis`).
    #[serde(default, deserialize_with = "check::int::<_, usize, 0, 100_000>")]
    pub hysteresis: Option<usize>,
    /// Rooms pinned to one mode, `room = "c2c" | "p2p" | "sfu"` (`--pin-room ROOM=MODE`, repeated).
    #[serde(default, deserialize_with = "pins")]
    pub pinned: Option<Vec<String>>,
    /// Every room in the SFU (`--sfu-only`).
    #[serde(default, deserialize_with = "check::boolean")]
    pub sfu_only: Option<bool>,
    /// Networks whose ICE candidates are relayed between mesh participants (`--allowed-candidate-net`).
    #[serde(default, deserialize_with = "check::texts")]
    pub allowed_candidate_nets: Option<Vec<String>>,
}

/// `[modes] pinned`: a table of room names to modes, as `ROOM=MODE` flag values.
fn pins<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let expected = "a table of room = \"c2c\", \"p2p\" or \"sfu\"";
    let t = match toml::Value::deserialize(d)? {
        toml::Value::Table(t) => t,
        other => return Err(D::Error::custom(format!("expected {expected}, got {}", check::got(&other)))),
    };
    t.iter()
        .map(|(room, mode)| match mode.as_str() {
            Some(m @ ("c2c" | "p2p" | "sfu")) => Ok(format!("{room}={m}")),
            _ => Err(D::Error::custom(format!("expected {expected}, got {room} = {}", check::got(mode)))),
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The file as the control daemons read it. `E` is what `[engine]` becomes: skipped
/// ([`ControlFile`]) or checked ([`AllInOneFile`]). Any other section is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile<E> {
    /// `[engine]`.
    pub engine: Option<E>,
    /// `[turn]`.
    pub turn: Option<TurnSection>,
    /// `[control]`.
    pub control: Option<ControlSection>,
    /// `[modes]`.
    pub modes: Option<ModesSection>,
}

/// What `switchyard-control` reads.
pub type ControlFile = ConfigFile<IgnoredAny>;
/// What the all-in-one `switchyard` reads.
pub type AllInOneFile = ConfigFile<EngineSection>;

impl<E> ConfigFile<E> {
    /// The `switchyard-control` flags the file sets (`[control]`, `[modes]`, `[turn]`).
    pub fn control_flags(&self) -> Flags {
        let mut out = Flags::default();
        if let Some(c) = &self.control {
            out.section("control");
            out.value("http", "http", c.http);
            out.value("engine_socket", "engine-socket", c.engine_socket.as_ref().map(|p| p.display()));
            out.value("identity", "identity", c.identity.as_ref().map(|p| p.display()));
            out.value("dtls_timeout_secs", "dtls-timeout-secs", c.dtls_timeout_secs);
            out.value("max_participants", "max-participants", c.max_participants);
        }
        if let Some(m) = &self.modes {
            out.section("modes");
            out.value("c2c_max", "c2c-max", m.c2c_max);
            out.value("p2p_max", "p2p-max", m.p2p_max);
            out.value("hysteresis", "hysteresis", m.hysteresis);
            out.values("pinned", "pin-room", m.pinned.as_deref());
            out.switch("sfu_only", "sfu-only", m.sfu_only);
            out.values("allowed_candidate_nets", "allowed-candidate-net", m.allowed_candidate_nets.as_deref());
        }
        if let Some(t) = &self.turn {
            t.control_flags(&mut out);
        }
        out
    }
}

impl AllInOneFile {
    /// The all-in-one's flags: the control daemon's, and `[engine] bind`, `port_base` and `workers`
    /// as `--media-addr`, `--media-port` and `--workers`.
    pub fn all_in_one_flags(&self) -> Flags {
        let mut out = self.control_flags();
        if let Some(e) = &self.engine {
            out.section("engine");
            out.value("bind", "media-addr", e.bind);
            out.value("port_base", "media-port", e.port_base);
            out.value("workers", "workers", e.workers);
        }
        out
    }

    /// The `[engine]` keys the all-in-one has no flag for: `io`, `pin`, `socket_buffer`,
    /// `recv_coalesce_us`. (`socket` is
    /// not used: the all-in-one's engine listens on `[control] engine_socket` or a private socket.)
    pub fn apply_engine(&self, cfg: &mut EngineConfig) {
        let Some(e) = &self.engine else { return };
        if e.io.is_some() {
            cfg.io = e.io;
        }
        if let Some(pin) = e.pin {
            cfg.pin = pin;
        }
        if let Some(b) = e.socket_buffer {
            cfg.socket_buffer = b;
        }
        if let Some(us) = e.recv_coalesce_us {
            cfg.recv_coalesce = std::time::Duration::from_micros(us);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ControlConfig;
    use clap::{CommandFactory, Parser};
    use switchyard_engine::config::{parse, ConfigError, FlagValue};

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        control: ControlConfig,
    }

    const EVERY_KEY: &str = r#"
[engine]
workers = 2
[control]
http = "0.0.0.0:8443"
engine_socket = "/run/switchyard/engine.sock"
identity = "/var/lib/switchyard/dtls.pem"
dtls_timeout_secs = 20
max_participants = 50
[modes]
c2c_max = 2
p2p_max = 4
hysteresis = 1
pinned = { lobby = "sfu", pair = "c2c" }
sfu_only = false
allowed_candidate_nets = ["10.0.0.0/8"]
[turn]
secret = "s3cret"
urls = ["turn:media.example.net:3478?transport=udp"]
ttl_secs = 3600
port = 3478
"#;

    #[test]
    fn every_control_key_has_its_flag() {
        let file: ControlFile = parse(EVERY_KEY, "switchyard.toml").unwrap();
        let flags = file.control_flags();
        let cmd = Args::command();
        let present: Vec<_> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        for f in &flags.list {
            assert!(present.contains(&f.long), "{} has no --{}", f.key, f.long);
        }
        let longs: Vec<_> = flags.list.iter().map(|f| f.long).collect();
        assert!(!longs.contains(&"turn-port"), "[turn] port is the engine's");
        let pins = flags.list.iter().find(|f| f.long == "pin-room").unwrap();
        assert_eq!(pins.value, FlagValue::Values(vec!["lobby=sfu".into(), "pair=c2c".into()]));
    }

    #[test]
    fn the_file_sets_the_control_daemon() {
        let argv = |extra: &[&str]| {
            ["switchyard-control", "--config", "x"].iter().chain(extra).map(std::ffi::OsString::from).collect::<Vec<_>>()
        };
        let flags = |_: &std::path::Path| -> Result<Flags, ConfigError> {
            Ok(parse::<ControlFile>(EVERY_KEY, "switchyard.toml")?.control_flags())
        };
        let a: Args = switchyard_engine::config::parse_args_from(argv(&[]), flags).unwrap();
        assert_eq!(a.control.http, SocketAddr::from(([0, 0, 0, 0], 8443)));
        assert_eq!(a.control.identity, Some(PathBuf::from("/var/lib/switchyard/dtls.pem")));
        assert_eq!((a.control.dtls_timeout_secs, a.control.max_participants), (20, 50));
        assert_eq!(a.control.turn_secret, "s3cret");
        assert_eq!(a.control.turn_ttl_secs, 3600);
        assert_eq!(a.control.modes.p2p_max, 4);
        assert_eq!(a.control.modes.pinned.len(), 2);
        assert_eq!(a.control.modes.allowed_candidate_nets.len(), 1);
        let a: Args =
            switchyard_engine::config::parse_args_from(argv(&["--http", "127.0.0.1:9000", "--p2p-max", "3"]), flags).unwrap();
        assert_eq!(a.control.http, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(a.control.modes.p2p_max, 3);
    }

    #[test]
    fn control_errors_name_the_key() {
        let cases = [
            ("[control]\nhtp = \"127.0.0.1:80\"\n", "switchyard.toml:2: [control] htp: unknown key; expected one of http,"),
            ("[control]\nhttp = \"8080\"\n", "[control] http: expected an address and port"),
            ("[control]\nmax_participants = 0\n", "[control] max_participants: expected an integer 1..=100000, got 0"),
            ("[modes]\npinned = { lobby = \"mesh\" }\n", "[modes] pinned: expected a table of room = \"c2c\", \"p2p\" or \"sfu\", got lobby = \"mesh\""),
            ("[modes]\nsfu_only = 1\n", "[modes] sfu_only: expected true or false, got 1"),
            ("[turn]\nttl_secs = 5\n", "[turn] ttl_secs: expected an integer 60..=2592000, got 5"),
            ("[engine]\nworkers = \"many\"\n", "[engine] workers: expected an integer 1..=1024"),
        ];
        for (text, want) in cases {
            let got = parse::<AllInOneFile>(text, "switchyard.toml").unwrap_err().to_string();
            assert!(got.contains(want), "{text:?}: got {got:?}, want {want:?}");
        }
        // switchyard-control skips [engine] entirely.
        assert!(parse::<ControlFile>("[engine]\nworkers = \"many\"\n", "switchyard.toml").is_ok());
    }

    #[test]
    fn the_example_file_is_valid_for_both_daemons() {
        let text = include_str!("../../systemd/switchyard.toml");
        let file: AllInOneFile = parse(text, "switchyard.toml").unwrap();
        parse::<switchyard_engine::config::EngineFile>(text, "switchyard.toml").unwrap();
        assert!(file.engine.is_some() && file.control.is_some() && file.modes.is_some());
    }
}
