//! Mode policy: which topology a room uses for its size (C2C, P2P mesh, SFU), with hysteresis so a
//! room near a threshold does not flap, and per-room pinning. Also the operator's filter on the ICE
//! candidates the server relays between mesh participants.
//!
//! Everything here is sans-I/O: the hub asks [`ModePolicy::decide`] after every join and leave and
//! carries out the switch (docs/modes.md).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A room's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Two people, browser to browser (the mesh with one pair).
    C2c,
    /// A full mesh: one peer connection per pair of participants; the server only relays signaling.
    P2p,
    /// Through the SFU: a publish and a subscribe connection per participant to the server.
    #[default]
    Sfu,
}

impl Mode {
    /// The name used in signaling and on the command line: `c2c`, `p2p`, `sfu`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::C2c => "c2c",
            Mode::P2p => "p2p",
            Mode::Sfu => "sfu",
        }
    }

    /// C2C and P2P are both the mesh (peer connections between browsers); they differ only in name.
    pub fn is_mesh(self) -> bool {
        self != Mode::Sfu
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "c2c" => Ok(Mode::C2c),
            "p2p" | "mesh" => Ok(Mode::P2p),
            "sfu" => Ok(Mode::Sfu),
            _ => Err(format!("unknown mode {s:?}: expected c2c, p2p or sfu")),
        }
    }
}

/// `--pin-room ROOM=MODE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The room name.
    pub room: String,
    /// Its mode, whatever its size.
    pub mode: Mode,
}

impl FromStr for Pin {
    type Err = String;

    fn from_str(s: &str) -> Result<Pin, String> {
        let (room, mode) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected ROOM=MODE"))?;
        if room.is_empty() || room.len() > 64 || !room.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("{room:?} is not a room name (1-64 letters, digits, '-', '_', '.')"));
        }
        Ok(Pin { room: room.to_string(), mode: mode.parse()? })
    }
}

/// An IP network, `ADDR/PREFIX` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: prefix must be 0-{max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// How rooms choose their mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ModePolicy {
    /// Largest room that runs browser to browser (C2C).
    #[arg(long, default_value_t = 2)]
    pub c2c_max: usize,
    /// Largest room that runs as a full P2P mesh; above it, the SFU.
    #[arg(long, default_value_t = 6)]
    pub p2p_max: usize,
    /// A room in the SFU goes back to the mesh only once it has shrunk to `p2p_max - hysteresis`
    /// participants, so a room at the threshold does not switch back and forth.
    #[arg(long, default_value_t = 1)]
    pub hysteresis: usize,
    /// Pin rooms to one mode: `ROOM=MODE` (mode: c2c, p2p, sfu); repeatable. A pin beats `--sfu-only`.
    #[arg(long = "pin-room", value_name = "ROOM=MODE")]
    pub pinned: Vec<Pin>,
    /// Every room in the SFU regardless of size (the behaviour before hybrid rooms).
    #[arg(long)]
    pub sfu_only: bool,
    /// Relay only ICE candidates (and SDP candidate lines) between mesh participants whose address is
    /// in one of these networks, e.g. `10.0.0.0/8`; repeatable. Default: relay every candidate.
    #[arg(long = "allowed-candidate-net", value_name = "CIDR")]
    pub allowed_candidate_nets: Vec<Cidr>,
}

impl Default for ModePolicy {
    /// The command line's defaults.
    fn default() -> ModePolicy {
        ModePolicy {
            c2c_max: 2,
            p2p_max: 6,
            hysteresis: 1,
            pinned: Vec::new(),
            sfu_only: false,
            allowed_candidate_nets: Vec::new(),
        }
    }
}

/// The address field of an ICE candidate (`candidate:<foundation> <component> <transport> <priority>
/// <address> <port> typ ...`, with or without a leading `a=`).
fn candidate_address(candidate: &str) -> Option<&str> {
    let c = candidate.trim();
    let c = c.strip_prefix("a=").unwrap_or(c);
    if !c.starts_with("candidate:") {
        return None;
    }
    c.split_ascii_whitespace().nth(4)
}

impl ModePolicy {
    /// The mode `room` is pinned to, if any (the last pin for it wins).
    pub fn pinned(&self, room: &str) -> Option<Mode> {
        self.pinned.iter().rev().find(|p| p.room == room).map(|p| p.mode)
    }

    /// The mode a room should be in.
    ///
    /// `current` is its mode now (`None` for a room being created), `size` its participants after
    /// the join or leave at hand, and `mesh_capable` whether every one of them can run the mesh (a
    /// client that cannot, like an SFU-only bot, keeps the room in the SFU). Pinned rooms never
    /// change; otherwise a room above `p2p_max` is in the SFU and comes back to the mesh only at
    /// `p2p_max - hysteresis` or fewer; a mesh room of at most `c2c_max` is called C2C.
    pub fn decide(&self, room: &str, current: Option<Mode>, size: usize, mesh_capable: bool) -> Mode {
        if let Some(pinned) = self.pinned(room) {
            return pinned;
        }
        if self.sfu_only || !mesh_capable {
            return Mode::Sfu;
        }
        let mesh = if size <= self.c2c_max.min(self.p2p_max) { Mode::C2c } else { Mode::P2p };
        match current {
            Some(Mode::Sfu) if size > self.p2p_max.saturating_sub(self.hysteresis) => Mode::Sfu,
            _ if size > self.p2p_max => Mode::Sfu,
            _ => mesh,
        }
    }

    /// Whether a participant that cannot run the mesh may join `room` (not if it is pinned to a mesh).
    pub fn admits(&self, room: &str, mesh_capable: bool) -> bool {
        mesh_capable || !self.pinned(room).is_some_and(Mode::is_mesh)
    }

    /// Whether to relay an ICE candidate (`candidate:...` or `a=candidate:...`). With no networks
    /// configured every candidate passes; otherwise only those whose address is an IP in one of them
    /// (an mDNS `.local` name cannot be checked and is dropped). An empty candidate (end of
    /// candidates) always passes.
    pub fn allows_candidate(&self, candidate: &str) -> bool {
        if self.allowed_candidate_nets.is_empty() || candidate.trim().is_empty() {
            return true;
        }
        let Some(addr) = candidate_address(candidate) else { return false };
        let Ok(ip) = addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return false };
        self.allowed_candidate_nets.iter().any(|n| n.contains(ip))
    }

    /// `sdp` without the `a=candidate:` lines the filter refuses (unchanged when no filter is set).
    pub fn filter_sdp(&self, sdp: &str) -> String {
        if self.allowed_candidate_nets.is_empty() {
            return sdp.to_string();
        }
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let content = line.trim_end_matches(['\r', '\n']);
            if content.starts_with("a=candidate:") && !self.allows_candidate(content) {
                continue;
            }
            out.push_str(line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: ModePolicy,
    }

    fn policy(args: &[&str]) -> ModePolicy {
        Cli::try_parse_from(std::iter::once("switchyard").chain(args.iter().copied())).unwrap().policy
    }

    /// Sizes 1..=n joining one by one then leaving one by one: the modes the room goes through.
    fn walk(p: &ModePolicy, room: &str, sizes: &[usize]) -> Vec<Mode> {
        let mut current = None;
        sizes
            .iter()
            .map(|&n| {
                let m = p.decide(room, current, n, true);
                current = Some(m);
                m
            })
            .collect()
    }

    #[test]
    fn the_command_line_defaults_are_c2c_2_p2p_6_hysteresis_1() {
        let p = policy(&[]);
        assert_eq!((p.c2c_max, p.p2p_max, p.hysteresis, p.sfu_only), (2, 6, 1, false));
        assert!(p.pinned.is_empty() && p.allowed_candidate_nets.is_empty());
        let d = ModePolicy::default();
        assert_eq!((d.c2c_max, d.p2p_max, d.hysteresis), (p.c2c_max, p.p2p_max, p.hysteresis));
    }

    #[test]
    fn default_thresholds_grow_from_c2c_through_p2p_to_sfu() {
        let p = ModePolicy::default();
        use Mode::*;
        assert_eq!(walk(&p, "r", &[1, 2, 3, 4, 5, 6, 7, 8]), vec![C2c, C2c, P2p, P2p, P2p, P2p, Sfu, Sfu]);
        // A room created big (e.g. after a restart) starts where its size says.
        assert_eq!(p.decide("r", None, 7, true), Sfu);
        assert_eq!(p.decide("r", None, 6, true), P2p);
    }

    #[test]
    fn default_thresholds_shrink_back_to_the_mesh_with_hysteresis() {
        let p = ModePolicy::default();
        use Mode::*;
        // 7 -> SFU; at 6 it stays (hysteresis 1), at 5 it is a mesh again, at 2 C2C.
        assert_eq!(walk(&p, "r", &[6, 7, 6, 5, 4, 3, 2, 1]), vec![P2p, Sfu, Sfu, P2p, P2p, P2p, C2c, C2c]);
    }

    #[test]
    fn no_flapping_at_the_threshold() {
        let p = ModePolicy::default();
        // Someone joins and leaves at the threshold over and over: one switch to the SFU, then none.
        let sizes = [6, 7, 6, 7, 6, 7, 6, 7, 6];
        let modes = walk(&p, "r", &sizes);
        let switches = modes.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 1, "{modes:?}");
        assert_eq!(modes.last(), Some(&Mode::Sfu));
        // The same around the way back: 5 <-> 6 in the mesh never returns to the SFU.
        let modes = walk(&p, "r", &[7, 5, 6, 5, 6, 5]);
        assert_eq!(modes.windows(2).filter(|w| w[0] != w[1]).count(), 1, "{modes:?}");
        // C2C <-> P2P is only a name (same mesh), so it follows the size exactly.
        assert_eq!(walk(&p, "r", &[2, 3, 2]), vec![Mode::C2c, Mode::P2p, Mode::C2c]);
    }

    #[test]
    fn hysteresis_is_configurable() {
        let p = policy(&["--c2c-max", "2", "--p2p-max", "3", "--hysteresis", "0"]);
        use Mode::*;
        assert_eq!(walk(&p, "r", &[3, 4, 3, 2]), vec![P2p, Sfu, P2p, C2c]);
        let p = policy(&["--p2p-max", "3"]);
        assert_eq!(walk(&p, "r", &[3, 4, 3, 2, 3]), vec![P2p, Sfu, Sfu, C2c, P2p]);
        // A hysteresis as big as the threshold keeps a room in the SFU until it empties.
        let p = policy(&["--p2p-max", "3", "--hysteresis", "5"]);
        assert_eq!(walk(&p, "r", &[4, 1]), vec![Sfu, Sfu]);
    }

    #[test]
    fn pinned_rooms_never_change() {
        let p = policy(&["--pin-room", "town-hall=sfu", "--pin-room", "duo=p2p", "--pin-room", "pair=c2c"]);
        use Mode::*;
        assert_eq!(walk(&p, "town-hall", &[1, 2, 3, 9, 2, 1]), vec![Sfu; 6]);
        assert_eq!(walk(&p, "duo", &[1, 2, 7, 40, 2]), vec![P2p; 5]);
        assert_eq!(walk(&p, "pair", &[1, 2, 3]), vec![C2c; 3]);
        // Others follow the thresholds.
        assert_eq!(walk(&p, "other", &[2, 7]), vec![C2c, Sfu]);
        // A pin beats --sfu-only, and the last pin for a room wins.
        let p = policy(&["--sfu-only", "--pin-room", "duo=sfu", "--pin-room", "duo=c2c"]);
        assert_eq!(p.decide("duo", Some(Sfu), 2, true), C2c);
        assert_eq!(p.decide("other", None, 2, true), Sfu);
        // A pinned mesh does not admit a client that cannot run the mesh; other rooms do (in the SFU).
        let p = policy(&["--pin-room", "duo=p2p"]);
        assert!(!p.admits("duo", false));
        assert!(p.admits("duo", true) && p.admits("other", false));
    }

    #[test]
    fn bad_pins_are_refused_at_start() {
        let parse = |a: &str| Cli::try_parse_from(["switchyard", "--pin-room", a]).map(|c| c.policy.pinned);
        assert!(parse("x=fast").is_err());
        assert!(parse("no-equals").is_err());
        assert!(parse("has space=sfu").is_err());
        assert_eq!(parse("a.b_c-1=P2P").unwrap(), vec![Pin { room: "a.b_c-1".into(), mode: Mode::P2p }]);
    }

    #[test]
    fn sfu_only_and_incapable_clients_keep_rooms_in_the_sfu() {
        let p = policy(&["--sfu-only"]);
        assert_eq!(walk(&p, "r", &[1, 2, 3]), vec![Mode::Sfu; 3]);
        let p = ModePolicy::default();
        assert_eq!(p.decide("r", None, 2, false), Mode::Sfu);
        // Once the SFU-only client leaves, the room goes back to the mesh by the usual rule.
        assert_eq!(p.decide("r", Some(Mode::Sfu), 2, true), Mode::C2c);
        assert_eq!(p.decide("r", Some(Mode::Sfu), 6, true), Mode::Sfu);
    }

    #[test]
    fn cidrs_parse_and_match() {
        let n: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(n.contains("127.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:127.9.9.9".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let one: Cidr = "192.168.1.7".parse().unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()) && !one.contains("192.168.1.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn the_candidate_filter_keeps_only_allowed_networks() {
        let open = ModePolicy::default();
        let host = "candidate:1 1 udp 2122260223 192.168.1.20 51000 typ host generation 0";
        let lo = "candidate:2 1 udp 2122260223 127.0.0.1 51001 typ host generation 0 ufrag abcd";
        let mdns = "candidate:3 1 udp 2122260223 0b4c2f5e-1111-2222-3333-444455556666.local 51002 typ host";
        assert!(open.allows_candidate(host) && open.allows_candidate(mdns));
        let p = policy(&["--allowed-candidate-net", "127.0.0.0/8", "--allowed-candidate-net", "::1/128"]);
        assert!(p.allows_candidate(lo));
        assert!(p.allows_candidate(&format!("a={lo}")));
        assert!(!p.allows_candidate(host));
        assert!(!p.allows_candidate(mdns));
        assert!(p.allows_candidate("candidate:4 1 udp 1 ::1 5 typ host"));
        assert!(p.allows_candidate(""), "end of candidates");
        assert!(!p.allows_candidate("garbage"));

        let sdp = format!("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={host}\r\na={lo}\r\na={mdns}\r\na=end-of-candidates\r\n");
        let filtered = p.filter_sdp(&sdp);
        assert_eq!(filtered, format!("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={lo}\r\na=end-of-candidates\r\n"));
        assert_eq!(open.filter_sdp(&sdp), sdp);
        assert!(Cli::try_parse_from(["switchyard", "--allowed-candidate-net", "300.0.0.0/8"]).is_err());
    }
}
