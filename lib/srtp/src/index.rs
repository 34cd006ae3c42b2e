//! SRTP packet index estimation (RFC 3711 §3.3.1 and Appendix A): recovering
//! the 48-bit index `2^16 * ROC + SEQ` from a 16-bit sequence number.

/// Largest SRTP packet index (48 bits).
pub(crate) const MAX_INDEX: u64 = (1 << 48) - 1;

/// Estimates the index of a packet with sequence number `seq`, given the
/// highest index seen so far on the stream. Picks whichever of ROC-1, ROC,
/// ROC+1 puts the packet closest to `highest`. Returns `None` when the closest
/// candidate would need a ROC below 0 or above 2^32-1; such a packet cannot be
/// placed on the stream at all.
pub(crate) fn estimate(highest: u64, seq: u16) -> Option<u64> {
    const HALF: i32 = 1 << 15;
    let roc = highest >> 16;
    let s_l = i32::from(highest as u16);
    let seq_i = i32::from(seq);
    let v = if s_l < HALF {
        if seq_i - s_l > HALF {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - HALF > seq_i {
        roc + 1
    } else {
        roc
    };
    let index = (v << 16) | u64::from(seq);
    (index <= MAX_INDEX).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_roc_near_highest() {
        assert_eq!(estimate(100, 101), Some(101));
        assert_eq!(estimate(100, 50), Some(50));
        assert_eq!(estimate(0x3_1000, 0x1001), Some(0x3_1001));
    }

    #[test]
    fn wraps_forward() {
        assert_eq!(estimate(0xffff, 0), Some(0x1_0000));
        assert_eq!(estimate(0x2_fff0, 0x0005), Some(0x3_0005));
        // Exactly half way ahead of a high s_l still counts as this ROC.
        assert_eq!(estimate(0x8000, 0x0000), Some(0x0000));
        assert_eq!(estimate(0x8001, 0x0000), Some(0x1_0000));
    }

    #[test]
    fn late_packet_from_previous_roc() {
        assert_eq!(estimate(0x1_0003, 0xfffe), Some(0xfffe));
        assert_eq!(estimate(0x5_0010, 0xff00), Some(0x4_ff00));
    }

    #[test]
    fn cannot_go_below_roc_zero_or_above_max() {
        assert_eq!(estimate(5, 0xfff0), None);
        assert_eq!(estimate(MAX_INDEX, 3), None);
        assert_eq!(estimate(MAX_INDEX, 0xfff0), Some(MAX_INDEX - 0xf));
    }
}
