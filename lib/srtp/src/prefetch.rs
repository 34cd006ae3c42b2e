//! Cache prefetch hints: [`lines`] asks the CPU to start loading a value's
//! cache lines, [`line()`] the line it starts in, and both return at once. Used
//! to overlap the cache misses of the packets of a receive batch (see
//! [`crate::Context::prefetch_rtp_keys`]); the
//! engine uses it for its own per-packet state too. A hint never faults and
//! changes nothing but timing; on targets without one it does nothing.

/// Cache line size assumed (x86-64 and most ARM cores).
pub const LINE: usize = 64;

/// Hints that every cache line of `*v` will be read soon.
#[inline(always)]
pub fn lines<T: ?Sized>(v: &T) {
    range((v as *const T).cast::<u8>(), std::mem::size_of_val(v));
}

/// Hints that the cache line holding the start of `*v` will be read soon
/// (for a field, or the head of a large value).
#[inline(always)]
pub fn line<T: ?Sized>(v: &T) {
    at((v as *const T).cast::<u8>());
}

/// Hints that the `len` bytes from `p` will be read soon. `p` need not point
/// to anything valid: a prefetch never faults.
#[inline(always)]
pub fn range(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        at(p.wrapping_add(off));
        off += LINE;
    }
    if len > 0 && (p as usize + len - 1) / LINE != (p as usize + off - LINE) / LINE {
        at(p.wrapping_add(len - 1));
    }
}

/// Hints that the cache line holding `p` will be read soon.
#[inline(always)]
fn at(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 only hints the cache; it never faults or reads into a register, whatever
    // the address. SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
