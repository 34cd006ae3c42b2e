//! Simulcast layer choice for one subscriber: the highest layer whose bitrate fits the bandwidth
//! estimate (with headroom) and whose size does not exceed what the subscriber asked for.
//!
//! Going down is immediate (the link is congested now); going up needs the higher layer to fit with an
//! extra margin and at least `up_hold_ms` since the last change, so the choice does not flap around
//! the estimate. When even the lowest layer does not fit, video pauses ([`Choice::Paused`]); audio is
//! not affected. The selector only names the target: the actual switch waits for a keyframe on it
//! ([`super::seq_rewriter::SeqRewriter`]).

/// Most layers a stream can have.
pub const MAX_LAYERS: usize = 4;

/// One simulcast layer as the publisher sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Its SSRC.
    pub ssrc: u32,
    /// Frame height in pixels.
    pub height: u16,
    /// Current bitrate, bits per second (measured on receive, or from the SDP / RID hints).
    pub bitrate_bps: u64,
    /// Whether the publisher is sending it (a publisher drops layers under its own congestion).
    pub active: bool,
}

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Layer index (0 = lowest) and its SSRC.
    Layer {
        /// Index into the layers, lowest first.
        index: usize,
        /// Its SSRC.
        ssrc: u32,
    },
    /// Nothing fits: pause video.
    Paused,
}

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Fraction of the estimate layers may use (the rest is for audio, RTX and error).
    pub headroom: f64,
    /// Going up needs the layer to fit this much more comfortably (e.g. 1.15 = 15% spare).
    pub up_margin: f64,
    /// Least time between an upward change and the previous change.
    pub up_hold_ms: u64,
    /// A downward change this soon after an upward one means the step up failed (the link could not
    /// carry the layer): the hold before the next step up is multiplied by 4, up to `up_hold_max_ms`.
    pub failed_up_window_ms: u64,
    /// Longest hold after repeated failed steps up.
    pub up_hold_max_ms: u64,
    /// A step up that holds this long resets the hold to `up_hold_ms`.
    pub up_success_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            headroom: 0.9,
            up_margin: 1.15,
            up_hold_ms: 2000,
            failed_up_window_ms: 8000,
            up_hold_max_ms: 64_000,
            up_success_ms: 20_000,
        }
    }
}

/// Chooses the layer for one subscriber of one stream.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    cfg: Config,
    layers: [Option<Layer>; MAX_LAYERS],
    choice: Choice,
    last_change_ms: Option<u64>,
    /// The hold now in force (grows after failed steps up).
    hold_ms: u64,
    /// When the last step up happened, while it may still turn out to have failed.
    last_up_ms: Option<u64>,
}

impl LayerSelector {
    /// A selector that starts paused.
    pub fn new(cfg: Config) -> LayerSelector {
        LayerSelector {
            cfg,
            layers: [None; MAX_LAYERS],
            choice: Choice::Paused,
            last_change_ms: None,
            hold_ms: cfg.up_hold_ms,
            last_up_ms: None,
        }
    }

    /// Sets the layers, lowest first (extra ones beyond [`MAX_LAYERS`] are ignored).
    pub fn set_layers(&mut self, layers: &[Layer]) {
        self.layers = [None; MAX_LAYERS];
        for (slot, l) in self.layers.iter_mut().zip(layers) {
            *slot = Some(*l);
        }
    }

    /// Updates one layer's bitrate and activity.
    pub fn update_layer(&mut self, index: usize, bitrate_bps: u64, active: bool) {
        if let Some(Some(l)) = self.layers.get_mut(index) {
            l.bitrate_bps = bitrate_bps;
            l.active = active;
        }
    }

    /// Updates one layer's frame height (learned from its keyframes).
    pub fn set_height(&mut self, index: usize, height: u16) {
        if let Some(Some(l)) = self.layers.get_mut(index) {
            l.height = height;
        }
    }

    /// The layer at `index`, if set.
    pub fn layer(&self, index: usize) -> Option<Layer> {
        self.layers.get(index).copied().flatten()
    }

    /// The current choice.
    pub fn choice(&self) -> Choice {
        self.choice
    }

    /// Re-chooses from the estimate (bps) and the subscriber's requested maximum height (0 or
    /// `u16::MAX` for no limit). Returns the (possibly unchanged) choice.
    pub fn select(&mut self, estimate_bps: u64, max_height: u16, now_ms: u64) -> Choice {
        let budget = estimate_bps as f64 * self.cfg.headroom;
        let current = match self.choice {
            Choice::Layer { index, .. } => Some(index),
            Choice::Paused => None,
        };
        let max_height = if max_height == 0 {
            u16::MAX
        } else {
            max_height
        };
        let lowest_active = self.layers.iter().flatten().position(|l| l.active);
        let mut best = None;
        for (i, l) in self.layers.iter().enumerate() {
            let Some(l) = l else { continue };
            if !l.active {
                continue;
            }
            // The size limit never excludes the lowest layer: a tiny requested size still gets video.
            if l.height > max_height && Some(i) != lowest_active {
                continue;
            }
            let up = current.is_none_or(|c| i > c);
            let need = l.bitrate_bps as f64 * if up { self.cfg.up_margin } else { 1.0 };
            if need <= budget {
                best = Some(i);
            }
        }
        if self
            .last_up_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.cfg.up_success_ms)
        {
            // The last step up held: back to the short hold.
            self.last_up_ms = None;
            self.hold_ms = self.cfg.up_hold_ms;
        }
        let held = self
            .last_change_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < self.hold_ms);
        let next = match (best, current) {
            (Some(b), Some(c)) if b > c && held => Some(c),
            // A current layer that still fits stays if nothing better does (margin asymmetry).
            (b, _) => b,
        };
        let choice = match next {
            Some(index) => Choice::Layer {
                index,
                ssrc: self.layers[index].map_or(0, |l| l.ssrc),
            },
            None => Choice::Paused,
        };
        if choice != self.choice {
            let rank = |c: Choice| match c {
                Choice::Layer { index, .. } => index as i64,
                Choice::Paused => -1,
            };
            if rank(choice) > rank(self.choice) {
                if current.is_some() {
                    self.last_up_ms = Some(now_ms);
                }
            } else if let Some(t) = self.last_up_ms.take() {
                if now_ms.saturating_sub(t) < self.cfg.failed_up_window_ms {
                    self.hold_ms = self
                        .hold_ms
                        .saturating_mul(4)
                        .min(self.cfg.up_hold_max_ms.max(self.cfg.up_hold_ms));
                }
            }
            self.last_change_ms = Some(now_ms);
            self.choice = choice;
        }
        self.choice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> LayerSelector {
        let mut s = LayerSelector::new(Config::default());
        s.set_layers(&[
            Layer {
                ssrc: 1,
                height: 180,
                bitrate_bps: 150_000,
                active: true,
            },
            Layer {
                ssrc: 2,
                height: 360,
                bitrate_bps: 500_000,
                active: true,
            },
            Layer {
                ssrc: 3,
                height: 720,
                bitrate_bps: 1_500_000,
                active: true,
            },
        ]);
        s
    }

    fn idx(c: Choice) -> Option<usize> {
        match c {
            Choice::Layer { index, .. } => Some(index),
            Choice::Paused => None,
        }
    }

    #[test]
    fn highest_that_fits() {
        let mut s = three();
        assert_eq!(
            s.select(3_000_000, 0, 0),
            Choice::Layer { index: 2, ssrc: 3 }
        );
        let mut s = three();
        assert_eq!(idx(s.select(1_000_000, 0, 0)), Some(1));
        let mut s = three();
        assert_eq!(idx(s.select(200_000, 0, 0)), Some(0));
    }

    #[test]
    fn requested_size_caps_the_layer() {
        let mut s = three();
        assert_eq!(idx(s.select(10_000_000, 360, 0)), Some(1));
        let mut s = three();
        assert_eq!(
            idx(s.select(10_000_000, 90, 0)),
            Some(0),
            "smaller than the lowest still gets the lowest"
        );
    }

    #[test]
    fn pauses_when_nothing_fits_and_resumes() {
        let mut s = three();
        assert_eq!(s.select(100_000, 0, 0), Choice::Paused);
        assert_eq!(
            idx(s.select(400_000, 0, 100)),
            Some(0),
            "resuming is not held"
        );
    }

    #[test]
    fn down_at_once_up_with_margin_and_hold() {
        let mut s = three();
        assert_eq!(idx(s.select(3_000_000, 0, 0)), Some(2));
        assert_eq!(idx(s.select(1_000_000, 0, 100)), Some(1), "down at once");
        // 1.5M * 1.15 / 0.9 = 1.92M needed to go back up; and not within 2 s of the last change.
        assert_eq!(idx(s.select(3_000_000, 0, 500)), Some(1), "held");
        assert_eq!(
            idx(s.select(1_800_000, 0, 5000)),
            Some(1),
            "fits but without the margin"
        );
        assert_eq!(
            idx(s.select(1_700_000 * 100 / 90, 0, 5000)),
            Some(1),
            "1.7M: fits without the up margin, stays"
        );
        assert_eq!(idx(s.select(2_000_000, 0, 5000)), Some(2));
        // Current layer still fits without the margin: stays (no flapping).
        assert_eq!(idx(s.select(1_700_000, 0, 9000)), Some(2));
    }

    #[test]
    fn failed_steps_up_back_off_and_a_step_that_holds_resets() {
        // A link that carries the middle layer only: every step up to the top one fails 1 s later.
        let mut s = three();
        let mut t = 0u64;
        let mut ups = Vec::new();
        let mut estimate = 700_000u64;
        s.select(estimate, u16::MAX, t);
        while t < 120_000 {
            t += 100;
            let before = idx(s.choice());
            // The estimate creeps up while the middle layer flows; a step up to the top layer is
            // congested and the estimate falls back.
            estimate = if before == Some(2) {
                600_000
            } else {
                (estimate + 20_000).min(2_000_000)
            };
            let after = idx(s.select(estimate, u16::MAX, t));
            if after == Some(2) && before != Some(2) {
                ups.push(t);
            }
            if before == Some(2) {
                // Stay up 1 s, then the congestion shows.
                estimate = 600_000;
            }
        }
        assert!(ups.len() >= 2, "it still tries: {ups:?}");
        let gaps: Vec<u64> = ups.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.windows(2).all(|g| g[1] >= g[0]),
            "the waits between attempts grow: {gaps:?}"
        );
        assert!(
            gaps.last().copied().unwrap_or(0) >= 32_000,
            "up to a long hold: {gaps:?}"
        );
        assert!(ups.len() <= 6, "few attempts in 2 minutes: {ups:?}");
        // Once the link carries the top layer for good, a step up holds and the short hold returns.
        let mut s = three();
        s.select(700_000, u16::MAX, 0);
        s.select(2_000_000, u16::MAX, 2_500);
        assert_eq!(idx(s.choice()), Some(2));
        s.select(700_000, u16::MAX, 3_000);
        assert_eq!(idx(s.choice()), Some(1), "failed");
        assert_eq!(
            idx(s.select(2_000_000, u16::MAX, 6_000)),
            Some(1),
            "held for 8 s now"
        );
        assert_eq!(idx(s.select(2_000_000, u16::MAX, 11_100)), Some(2));
        assert_eq!(idx(s.select(2_000_000, u16::MAX, 31_200)), Some(2));
        s.select(700_000, u16::MAX, 31_300);
        assert_eq!(
            idx(s.select(2_000_000, u16::MAX, 33_400)),
            Some(2),
            "a later drop is not a failed step: 2 s hold"
        );
    }

    #[test]
    fn inactive_layers_are_skipped() {
        let mut s = three();
        s.update_layer(2, 1_500_000, false);
        assert_eq!(idx(s.select(10_000_000, 0, 0)), Some(1));
        s.update_layer(0, 150_000, false);
        s.update_layer(1, 500_000, false);
        assert_eq!(s.select(10_000_000, 0, 10_000), Choice::Paused);
    }
}
