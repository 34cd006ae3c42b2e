//! Sliding-window replay protection (RFC 3711 §3.3.2) over packet indices.

/// Number of indices behind the newest one that are still tracked. RFC 3711
/// asks for at least 64; 128 costs nothing extra (one `u128`) and tolerates
/// the deeper reordering of bursty video over Wi-Fi.
pub(crate) const WINDOW: u64 = 128;

/// Replay state for one SSRC: the highest authenticated index plus a bitmap
/// of which of the `WINDOW` indices at and below it have been received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    top: u64,
    /// Bit `i` set means index `top - i` has been accepted.
    seen: u128,
}

impl ReplayWindow {
    /// A window whose first authenticated packet had index `first`.
    pub fn new(first: u64) -> Self {
        ReplayWindow {
            top: first,
            seen: 1,
        }
    }

    /// A window at `top` with nothing received yet, so `top` itself and
    /// anything above it are new (resuming a stream after a restart).
    pub fn empty_at(top: u64) -> Self {
        ReplayWindow { top, seen: 0 }
    }

    /// Highest accepted index; for SRTP this carries the ROC and s_l that the
    /// RFC 3711 Appendix A index estimate needs.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Whether `index` is new: ahead of the window, or inside it and unseen.
    /// Does not modify the window so that a later authentication failure
    /// leaves nothing to undo.
    pub fn check(&self, index: u64) -> bool {
        if index > self.top {
            return true;
        }
        let delta = self.top - index;
        delta < WINDOW && self.seen & (1u128 << delta) == 0
    }

    /// Records `index` as received; call only after it authenticated.
    pub fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = index;
        } else {
            let delta = self.top - index;
            if delta < WINDOW {
                self.seen |= 1u128 << delta;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_rejected_new_accepted() {
        let mut w = ReplayWindow::new(1000);
        assert!(!w.check(1000));
        assert!(w.check(1001));
        w.accept(1001);
        assert!(!w.check(1001));
        assert!(!w.check(1000));
        assert_eq!(w.top(), 1001);
    }

    #[test]
    fn out_of_order_inside_window_accepted_once() {
        let mut w = ReplayWindow::new(500);
        w.accept(510);
        for i in [509, 501, 505, 510 - (WINDOW - 1)] {
            assert!(w.check(i), "{i} should be new");
            w.accept(i);
            assert!(!w.check(i), "{i} should now be a replay");
        }
        // Still-missing ones remain acceptable.
        assert!(w.check(502));
    }

    #[test]
    fn too_old_rejected() {
        let mut w = ReplayWindow::new(0);
        w.accept(1000);
        assert!(!w.check(1000 - WINDOW));
        assert!(!w.check(0));
        assert!(w.check(1000 - WINDOW + 1));
    }

    #[test]
    fn big_jump_clears_history() {
        let mut w = ReplayWindow::new(5);
        w.accept(5 + 10 * WINDOW);
        assert!(!w.check(5));
        assert!(w.check(5 + 10 * WINDOW - 1));
        // A jump of exactly WINDOW must not leave stale bits either.
        let mut w = ReplayWindow::new(0);
        w.accept(1);
        w.accept(1 + WINDOW);
        assert!(!w.check(1));
        assert!(w.check(2));
    }
}
