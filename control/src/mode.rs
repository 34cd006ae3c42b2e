//! Mode policy: which topology a room uses for its size (C2C, P2P mesh, SFU), with hysteresis so a
//! room near a threshold does not flap, and per-room pinning.

/// How rooms choose their mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ModePolicy {
    /// Largest room that runs browser to browser (C2C).
    #[arg(long, default_value_t = 2)]
    pub c2c_max: usize,
    /// Largest room that runs as a full P2P mesh; above it, the SFU.
    #[arg(long, default_value_t = 6)]
    pub p2p_max: usize,
    /// A room leaves the SFU for the mesh only once it is this many below `p2p_max + 1` (hysteresis).
    #[arg(long, default_value_t = 1)]
    pub hysteresis: usize,
    /// Pin rooms to one mode: `ROOM=MODE` (mode: c2c, p2p, sfu); repeatable.
    #[arg(long = "pin-room", value_name = "ROOM=MODE")]
    pub pinned: Vec<String>,
    /// Every room in the SFU regardless of size (the behaviour before hybrid rooms).
    #[arg(long)]
    pub sfu_only: bool,
}
