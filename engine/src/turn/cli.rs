//! The `switchyard-engine` TURN flags (flattened into the binary's arguments; the `[turn]` section
//! of the configuration file sets their defaults, see `config.rs`).

use super::{parse_port_range, TurnConfig, DEFAULT_MAX_ALLOCATIONS, DEFAULT_MAX_PER_USER, DEFAULT_PORT, DEFAULT_REALM, DEFAULT_SECRET};

/// TURN server flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TurnArgs {
    /// Do not run the TURN server (nor its STUN binding service).
    #[arg(long)]
    pub no_turn: bool,
    /// UDP port of the TURN server and its STUN binding service, on --bind.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub turn_port: u16,
    /// Shared secret of the TURN REST credentials; switchyard-control mints them with the same one.
    #[arg(long, env = "SWITCHYARD_TURN_SECRET", default_value = DEFAULT_SECRET, hide_env_values = true, hide_default_value = true)]
    pub turn_secret: String,
    /// REALM of the TURN long-term credentials.
    #[arg(long, default_value = DEFAULT_REALM)]
    pub turn_realm: String,
    /// UDP ports for relayed transport addresses, "LOW-HIGH" (one per allocation).
    #[arg(long, value_name = "LOW-HIGH", default_value = "49152-65535", value_parser = parse_port_range)]
    pub relay_ports: (u16, u16),
    /// Most TURN allocations one user (the part of the username after ':') may hold.
    #[arg(long, default_value_t = DEFAULT_MAX_PER_USER, value_parser = clap::value_parser!(u32).range(1..))]
    pub turn_max_allocations_per_user: u32,
    /// Most TURN allocations the engine holds.
    #[arg(long, default_value_t = DEFAULT_MAX_ALLOCATIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub turn_max_allocations: u32,
}

impl TurnArgs {
    /// The TURN configuration, or `None` with `--no-turn`.
    pub fn config(&self) -> Option<TurnConfig> {
        if self.no_turn {
            return None;
        }
        Some(TurnConfig {
            port: self.turn_port,
            realm: self.turn_realm.clone(),
            secret: self.turn_secret.clone(),
            relay_ports: self.relay_ports,
            max_allocations_per_user: self.turn_max_allocations_per_user,
            max_allocations: self.turn_max_allocations,
            ..TurnConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct A {
        #[command(flatten)]
        turn: TurnArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let a = A::parse_from(["x"]);
        let c = a.turn.config().unwrap();
        assert_eq!((c.port, c.relay_ports, c.max_allocations_per_user), (3478, (49152, 65535), 10));
        assert_eq!((c.realm.as_str(), c.max_allocations), ("switchyard", 1000));
        let a = A::parse_from(["x", "--turn-port", "3479", "--relay-ports", "49160-49200", "--turn-realm", "r"]);
        let c = a.turn.config().unwrap();
        assert_eq!((c.port, c.relay_ports, c.realm.as_str()), (3479, (49160, 49200), "r"));
        assert!(A::parse_from(["x", "--no-turn"]).turn.config().is_none());
        assert!(A::try_parse_from(["x", "--relay-ports", "9-2"]).is_err());
        assert!(A::try_parse_from(["x", "--turn-max-allocations-per-user", "0"]).is_err());
    }
}
